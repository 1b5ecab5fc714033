"""labbuild diff: images, ports, env, secrets (names only), volumes and files between two releases."""

from __future__ import annotations

import json

from builder.bundle.diff import diff_bundles, read_bundle_view
from builder.bundle.release import build_release
from builder.bundle.verify import safe_extract
from test_bundle_release import run_labbuild
from test_render import SERVICES, digest, make_lab


def two_releases(tmp_path):
    root = make_lab(tmp_path / "lab")
    a = build_release(root, "1.0.0", profile="full", out_dir=tmp_path / "d")
    web = (SERVICES["web"].replace('tag = "1.0"', 'tag = "1.1"').replace("{d_web}", digest("web-1.1"))
           .replace("host = 18080", "host = 18081").replace('PLAIN = "true"', 'PLAIN = "false"')
           .replace('[secrets.API_TOKEN]', '[secrets.SESSION_SECRET]\ngenerate = "hex"\n[secrets.API_TOKEN]')
           .replace('name = "data"', 'name = "store"'))
    db = SERVICES["db"].replace("{d_db}", digest("db-new"))
    make_lab(root, web=web, db=db)
    b = build_release(root, "1.1.0", profile="full", out_dir=tmp_path / "d")
    return a.bundle, b.bundle


def test_diff_names_every_kind_of_change(tmp_path):
    a, b = two_releases(tmp_path)
    d = diff_bundles(read_bundle_view(a), read_bundle_view(b))
    images = {i["service"]: i for i in d.images}
    assert set(images) == {"web", "db"}
    assert images["web"]["tag_changed"] and images["web"]["digest_changed"]
    assert images["web"]["after"]["image"].endswith(":1.1")
    assert not images["db"]["tag_changed"] and images["db"]["digest_changed"]
    assert d.ports == [{"service": "web", "before": ["http 127.0.0.1:18080->8080/tcp", "internal internal->9000/tcp"],
                        "after": ["http 127.0.0.1:18081->8080/tcp", "internal internal->9000/tcp"]}]
    env = {e["key"]: (e["before"], e["after"]) for e in d.env}
    assert env["WEB__PLAIN"] == ("true", "false") and env["LAB_VERSION"] == ("1.0.0", "1.1.0")
    assert d.secrets == [{"service": "web", "added": ["WEB__SESSION_SECRET"], "removed": []}]
    assert d.volumes[0]["service"] == "web" and d.volumes[0]["after"] == ["web_store:/data"]
    assert "compose.yaml" in d.files_changed and "lab.env" in d.files_changed
    assert "runbooks/README.md" in d.files_changed and "install.sh" not in d.files_changed
    assert not d.services_added and not d.services_removed


def test_diff_cli_text_and_json_never_show_secret_values(tmp_path):
    a, b = two_releases(tmp_path)
    text = run_labbuild("diff", str(a), str(b))
    assert text.returncode == 0, text.stderr
    for line in ("~ image web: 127.0.0.1:5000/lab/web:1.0 -> 127.0.0.1:5000/lab/web:1.1", "~ env WEB__PLAIN: true -> false",
                 "+ secret WEB__SESSION_SECRET (generated at install)", "~ file compose.yaml"):
        assert line in text.stdout, text.stdout
    proc = run_labbuild("--json", "diff", str(a), str(b))
    data = json.loads(proc.stdout)
    assert data["identical"] is False and data["services"] == {"added": [], "removed": []}
    assert "s3cr3t" not in proc.stdout


def test_diff_between_profiles_lists_added_services_and_accepts_extracted_dirs(tmp_path):
    root = make_lab(tmp_path / "lab")
    base = build_release(root, "1.0.0", profile="base", out_dir=tmp_path / "d").bundle
    full = safe_extract(build_release(root, "1.0.0", profile="full", out_dir=tmp_path / "d").bundle, tmp_path / "x")
    d = diff_bundles(read_bundle_view(base), read_bundle_view(full))
    assert d.services_added == ["app", "cadvisor", "db", "grafana", "litellm", "prometheus"]
    assert "runbooks/app.md" in d.files_added
    same = diff_bundles(read_bundle_view(base), read_bundle_view(base))
    assert same.identical and same.render_text().endswith("no differences")


def test_diff_of_a_broken_bundle_is_an_error(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"junk")
    proc = run_labbuild("diff", str(junk), str(junk))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
