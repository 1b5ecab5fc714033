"""``compose.yaml``: one service per blueprint of the profile's closure.

See ``builder.render`` for the contract (images by digest or ``pull_policy:
never``, loopback ports, ``<service>_<name>`` volumes, one network, the
environment split between compose.yaml, lab.env and the install's .env).
"""

from __future__ import annotations

from typing import Any

from ..blueprint import SECRET_REF_RE, Blueprint, Port, secret_env_key, setting_env_key
from ..errors import BundleError
from .door import PROXY
from .envfile import VAR_NAME_RE, compose_literal, inline_setting, with_secret_refs
from .observability import GRAFANA_MOUNTS, PROM_MOUNTS, PROM_UID, bearer_secrets
from .release import ReleaseInput, volume_name
from .text import dump_yaml

LABEL_PREFIX = "org.local-ai-lab"
NETWORK = "lab"


def port_spec(port: Port) -> str | None:
    """``bind:host:container[/udp]`` for a published port, None for an internal one."""
    if port.host is None:
        return None
    bind = f"[{port.bind}]" if ":" in port.bind else port.bind
    spec = f"{bind}:{port.host}:{port.container}"
    return spec + ("/udp" if port.protocol == "udp" else "")


def service_environment(bp: Blueprint, present: tuple[str, ...], optional: bool = False,
                        embeddings: dict[str, str] | None = None) -> dict[str, str]:
    """The ``environment:`` mapping of one service (see the module docstring).

    A supplied secret of an ``optional`` service defaults to empty: compose
    interpolates the whole file, also for services it does not start, and the
    missing key must not stop the rest of the lab. ``embeddings``: as
    ``ReleaseInput.embedding_models``.
    """
    env: dict[str, str] = {}
    for key, value in bp.effective_env(present, embeddings).items():
        if SECRET_REF_RE.search(value):
            env[key] = with_secret_refs(value)
        elif inline_setting(key, value, bp.name):
            env[key] = compose_literal(value)
        else:
            env[key] = "${" + setting_env_key(bp.name, key) + "}"
    for secret in bp.secrets:
        var = secret_env_key(bp.name, secret.name)
        if not VAR_NAME_RE.match(var):
            raise BundleError(f"{bp.path}: secrets.{secret.name}: {var!r} cannot be a compose variable",
                              hint="secret names must be letters, digits and underscores")
        if secret.supplied and optional:
            env[secret.name] = "${" + var + ":-}"
        elif secret.supplied:
            env[secret.name] = "${" + var + ":?" + f"secret {var} is not set: the operator supplies it in DIR/.env" + "}"
        else:
            env[secret.name] = "${" + var + ":?" + f"secret {var} is not set: labbuild install generates it into DIR/.env" + "}"
    return dict(sorted(env.items()))


def _observability_mounts(ri: ReleaseInput, bp: Blueprint) -> list[str]:
    mounts = {"prometheus": PROM_MOUNTS, "grafana": GRAFANA_MOUNTS}.get(bp.name, ())
    taken = {m.target for m in (*bp.volumes, *bp.binds, *bp.files)}
    return [f"./{src}:{dst}:ro" for src, dst in mounts if dst not in taken]


def compose_service(ri: ReleaseInput, name: str) -> dict[str, Any]:
    """One service of compose.yaml, in a fixed key order."""
    bp = ri.blueprint(name)
    present = ri.services
    svc: dict[str, Any] = {}
    if ri.offline:
        svc["image"] = bp.image.reference
        svc["pull_policy"] = "never"
    else:
        svc["image"] = bp.image.pinned
    if name in ri.optional:
        # started only when install names the profile (its supplied secrets exist);
        # a plain `docker compose up -d` leaves it as it is
        svc["profiles"] = [name]
    svc["restart"] = bp.restart
    if bp.entrypoint is not None:
        svc["entrypoint"] = [compose_literal(a) for a in bp.entrypoint]
    if bp.command is not None:
        svc["command"] = [compose_literal(a) for a in bp.command]
    if bp.user:
        svc["user"] = bp.user
    if bp.privileged:
        svc["privileged"] = True
    env = service_environment(bp, present, optional=name in ri.optional, embeddings=ri.embedding_models)
    if env:
        svc["environment"] = env
    ports = [s for s in (port_spec(p) for p in bp.ports) if s]
    if ports:
        svc["ports"] = ports
    expose = [str(p.container) + ("/udp" if p.protocol == "udp" else "") for p in bp.ports if p.host is None]
    if expose:
        svc["expose"] = expose
    mounts = [f"{volume_name(name, v.name)}:{v.target}" + (":ro" if v.read_only else "") for v in bp.volumes]
    mounts += [f"{b.source}:{b.target}" + (":ro" if b.read_only else "") for b in bp.binds]
    mounts += [f"./config/{name}/{f.name}:{f.target}:ro" for f in bp.effective_files(present)]
    mounts += _observability_mounts(ri, bp)
    if mounts:
        svc["volumes"] = mounts
    if name == "prometheus":
        scrape_secrets = [{"source": s.compose_name, "target": s.target, "uid": PROM_UID, "mode": 0o400}
                          for s in bearer_secrets(ri)]
        if scrape_secrets:
            svc["secrets"] = scrape_secrets
    deps = [d for d in bp.effective_depends_on(present) if d in present]
    if deps:
        svc["depends_on"] = {
            d: {"condition": "service_healthy" if ri.blueprint(d).healthcheck else "service_started"}
            for d in deps}
    if bp.healthcheck:
        hc = bp.healthcheck
        check: dict[str, Any] = {"test": [compose_literal(t) for t in hc.test]}
        for key in ("interval", "timeout", "retries", "start_period"):
            if getattr(hc, key) is not None:
                check[key] = getattr(hc, key)
        svc["healthcheck"] = check
    res = bp.resources
    if res and res.memory:
        svc["mem_limit"] = res.memory
    if res and res.cpus:
        svc["cpus"] = res.cpus
    # no version label: it would change every service's definition on every upgrade, and
    # compose would recreate all of them instead of only the changed ones (issue 5)
    svc["labels"] = {f"{LABEL_PREFIX}.lab": ri.lab.name, f"{LABEL_PREFIX}.profile": ri.profile,
                     f"{LABEL_PREFIX}.service": name}
    if ri.door is not None and name == PROXY:
        # containers reach https://auth.<domain> (OIDC discovery, tokens) through the proxy too
        svc["networks"] = {NETWORK: {"aliases": ri.door.aliases}}
    else:
        svc["networks"] = [NETWORK]
    return svc


def render_compose_gpu(ri: ReleaseInput) -> str | None:
    """``compose.gpu.yaml``: the NVIDIA reservations of the services with ``[resources] gpus``, merged
    over compose.yaml only by ``install --gpu`` (so the bundle also starts on hosts without a GPU);
    None when no service of the profile declares one (the bundle then has no such file)."""
    services = {name: {"deploy": {"resources": {"reservations": {"devices": [
        {"driver": "nvidia", "count": ri.blueprint(name).resources.gpus, "capabilities": ["gpu"]}]}}}}
        for name in ri.services if ri.blueprint(name).resources and ri.blueprint(name).resources.gpus is not None}
    if not services:
        return None
    head = (f"# {ri.top}: GPU reservations, generated by labbuild {ri.labbuild_version}; do not edit.\n"
            f"# Used only after `labbuild install BUNDLE --dir DIR --gpu` (needs the NVIDIA Container Toolkit).\n")
    return head + dump_yaml({"services": services})


def render_compose(ri: ReleaseInput) -> str:
    """compose.yaml for the profile's closure (see the module docstring)."""
    services = {name: compose_service(ri, name) for name in ri.services}
    volumes = {volume_name(n, v.name): {} for n in ri.services for v in ri.blueprint(n).volumes}
    doc: dict[str, Any] = {"services": services}
    if volumes:
        doc["volumes"] = dict(sorted(volumes.items()))
    doc["networks"] = {NETWORK: {}}
    if "prometheus" in ri.services and (scrape := bearer_secrets(ri)):
        # scrape credentials: compose copies the value from the install's .env into
        # the prometheus container at start; it never lands in a file of the bundle
        doc["secrets"] = {s.compose_name: {"environment": s.env_key} for s in scrape}
    head = (f"# {ri.top}: generated by labbuild {ri.labbuild_version}; do not edit.\n"
            f"# Run: {ri.compose_command()}\n")
    return head + dump_yaml(doc)

