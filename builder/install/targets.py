"""Scrape targets of optional services (install side): Prometheus finds an optional service's
target in a file_sd file that install writes into the prometheus container once the service
runs (``[]`` while it waits for its supplied secrets), so a service that is not started is no
target and fires no ``TargetDown`` (``render.observability.optional_targets``).

The bundle's ``observability/prometheus/optional-targets.json`` says which container, which
directory and each service's target group. Files are put through the engine's archive API
(any volume driver, no helper image); Prometheus re-reads file_sd files by itself.
"""

from __future__ import annotations

import io
import json
import posixpath
from pathlib import Path

from .. import names
from ..errors import InstallError
from ..format.files import OPTIONAL_TARGETS
from ..format.tar import DIRECTORY, END, padding, tar_header
from ..host.engine import containers, put_archive
from ..host.labdir import Say


def read_spec(release: Path) -> dict | None:
    """The release's optional-targets.json (None when the bundle has none); InstallError when malformed."""
    path = release / OPTIONAL_TARGETS
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_bytes())
        where, service, groups = spec["dir"], spec["service"], spec["groups"]
        ok = (isinstance(where, str) and posixpath.isabs(where) and posixpath.normpath(where) == where
              and where != "/" and names.is_valid("service", service) and isinstance(groups, dict)
              and all(names.is_valid("service", s) for s in groups))
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise InstallError(f"{path}: malformed", hint="the bundle is damaged; install it again from its source")
    return spec


def publish_targets(client, release: Path, lab: str, started: set[str], say: Say) -> dict[str, bool]:
    """Write each optional service's file_sd file: its target group when it is ``started``, ``[]``
    otherwise. Returns ``{service: published}``; nothing when the bundle scrapes no optional service."""
    spec = read_spec(release)
    if spec is None:
        return {}
    container = containers(client, lab).get(spec["service"])
    if container is None:
        raise InstallError(f"{spec['service']}: no container to give the optional services' scrape targets",
                           hint="docker compose could not create it; see the messages above")
    where = spec["dir"]
    parent, leaf = posixpath.split(where)
    data = tar_header(leaf + "/", kind=DIRECTORY)
    out = {}
    for svc, group in sorted(spec["groups"].items()):
        out[svc] = svc in started
        body = json.dumps([group] if out[svc] else [], sort_keys=True).encode() + b"\n"
        data += tar_header(f"{leaf}/{svc}.json", len(body)) + body + padding(len(body))
    try:
        put_archive(client, container.id, parent, io.BytesIO(data + END).getvalue())
    except Exception as exc:  # docker.errors.APIError, transport errors
        raise InstallError(f"{spec['service']}: writing the scrape targets into {where} failed ({exc})",
                           hint="check the engine log; `labbuild install` again writes them anew") from None
    shown = ", ".join(f"{s} {'scraped' if on else 'not scraped (not started)'}" for s, on in out.items())
    say(f"prometheus: optional targets in {where}: {shown}")
    return out
