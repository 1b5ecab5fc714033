"""The chart's front-door Secret across upgrades (issue 23): what its `lookup` finds is kept.

No Kubernetes cluster can run here, so the cluster side is a stand-in: a local HTTP server
answering the few Kubernetes API calls Helm makes for `helm template --dry-run=server` of this
template (version, discovery of `/api`, `/apis`, `/api/v1`, and GET of the one Secret), holding
the Secret the previous render made. Helm, the template (the exported chart's own
`templates/front-door.yaml`) and every check of the rendered keys are real."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from builder.export.helm import export_helm
from support.dockerenv import require_tool
from support.jsonhttp import send_json

REPO = Path(__file__).resolve().parents[1]
SECRET_PATH = "/api/v1/namespaces/door/secrets/front-door"


class KubeStandIn:
    """Stand-in of the Kubernetes API for Helm's `lookup` of one Secret (``secret``: None = absent)."""

    def __init__(self) -> None:
        self.secret: dict | None = None
        self.asked: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                outer.asked.append(path)
                answers = {
                    "/version": {"major": "1", "minor": "37", "gitVersion": "v1.37.0"},
                    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
                    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
                    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                        {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
                         "verbs": ["get", "list"]}]},
                }
                if path == SECRET_PATH and outer.secret is not None:
                    answers[path] = outer.secret
                body = answers.get(path, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "reason": "NotFound", "code": 404})
                send_json(self, 200 if path in answers else 404, body)

            def log_message(self, *args) -> None:
                pass

        self.handler = Handler
        self.url = ""


@pytest.fixture(scope="module")
def door_chart(tmp_path_factory) -> Path:
    """The exported chart's front-door template alone (its other kinds would need more discovery)."""
    out = tmp_path_factory.mktemp("door-upgrade")
    export_helm(out / "full", root=REPO, profile="phase4", version="1.0.0")
    mini = out / "mini"
    (mini / "templates").mkdir(parents=True)
    (mini / "Chart.yaml").write_bytes((out / "full" / "Chart.yaml").read_bytes())
    (mini / "templates" / "front-door.yaml").write_bytes((out / "full" / "templates" / "front-door.yaml").read_bytes())
    values = yaml.safe_load((out / "full" / "values.yaml").read_text())
    (mini / "values.yaml").write_text(yaml.safe_dump({"frontDoor": values["frontDoor"]}))
    return mini


@pytest.fixture
def cluster():
    stand_in = KubeStandIn()
    with ThreadingHTTPServer(("127.0.0.1", 0), stand_in.handler) as server:
        stand_in.url = "http://127.0.0.1:%d" % server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield stand_in
        server.shutdown()


def render(chart: Path, cluster: KubeStandIn, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    env["HOME"] = str(home)
    proc = subprocess.run([require_tool("helm"), "template", "lab", str(chart), "--namespace", "door",
                           "--dry-run=server", "--kube-apiserver", cluster.url, "--disable-openapi-validation"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    (secret,) = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert SECRET_PATH in cluster.asked            # the template did ask the (stand-in) cluster
    cluster.asked.clear()
    return secret


def stored(secret: dict, **annotations: str) -> dict:
    """``secret`` as the API server returns it after Helm installed it (Helm's ownership annotations),
    with some annotations changed."""
    meta = {**secret["metadata"], "namespace": "door"}
    meta["annotations"] = {**meta["annotations"], "meta.helm.sh/release-name": "lab",
                           "meta.helm.sh/release-namespace": "door", **annotations}
    return {**secret, "metadata": meta}


def cert(secret: dict, key: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


def test_an_upgrade_keeps_every_key_and_the_admins_password(door_chart, cluster, tmp_path) -> None:
    first = render(door_chart, cluster, tmp_path)           # first install: nothing in the cluster
    cluster.secret = stored(first)
    again = render(door_chart, cluster, tmp_path)
    assert again["data"] == first["data"]
    assert again["metadata"]["annotations"] == first["metadata"]["annotations"]


def test_a_new_domain_or_a_certificate_near_its_end_is_signed_again_by_the_kept_ca(door_chart, cluster,
                                                                                    tmp_path) -> None:
    first = render(door_chart, cluster, tmp_path)
    for change in ({"labbuild/front-door-domain": "old.example"},           # the chart's domain changed
                   {"labbuild/front-door-renew-after": "2000-01-01"}):     # within 30 days of its end
        cluster.secret = stored(first, **change)
        then = render(door_chart, cluster, tmp_path)
        kept = {k: v for k, v in first["data"].items() if k not in ("lab.crt", "lab.key")}
        assert {k: v for k, v in then["data"].items() if k not in ("lab.crt", "lab.key")} == kept, change
        assert then["data"]["lab.crt"] != first["data"]["lab.crt"], change
        leaf = cert(then, "lab.crt")
        leaf.verify_directly_issued_by(cert(first, "ca.crt"))             # browsers trusting the CA still do
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(sans.get_values_for_type(x509.DNSName)) == ["*.lab.localhost", "lab.localhost"]
        notes = then["metadata"]["annotations"]
        assert notes["labbuild/front-door-domain"] == "lab.localhost"
        assert notes["labbuild/front-door-renew-after"] > "2028-01-01"


def test_a_password_key_removed_after_reading_is_not_made_again(door_chart, cluster, tmp_path) -> None:
    """The users file is what signs in: kept as it is; no new password appears beside it."""
    first = render(door_chart, cluster, tmp_path)
    gone = stored(first)
    gone["data"] = {k: v for k, v in first["data"].items() if k != "admin-password"}
    cluster.secret = gone
    then = render(door_chart, cluster, tmp_path)
    assert then["data"] == gone["data"]
