"""The front door in the Helm export (issue 23): the provider and its configuration ship, the
install dir's keys and users come from the operator's Secret `front-door`, each UI's Ingress host
is its front-door name, and (opt-in, Traefik's CRDs) a forward-auth Middleware guards exactly the
forward-auth UIs. Real `helm template` and `helm lint --strict`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from builder.export.helm import export_helm
from support.dockerenv import require_tool

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chart(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("door-chart") / "phase4"
    export_helm(out, root=REPO, profile="phase4", version="1.0.0")
    return out


def _template(chart: Path, *sets: str) -> list[dict]:
    args = [require_tool("helm"), "template", "lab", str(chart), "--namespace", "door"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _access() -> dict:
    from builder.blueprint import load_lab
    from builder.lockfile import Lock
    from builder.render import ReleaseInput, render_text_files
    lab = load_lab(REPO)
    ri = ReleaseInput(lab=lab, lock=Lock(lab=lab.name, inputs="t", platforms=lab.platforms, services={}),
                      profile="phase4", version="1.0.0", labbuild_version="t")
    return json.loads(render_text_files(ri)["access/lab.json"])


def test_the_chart_lints_and_guards_exactly_the_forward_auth_uis(chart) -> None:
    proc = subprocess.run([require_tool("helm"), "lint", "--strict", str(chart),
                           "--set", "frontDoor.traefikMiddleware=true"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    access = _access()
    uis = access["services"]
    sets = [f"services.{n}.ingress.enabled=true" for n in uis]
    off = _template(chart, *sets)
    assert not [d for d in off if d["kind"] == "Middleware"]
    on = _template(chart, "frontDoor.traefikMiddleware=true", *sets)
    (mw,) = [d for d in on if d["kind"] == "Middleware"]
    assert mw["apiVersion"] == "traefik.io/v1alpha1" and mw["metadata"]["name"] == "lab-forward-auth"
    assert mw["spec"]["forwardAuth"]["address"] == "http://authelia:9091/api/authz/forward-auth"
    ingresses = {d["metadata"]["name"]: d for d in on if d["kind"] == "Ingress"}
    assert set(ingresses) == set(uis)
    for name, svc in uis.items():
        ing = ingresses[name]
        assert ing["spec"]["rules"][0]["host"] + "/" == svc["url"].removeprefix("https://")
        annotations = ing["metadata"].get("annotations", {})
        guarded = annotations.get("traefik.ingress.kubernetes.io/router.middlewares") == \
            "door-lab-forward-auth@kubernetescrd"
        assert guarded == (svc["sign_in"] == "forward-auth"), name
    for d in off:
        if d["kind"] == "Ingress":
            assert "traefik.ingress.kubernetes.io/router.middlewares" not in d["metadata"].get("annotations", {})


def test_the_install_dir_material_comes_from_the_front_door_secret(chart) -> None:
    docs = _template(chart)
    loads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    def secret_items(name: str) -> set[str]:
        vols = loads[name]["spec"]["template"]["spec"]["volumes"]
        return {i["key"] for v in vols if v.get("secret", {}).get("secretName") == "front-door"
                for i in v["secret"]["items"]}
    assert secret_items("authelia") == {"users_database.yml", "oidc-jwks.pem"}
    assert secret_items("traefik") == {"lab.crt", "lab.key"}
    assert secret_items("node-red") == {"ca.crt"}
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("authelia"))
    text = "".join(config["data"].values())
    assert "mustEnv" in text and "$plaintext$" in text          # the provider's config, templates in place of secrets
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "authelia-secrets")
    assert {"OIDC_CLIENT_NODE_RED", "SESSION_SECRET"} <= set(secret.get("data") or secret.get("stringData") or {})
