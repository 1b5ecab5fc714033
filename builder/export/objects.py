"""The Kubernetes objects of one service, as Helm template text.

``service_template(lab, name)`` -> the text of ``templates/<name>.yaml``:
its Secret (generated once, kept: ``lookup``), ConfigMaps (``[[files]]`` and
observability files, read from the chart's ``files/``), Service (every
port), Deployment — or StatefulSet with ``volumeClaimTemplates`` when it
has volumes — with probes, resources and env, its NetworkPolicy, Ingress and
ServiceMonitor. ``lab_template(lab)`` -> the lab-wide objects (default-deny
NetworkPolicy, Prometheus' service-discovery RBAC). Pure functions.

Object names are the service names: the lab's wiring addresses services by
name (``http://qdrant:6333``), so one release per namespace.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import re

from ..render.door import PROXY
from .model import ChartLab, ChartService, Mount, SecretRef
from .yamltext import Block, Raw, document, emitted, quoted

FILES_DIR = "files"
PERIOD = 10            # seconds between startup/readiness probes
PRIVATE_NETS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


FRONT_DOOR_SECRET = "front-door"      # ca.crt, lab.crt, lab.key, oidc-jwks.pem, users_database.yml: made by the
                                     # chart (frontdoor.py) unless frontDoor.existingSecret names the operator's
USERS_KEY = "users_database.yml"
_DOOR_SECRET_NAME = Raw(f"{{{{ $.Values.frontDoor.existingSecret | default {quoted(FRONT_DOOR_SECRET)} | quote }}}}")
FORWARD_AUTH = "lab-forward-auth"     # the Traefik Middleware of the front door (as in the compose routes)

def values_ref(name: str) -> str:
    return f"(index $.Values.services {quoted(name)})"


def _dns(text: str, limit: int = 63) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if len(slug) > limit:
        slug = slug[:limit - 9].rstrip("-") + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return slug


def _cm_key(path: str, whole: bool = True) -> str:
    """A ConfigMap key: the whole bundle path (unique within a service), or its file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path if whole else path.rsplit("/", 1)[-1])


def kube_escape(text: str) -> str:
    """Text the kubelet must not expand: ``$(`` and ``$$`` escaped as ``$$(`` / ``$$$``."""
    return re.sub(r"\$(?=[($])", "$$", text)


def secret_var(ref: SecretRef) -> str:
    return "LAB_SECRET_" + re.sub(r"[^A-Za-z0-9_]", "_", f"{ref.service}__{ref.name}").upper()


def labels(lab: ChartLab, name: str) -> dict:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": Raw("{{ $.Release.Name | quote }}"),
            "app.kubernetes.io/part-of": lab.lab, "app.kubernetes.io/version": lab.version.replace("+", "_"),
            "app.kubernetes.io/managed-by": Raw("{{ $.Release.Service | quote }}")}


def selector(name: str) -> dict:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": Raw("{{ $.Release.Name | quote }}")}


def _meta(lab: ChartLab, name: str, object_name: str | None = None, **extra) -> dict:
    return {"name": object_name or name, "labels": labels(lab, name), **extra}


# --------------------------------------------------------------------------- secrets and files

def secret_object(lab: ChartLab, svc: ChartService) -> str:
    """The service's Secret. Each generated value (kept from the Secret in the cluster, else random)
    is made once into ``$values`` before the object, so that a derived one (bcrypt) hashes the
    very value stored beside it (Sprig's ``bcrypt``, cost 10, as install)."""
    data = {}
    made = []
    for s in svc.secrets:
        if s.generate == "supplied":
            why = (f"{svc.name} needs the secret {s.name}, which only its issuer can supply: "
                   f"create a Secret holding it and set services.{svc.name}.existingSecret")
            data[s.name] = Raw(f"{{{{ fail {quoted(why)} }}}}")
        elif s.derive_from:
            data[s.name] = Raw(f'{{{{ if hasKey (dig "data" dict ($existing | default dict)) {quoted(s.name)} }}}}'
                               f'{{{{ index $existing.data {quoted(s.name)} | quote }}}}{{{{ else }}}}'
                               f'{{{{ index $values {quoted(s.derive_from)} | b64dec | bcrypt | b64enc | quote }}}}'
                               '{{ end }}')
        else:
            made.append(f'{{{{- $_ := set $values {quoted(s.name)} (include "lab.secretValue" (dict "existing" '
                        f'$existing "key" {quoted(s.name)} "generate" {quoted(s.generate)} "length" {int(s.length)} '
                        f'"prefix" {quoted(s.prefix)})) }}}}')
            data[s.name] = Raw(f'{{{{ index $values {quoted(s.name)} | quote }}}}')
    obj = {"apiVersion": "v1", "kind": "Secret",
           "metadata": _meta(lab, svc.name, f"{svc.name}-secrets",
                             annotations={"helm.sh/resource-policy": "keep"}),
           "type": "Opaque", "data": data}
    return document(obj, before=(f"{{{{- if not {values_ref(svc.name)}.existingSecret }}}}",
                                 '{{- $existing := lookup "v1" "Secret" $.Release.Namespace '
                                 f'{quoted(svc.name + "-secrets")} }}}}', "{{- $values := dict }}", *made),
                    after=("{{- end }}",))


def _file_content(lab: ChartLab, path: str) -> Raw:
    """A ConfigMap value: the chart file, read by Helm (never pasted into the template) and written
    with ``quote`` (Go's %q escapes every non-printable character; ``toJson`` left DEL raw, which
    go-yaml refuses, and U+0085, which it reads as a space). Helm's chart loader drops a file's
    leading byte order mark: it is put back."""
    get = f"$.Files.Get {quoted(f'{FILES_DIR}/{path}')}"
    if lab.files.get(path, b"").startswith(codecs.BOM_UTF8):
        get = f"print {quoted(chr(0xFEFF))} ({get})"
    return Raw(f"{{{{ {get} | quote }}}}")


def config_maps(lab: ChartLab, svc: ChartService) -> tuple[list[str], dict[str, str]]:
    """(documents, {bundle path: ConfigMap name}) for the bundle files mounted into ``svc``."""
    docs, names = [], {}
    singles = [m for m in svc.mounts if m.kind == "file"]
    if singles:
        name = f"{svc.name}-files"
        data = {_cm_key(m.name): _file_content(lab, m.name) for m in singles}
        docs.append(document({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(lab, svc.name, name),
                              "data": data}))
        names.update({m.name: name for m in singles})
    for m in (m for m in svc.mounts if m.kind == "dir"):
        name = _dns(f"{svc.name}-{m.name.replace('observability/', '')}")
        data = {_cm_key(p, whole=False): _file_content(lab, p)
                for p in lab.files if p.startswith(m.name + "/") and "/" not in p[len(m.name) + 1:]}
        docs.append(document({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(lab, svc.name, name),
                              "data": data}))
        names[m.name] = name
    return docs, names


# --------------------------------------------------------------------------- the workload

def env_list(svc: ChartService) -> list[dict]:
    """Secret references first (the kubelet expands ``$(VAR)`` only from earlier entries)."""
    def secret_ref(ref: SecretRef) -> dict:
        name = Raw(f'{{{{ include "lab.secretName" (list $ {quoted(ref.service)}) | quote }}}}')
        return {"secretKeyRef": {"name": name, "key": ref.name}}
    out, helpers = [], {}
    for var in svc.env:
        if var.setting:
            continue
        if len(var.parts) == 1 and isinstance(var.parts[0], SecretRef):
            out.append({"name": var.name, "valueFrom": secret_ref(var.parts[0])})
            continue
        value = ""
        for part in var.parts:
            if isinstance(part, SecretRef):
                helpers[secret_var(part)] = part
                value += f"$({secret_var(part)})"
            else:
                value += kube_escape(part)
        out.append({"name": var.name, "value": value})
    return [{"name": k, "valueFrom": secret_ref(r)} for k, r in sorted(helpers.items())] + out


def _env_block(svc: ChartService) -> Block:
    static = env_list(svc)
    body = emitted(static, 2)
    settings = [f"{{{{- range $key, $value := {values_ref(svc.name)}.env }}}}",
                "  - name: {{ $key | quote }}",
                '    value: {{ toString $value | replace "$" "$$" | quote }}',
                "{{- end }}"]
    if static:
        return Block("env:", *settings, *body)
    return Block(f"{{{{- with {values_ref(svc.name)}.env }}}}", "env:", *settings, "{{- end }}")


def probes(svc: ChartService) -> dict:
    p = svc.probe
    if p is None:
        return {}
    if p.kind == "exec":
        action = {"exec": {"command": list(p.command)}}
    elif p.kind == "tcp":
        action = {"tcpSocket": {"port": p.port}}
    else:
        action = {"httpGet": {"path": p.path, "port": p.port, "scheme": p.kind.upper()}}
    timeout = max(1, math.ceil(p.timeout or 5))
    period = max(PERIOD, math.ceil(p.interval or 0))
    # the startup probe gives the service its whole start_period, plus a minute, before liveness takes over
    startup = math.ceil(p.start_period / period) + math.ceil(60 / period)
    return {"startupProbe": {**action, "periodSeconds": period, "timeoutSeconds": timeout, "failureThreshold": startup},
            "readinessProbe": {**action, "periodSeconds": period, "timeoutSeconds": timeout,
                               "failureThreshold": p.retries or 3},
            "livenessProbe": {**action, "periodSeconds": period * 2, "timeoutSeconds": timeout,
                              "failureThreshold": max(3, p.retries or 0) * 2}}


def _volume_name(m: Mount, i: int) -> str:
    return _dns(m.name) if m.kind == "volume" else f"{m.kind}-{i}"


def _mounts_and_volumes(lab: ChartLab, svc: ChartService, cm_names: dict[str, str]) -> tuple[list, list]:
    mounts, volumes = [], []
    for i, m in enumerate(svc.mounts):
        name = _volume_name(m, i)
        mount = {"name": name, "mountPath": m.target}
        if m.kind == "file":
            mount["subPath"] = _cm_key(m.name)
            volumes.append({"name": name, "configMap": {"name": cm_names[m.name],
                                                        "items": [{"key": _cm_key(m.name), "path": _cm_key(m.name)}]}})
        elif m.kind == "dir":
            volumes.append({"name": name, "configMap": {"name": cm_names[m.name]}})
        elif m.kind == "host":
            volumes.append({"name": name, "hostPath": {"path": m.name}})
        elif m.kind == "install" and m.name.startswith("door/"):      # one key of the front door's Secret
            key = m.name[len("door/"):]
            mount["subPath"] = key
            volumes.append({"name": name, "secret": {"secretName": _DOOR_SECRET_NAME,
                                                     "items": [{"key": key, "path": key}]}})
        elif m.kind == "install":                                      # the users directory
            volumes.append({"name": name, "secret": {"secretName": _DOOR_SECRET_NAME,
                                                     "items": [{"key": USERS_KEY, "path": USERS_KEY}]}})
        if m.read_only:
            mount["readOnly"] = True
        mounts.append(mount)
    return mounts, volumes


def _config_checksum(lab: ChartLab, svc: ChartService) -> str:
    h = hashlib.sha256()
    for m in svc.mounts:
        for p, data in lab.files.items():
            if p == m.name or p.startswith(m.name + "/"):
                h.update(p.encode() + b"\0" + data)
    return h.hexdigest()


SCRAPE_SECRETS_DIR = "/etc/prometheus/secrets"     # as in the compose bundle (render.observability)


def scrape_credentials(lab: ChartLab) -> tuple[dict, dict] | None:
    """Prometheus' mount of every scrape credential (``[metrics] bearer_secret``): one projected volume
    whose file ``<service>`` is that secret's key in its owner's Secret; None when there is none."""
    sources = [{"secret": {"name": Raw(f'{{{{ include "lab.secretName" (list $ {quoted(s.scrape.bearer.service)}) '
                                       f'| quote }}}}'),
                           "items": [{"key": s.scrape.bearer.name, "path": name}]}}
               for name, s in lab.services.items() if s.scrape and s.scrape.bearer]
    if not sources:
        return None
    return ({"name": "scrape-credentials", "mountPath": SCRAPE_SECRETS_DIR, "readOnly": True},
            {"name": "scrape-credentials", "projected": {"sources": sources}})


def workload(lab: ChartLab, svc: ChartService, cm_names: dict[str, str]) -> str:
    v = values_ref(svc.name)
    image = Raw(f'{{{{ include "lab.image" (list $ {quoted(f"{svc.repository}:{svc.tag}")} '
                f'{quoted(svc.repository_path)} {quoted(svc.digest)}) | quote }}}}')
    container: dict = {"name": svc.name, "image": image, "imagePullPolicy": "IfNotPresent"}
    if svc.command is not None:
        container["command"] = [kube_escape(a) for a in svc.command]
    if svc.args is not None:
        container["args"] = [kube_escape(a) for a in svc.args]
    container[_env_block(svc)] = None
    if svc.ports:
        container["ports"] = [{"name": p.name, "containerPort": p.container, "protocol": p.protocol.upper()}
                              for p in svc.ports]
    mounts, volumes = _mounts_and_volumes(lab, svc, cm_names)
    if svc.name == "prometheus" and (creds := scrape_credentials(lab)):
        mounts, volumes = [*mounts, creds[0]], [*volumes, creds[1]]
    if mounts:
        container["volumeMounts"] = mounts
    container[Block("resources:",
                    f'  {{{{- include "lab.resources" (list $ {quoted(svc.name)}) | nindent %J }}}}')] = None
    container.update(probes(svc))
    if svc.privileged:
        container["securityContext"] = {"privileged": True}
    pod: dict = {}
    if svc.name == "prometheus":
        pod["serviceAccountName"] = "prometheus"
    else:
        pod["automountServiceAccountToken"] = False
    pod[Block("{{- with $.Values.global.imagePullSecrets }}", "imagePullSecrets:",
              "  {{- toYaml . | nindent %I }}", "{{- end }}")] = None
    if svc.run_as:
        ctx = {"runAsUser": svc.run_as[0]}
        if svc.run_as[1] is not None:
            ctx.update(runAsGroup=svc.run_as[1], fsGroup=svc.run_as[1])
        pod["securityContext"] = ctx
    if lab.door is not None and svc.name in lab.door.oidc and PROXY in lab.services:
        # its server side calls https://auth.<domain> (the issuer the browser uses): the lab's proxy answers
        pod[Block("{{- with $.Values.frontDoor.proxyClusterIP }}", "hostAliases:", "  - ip: {{ . | quote }}",
                  "    hostnames:", f"      - {quoted(lab.door.issuer_host)}", "{{- end }}")] = None
    pod["containers"] = [container]
    if volumes:
        pod["volumes"] = volumes
    template = {"metadata": {"labels": {**selector(svc.name), "app.kubernetes.io/part-of": lab.lab}},
                "spec": pod}
    checksum = _config_checksum(lab, svc)
    if svc.mounts and any(m.kind in ("file", "dir") for m in svc.mounts):
        template["metadata"]["annotations"] = {"checksum/config": checksum}
    spec: dict = {"replicas": 1, "selector": {"matchLabels": selector(svc.name)}}
    kind = "StatefulSet" if svc.volumes else "Deployment"
    if kind == "StatefulSet":
        spec["serviceName"] = svc.name
        spec["template"] = template
        spec["volumeClaimTemplates"] = [{
            "metadata": {"name": _dns(m.name)},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     Block(f'{{{{- with ({v}.persistence.{values_key(m.name)}.storageClass | default '
                           '$.Values.global.storageClass) }}',
                           "storageClassName: {{ . | quote }}", "{{- end }}"): None,
                     "resources": {"requests": {"storage": Raw(
                         f"{{{{ {v}.persistence.{values_key(m.name)}.size | quote }}}}")}}}}
            for m in svc.volumes]
    else:
        # one replica of a stateful app: never two at once during an upgrade
        spec["strategy"] = {"type": "Recreate"}
        spec["template"] = template
    return document({"apiVersion": "apps/v1", "kind": kind, "metadata": _meta(lab, svc.name), "spec": spec})


def values_key(name: str) -> str:
    """A values key reachable with dots in templates and ``--set``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


# --------------------------------------------------------------------------- network

def service_object(lab: ChartLab, svc: ChartService) -> str:
    ports = [{"name": p.name, "port": p.container, "targetPort": p.name, "protocol": p.protocol.upper()}
             for p in svc.ports]
    spec: dict = {"type": "ClusterIP"}
    if lab.door is not None and svc.name == PROXY:       # the address the OIDC clients' hostAliases name
        spec[Block("{{- with $.Values.frontDoor.proxyClusterIP }}", "clusterIP: {{ . | quote }}", "{{- end }}")] = None
    return document({"apiVersion": "v1", "kind": "Service", "metadata": _meta(lab, svc.name),
                     "spec": {**spec, "selector": selector(svc.name), "ports": ports}})


def _port_refs(lab: ChartLab, server: str, names: tuple[str, ...]) -> list[dict]:
    svc = lab.services[server]
    return [{"port": p.name, "protocol": p.protocol.upper()} for p in svc.ports if p.name in names]


def network_policy(lab: ChartLab, svc: ChartService) -> str:
    v = values_ref(svc.name)
    rules = []
    for client, servers in lab.edges.items():
        if svc.name in servers:
            rules.append({"from": [{"podSelector": {"matchLabels": selector(client)}}],
                          "ports": _port_refs(lab, svc.name, servers[svc.name])})
    exposed = ["{{- if " + v + ".ingress.enabled }}", "  - ports:",
               "      - port: {{ " + v + ".ingress.port | quote }}", "{{- end }}"] if svc.ports else []
    if rules or not exposed:
        ingress = Block("ingress:", *emitted(rules, 2), *exposed) if rules else Block("ingress: []")
    else:
        ingress = Block(exposed[0], "ingress:", *exposed[1:3], "{{- else }}", "ingress: []", "{{- end }}")
    egress = [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]
    for server, names in lab.edges[svc.name].items():
        egress.append({"to": [{"podSelector": {"matchLabels": selector(server)}}],
                       "ports": _port_refs(lab, server, names)})
    spec = {"podSelector": {"matchLabels": selector(svc.name)}, "policyTypes": ["Ingress", "Egress"],
            ingress: None,
            Block("egress:", *emitted(egress, 2), "{{- if $.Values.networkPolicy.externalEgress }}",
                  "  - to:", "      - ipBlock:", '          cidr: "0.0.0.0/0"', "          except:",
                  *[f'            - "{n}"' for n in PRIVATE_NETS], "{{- end }}"): None}
    return document({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                     "metadata": _meta(lab, svc.name), "spec": spec},
                    before=("{{- if $.Values.networkPolicy.enabled }}",), after=("{{- end }}",))


def ingress_object(lab: ChartLab, svc: ChartService) -> str:
    v = values_ref(svc.name)
    backend = {"service": {"name": svc.name, "port": {"name": Raw(f"{{{{ {v}.ingress.port | quote }}}}")}}}
    rule = {"http": {"paths": [{"path": Raw(f"{{{{ {v}.ingress.path | quote }}}}"), "pathType": "Prefix",
                                "backend": backend}]},
            Block(f"{{{{- with {v}.ingress.host }}}}", "host: {{ . | quote }}", "{{- end }}"): None}
    meta = _meta(lab, svc.name)
    door = ()
    if lab.door is not None and svc.name in lab.door.forward_auth:
        # the front door's forward-auth: Traefik's Middleware of this release (lab_template), by reference
        door = ("{{- $door := dict }}", "{{- if $.Values.frontDoor.traefikMiddleware }}",
                '{{- $door = dict "traefik.ingress.kubernetes.io/router.middlewares" '
                f'(printf "%s-{FORWARD_AUTH}@kubernetescrd" $.Release.Namespace) }}}}', "{{- end }}")
    meta[Block(*door, f"{{{{- with (merge (dict) {v}.ingress.annotations $.Values.ingress.annotations"
               + (" $door" if door else "") + ") }}",
               "annotations:", "  {{- toYaml . | nindent %J }}", "{{- end }}")] = None
    spec = {Block("{{- with $.Values.ingress.className }}", "ingressClassName: {{ . | quote }}", "{{- end }}"): None,
            Block(f"{{{{- with {v}.ingress.tlsSecret }}}}", "tls:", "  - secretName: {{ . | quote }}",
                  f"    {{{{- with {v}.ingress.host }}}}", "    hosts:", "      - {{ . | quote }}",
                  "    {{- end }}", "{{- end }}"): None,
            "rules": [rule]}
    return document({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec},
                    before=(f"{{{{- if {v}.ingress.enabled }}}}",), after=("{{- end }}",))


def service_monitor(lab: ChartLab, svc: ChartService) -> str:
    endpoint: dict = {"port": svc.scrape.port, "path": svc.scrape.path}
    if svc.scrape.params:
        endpoint["params"] = {k: [val] for k, val in svc.scrape.params.items()}
    if (ref := svc.scrape.bearer) is not None:      # prometheus-operator Endpoint.authorization (SafeAuthorization)
        endpoint["authorization"] = {"type": "Bearer", "credentials": {
            "name": Raw(f'{{{{ include "lab.secretName" (list $ {quoted(ref.service)}) | quote }}}}'), "key": ref.name}}
    return document({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                     "metadata": _meta(lab, svc.name),
                     "spec": {"selector": {"matchLabels": selector(svc.name)}, "endpoints": [endpoint]}},
                    before=("{{- if $.Values.prometheus.serviceMonitors }}",), after=("{{- end }}",))


# --------------------------------------------------------------------------- files

def service_template(lab: ChartLab, name: str) -> str:
    """``templates/<name>.yaml``: every object of one service."""
    svc = lab.services[name]
    # no data in the comment (not even the description): "*/}}" in it would end the comment early
    docs = ["{{- /* generated by labbuild; do not edit. The service is described in values.schema.json. */}}\n"]
    if svc.secrets:
        docs.append(secret_object(lab, svc))
    cms, cm_names = config_maps(lab, svc)
    docs += cms
    if svc.ports:
        docs.append(service_object(lab, svc))
    docs.append(workload(lab, svc, cm_names))
    docs.append(network_policy(lab, svc))
    if svc.ports:
        docs.append(ingress_object(lab, svc))
    if svc.scrape:
        docs.append(service_monitor(lab, svc))
    if svc.waits_for_supplied:
        # as with compose: an optional service waiting for its operator-supplied secret is left out,
        # and the rest installs; it comes with services.<name>.existingSecret
        docs.insert(1, f"{{{{- if {values_ref(svc.name)}.existingSecret }}}}\n")
        docs.append("{{- end }}\n")
    return "".join(docs)


def lab_template(lab: ChartLab) -> str:
    """``templates/lab.yaml``: default-deny NetworkPolicy and Prometheus' discovery RBAC."""
    instance = {"app.kubernetes.io/instance": Raw("{{ $.Release.Name | quote }}")}
    docs = [document({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": f"{lab.lab}-default-deny", "labels": labels(lab, lab.lab)},
                      "spec": {"podSelector": {"matchLabels": {**instance, "app.kubernetes.io/part-of": lab.lab}},
                               "policyTypes": ["Ingress", "Egress"]}},
                     before=("{{- if $.Values.networkPolicy.enabled }}",), after=("{{- end }}",))]
    if lab.door is not None:
        d = lab.door
        docs.append(document(
            {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
             "metadata": {"name": FORWARD_AUTH, "labels": labels(lab, d.provider)},
             "spec": {"forwardAuth": {"address": f"http://{d.provider}:{d.provider_port}/api/authz/forward-auth",
                                      "trustForwardHeader": True,
                                      "authResponseHeaders": ["Remote-User", "Remote-Groups", "Remote-Email",
                                                              "Remote-Name"]}}},
            before=("{{- if $.Values.frontDoor.traefikMiddleware }}",), after=("{{- end }}",)))
    if "prometheus" in lab.services:
        meta = _meta(lab, "prometheus")
        docs.append(document({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}))
        docs.append(document({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
                              "rules": [{"apiGroups": [""], "resources": ["services", "endpoints", "pods"],
                                         "verbs": ["get", "list", "watch"]},
                                        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                                         "verbs": ["get", "list", "watch"]}]}))
        docs.append(document({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
                              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                          "name": "prometheus"},
                              "subjects": [{"kind": "ServiceAccount", "name": "prometheus",
                                            "namespace": Raw("{{ $.Release.Namespace | quote }}")}]}))
    return "".join(docs)
