"""Pure renderers: from the lab, the lock and a release's coordinates to the
text files of a bundle. No disk, no network, no clock: the same input always
gives the same bytes (sorted iteration, explicit orders, canonical JSON).

What each renderer produces, and the contracts other parts rely on:

``render_compose`` -> ``compose.yaml``
    No top-level ``name`` (``docker compose -p <lab>`` gives it). Online,
    images are ``name:tag@sha256:…``; offline (the bundle carries images/),
    ``image: name:tag`` plus ``pull_policy: never``. Ports are published as
    ``127.0.0.1:host:container`` unless the blueprint opted out; volumes are
    named ``<service>_<name>``; every service is on one network ``lab``;
    ``depends_on`` uses ``service_healthy`` when the dependency has an
    in-container ``[healthcheck]``, else ``service_started``.
    Each service's ``environment`` maps ``KEY: ${SVC__KEY}`` for settings
    (values live in ``lab.env``), ``NAME: ${SVC__NAME:?...}`` for its
    secrets (values live in the install's ``.env``), and for a setting that
    embeds ``${secret:other.NAME}`` the literal value with each reference
    replaced by ``${OTHER__NAME}`` and every other ``$`` escaped as ``$$``
    (such a setting, and one whose key cannot be a compose variable name, e.g.
    holds a ``.``, is written literally in compose.yaml, not in lab.env).
    Compose is always run as::

        docker compose -p <lab> -f compose.yaml --env-file lab.env --env-file <DIR>/.env up -d

``render_lab_env`` -> ``lab.env``
    ``LAB_NAME``, ``LAB_VERSION``, ``LAB_PROFILE`` and every effective
    non-secret setting as ``SVC__KEY=value`` (``setting_env_key``). Values
    are single-quoted (literal for both compose and POSIX sh); a value
    holding a quote or a newline is double-quoted with ``\\ " $`` escaped.

``render_secrets_example`` -> ``secrets.env.example``
    Per generated secret: a comment (service, generate kind, length, prefix)
    and ``SVC__NAME=``; per operator-supplied secret a commented ``#SVC__NAME=``
    under a comment saying where to get it (never generated).
    Optional services (``optional`` in the profile) carry ``profiles:
    [<service>]``: install starts them by naming the profile once their
    supplied secrets exist.

``render_config_files`` -> ``config/<svc>/<name>`` (the blueprints' ``[[files]]``,
    mounted read-only). ``render_runbooks`` -> ``runbooks/README.md`` and
    ``runbooks/<svc>.md``. ``render_observability`` -> ``observability/…``
    (Prometheus config and rules, Grafana provisioning and dashboards),
    mounted into prometheus/grafana by ``render_compose`` when present.
"""

from __future__ import annotations

from ..escape import parse_env_file
from ..format.files import COMPOSE_FILE, bundle_filename, bundle_top
from .compose import (
    LABEL_PREFIX,
    NETWORK,
    compose_service,
    port_spec,
    render_compose,
    service_environment,
)
from .envfile import (
    comment_text,
    env_file_value,
    lab_settings,
    render_lab_env,
    render_secrets_example,
)
from .files import render_config_files, render_text_files
from .observability import render_observability, scrape_targets
from .release import ReleaseInput, secret_keys, supplied_keys, volume_name
from .runbooks import render_runbooks, render_service_runbook

__all__ = [
    "COMPOSE_FILE", "LABEL_PREFIX", "comment_text", "NETWORK", "ReleaseInput", "bundle_filename", "bundle_top",
    "compose_service", "env_file_value", "lab_settings", "parse_env_file", "port_spec",
    "render_compose", "render_config_files", "render_lab_env", "render_observability",
    "render_runbooks", "render_secrets_example", "render_service_runbook", "render_text_files",
    "scrape_targets", "secret_keys", "supplied_keys", "service_environment", "volume_name",
]
