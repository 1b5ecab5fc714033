"""values.yaml and values.schema.json of the exported chart.

values.yaml holds what an operator may change — never a secret value:
``global.imageRegistry`` (fixed key: ``REGISTRY/PREFIX`` rewrites every
image, digests kept), pull secrets and the default storage class; the
Ingress class; NetworkPolicy switches; ServiceMonitors; and per service its
non-secret settings (``env``, the lab.env of a compose install), resources,
``gpus`` (requested only with ``global.gpu``: off by default, as compose's ``--gpu``),
``existingSecret``, volume sizes and its Ingress. The schema closes every
object (``additionalProperties: false``), so a typo in ``--set`` fails.
"""

from __future__ import annotations

from typing import Any

from ..render.door import HOME_SERVICE, PROXY
from .model import ChartLab, ChartService
from .objects import values_key

DEFAULT_VOLUME_SIZE = "10Gi"

_STRING = {"type": "string"}
_BOOL = {"type": "boolean"}
_QUANTITIES = {"type": "object", "additionalProperties": {"type": ["string", "integer", "number"]}}


def resources(svc: ChartService) -> dict[str, Any]:
    """``[resources]`` as Kubernetes resources: memory and cpus as limits. GPUs are not
    here: ``services.<svc>.gpus`` becomes ``nvidia.com/gpu`` requests and limits only
    with ``global.gpu`` (template ``lab.resources``), as ``install --gpu`` does for compose."""
    limits: dict[str, Any] = {}
    if svc.cpus:
        limits["cpu"] = svc.cpus
    if svc.memory:
        limits["memory"] = svc.memory
    return {"limits": limits} if limits else {}


def service_values(svc: ChartService) -> dict[str, Any]:
    out: dict[str, Any] = {"env": {v.name: v.text for v in svc.env if v.setting},
                           "resources": resources(svc)}
    if svc.gpus:
        out["gpus"] = svc.gpus
    if svc.secrets:
        out["existingSecret"] = ""
    if svc.volumes:
        out["persistence"] = {values_key(m.name): {"size": DEFAULT_VOLUME_SIZE, "storageClass": ""}
                              for m in svc.volumes}
    if svc.ports:
        web = next((p for p in svc.ports if p.name in ("http", "web", "ui")), svc.ports[0])
        out["ingress"] = {"enabled": False, "host": "", "path": "/", "port": web.name, "tlsSecret": "",
                          "annotations": {}}
    return out


def chart_values(lab: ChartLab) -> dict[str, Any]:
    services = {name: service_values(svc) for name, svc in lab.services.items()}
    door: dict[str, Any] = {}
    if lab.door is not None:      # each UI's Ingress host defaults to its front-door name, the provider's too
        d = lab.door
        for name, host in {**d.hosts, d.provider: d.issuer_host, HOME_SERVICE: d.domain}.items():
            if "ingress" in services.get(name, {}):
                services[name]["ingress"]["host"] = host
        door = {"frontDoor": {"existingSecret": "", "traefikMiddleware": False, "proxyClusterIP": ""}}
    return {
        "global": {"imageRegistry": "", "imagePullSecrets": [], "storageClass": "", "gpu": False},
        "ingress": {"className": "", "annotations": {}},
        **door,
        "networkPolicy": {"enabled": True, "externalEgress": True},
        "prometheus": {"serviceMonitors": False},
        "services": services,
    }


def _closed(properties: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if description:
        schema["description"] = description
    return schema


def _service_schema(svc: ChartService) -> dict[str, Any]:
    props: dict[str, Any] = {
        "env": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]},
                "description": "Non-secret settings (literal: $ is never expanded)."},
        "resources": _closed({"limits": _QUANTITIES, "requests": _QUANTITIES}),
    }
    if svc.gpus:
        props["gpus"] = {"type": "integer", "minimum": 0,
                         "description": "NVIDIA GPUs requested and limited when global.gpu is true ([resources] gpus)."}
    if svc.secrets:
        props["existingSecret"] = {**_STRING, "description": "A Secret holding the keys "
                                   + ", ".join(s.name for s in svc.secrets) + "; empty: generated once and kept."}
    if svc.volumes:
        props["persistence"] = _closed({
            values_key(m.name): _closed({"size": {**_STRING, "pattern": r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$"},
                                          "storageClass": _STRING}, f"volume at {m.target}")
            for m in svc.volumes})
    if svc.ports:
        props["ingress"] = _closed({
            "enabled": _BOOL, "host": _STRING, "path": {**_STRING, "pattern": "^/"},
            "port": {"enum": [p.name for p in svc.ports]}, "tlsSecret": _STRING,
            "annotations": {"type": "object", "additionalProperties": _STRING}})
    return _closed(props, svc.description or None)


def values_schema(lab: ChartLab) -> dict[str, Any]:
    """The JSON Schema (draft 7, as Helm reads it) of values.yaml."""
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"{lab.lab} {lab.profile} {lab.version}",
        **_closed({
            "global": _closed({
                "imageRegistry": {**_STRING, "pattern": r"^([A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]*)?)?$",
                                  "description": "REGISTRY/PREFIX of a mirror: every image becomes "
                                                 "REGISTRY/PREFIX/<repository path>@<locked digest>."},
                "imagePullSecrets": {"type": "array", "items": _closed({"name": _STRING})},
                "storageClass": _STRING,
                "gpu": {**_BOOL, "description": "Request the services' GPUs (services.<svc>.gpus) as nvidia.com/gpu, "
                                                "like `labbuild install --gpu`; needs the NVIDIA device plugin."}}),
            "ingress": _closed({"className": _STRING,
                                "annotations": {"type": "object", "additionalProperties": _STRING}}),
            **({} if lab.door is None else {"frontDoor": _closed({
                "existingSecret": {
                    **_STRING, "pattern": r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$",
                    "description": "A Secret of yours holding the front door's ca.crt, lab.crt, lab.key, "
                                   "oidc-jwks.pem and users_database.yml. Empty: the chart makes the Secret "
                                   "front-door once (a lab CA, the wildcard certificate of the domain, the OIDC "
                                   "signing key and a first admin) and keeps it."},
                "traefikMiddleware": {
                    **_BOOL, "description": "Render a Traefik Middleware (traefik.io/v1alpha1, needs Traefik's CRDs) "
                                            "asking the provider before every request, and reference it from the "
                                            "Ingress of each forward-auth UI."},
                "proxyClusterIP": {
                    **_STRING, "pattern": r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:]*)?$",
                    "description": f"A free address of the cluster's Service range: the lab's {PROXY} Service takes "
                                   f"it, and the pods of the UIs that sign in with OpenID Connect resolve "
                                   f"{lab.door.issuer_host} to it (hostAliases), so their server-side calls reach "
                                   "the provider at the issuer URL the browser uses. Empty: your DNS must."}})}),
            "networkPolicy": _closed({"enabled": _BOOL, "externalEgress": {
                **_BOOL, "description": "Let lab pods reach addresses outside the private ranges (the internet)."}}),
            "prometheus": _closed({"serviceMonitors": {
                **_BOOL, "description": "Render ServiceMonitors (needs the Prometheus Operator CRDs)."}}),
            "services": _closed({name: _service_schema(svc) for name, svc in lab.services.items()}),
        }),
    }
