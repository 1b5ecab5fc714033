"""builder.format: the one home of the bundle format (names, SHA256SUMS, versions)."""

from __future__ import annotations

import subprocess

import pytest

from builder.format.files import (DOCKER_LOAD_DEFAULT, bundle_filename, bundle_top, docker_load_manifest, is_version,
                                  runbook_path)
from builder.format.sums import parse_sums, render_sums
from builder.errors import BundleError, Problem
from test_install_backup import _manifest, _service


def test_sums_render_in_byte_order_and_sha256sum_reads_them(tmp_path):
    files = {"b.txt": b"b\n", "a/z.txt": b"z\n", "B.txt": b"B\n"}
    import hashlib
    hashes = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    text = render_sums(hashes)
    assert [line.split("  ")[1] for line in text.decode().splitlines()] == ["B.txt", "a/z.txt", "b.txt"]
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "SHA256SUMS").write_bytes(text)
    proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    problems: list[Problem] = []
    assert parse_sums(text, problems) == hashes and problems == []


def test_parse_sums_names_malformed_and_repeated_lines():
    problems: list[Problem] = []
    h = "a" * 64
    parse_sums(f"{h}  x\nnot a line\n{h} *x\n".encode(), problems)
    assert [(p.line, p.message) for p in problems] == [(2, "malformed line"), (3, "x listed twice")]


def test_file_names_have_one_home():
    assert bundle_top("lab", "base", "1.0.0") == "lab-base-1.0.0"
    assert bundle_filename("lab", "base", "1.0.0", True) == "lab-base-1.0.0.tar"
    assert runbook_path("qdrant") == "runbooks/qdrant.md"
    assert docker_load_manifest("linux/arm64/v8") == "images/docker-load/linux_arm64_v8.json"
    assert DOCKER_LOAD_DEFAULT == "images/manifest.json"


def test_versions_match_in_full():
    assert is_version("1.2.3-rc.1+b.5") and not is_version("1.2.3\n") and not is_version("01.2.3")


def test_secrets_example_is_read_back_in_its_one_reader():
    from builder.format.secrets_example import ExampleSecret, read_secrets_example
    text = """# Secrets of lab-phase1-1.0.0. No values here.

# litellm: generate=token length=40 prefix=sk-: master key: clients send it as Bearer
LITELLM__MASTER_KEY=

# n8n: generate=hex length=64
N8N__ENCRYPTION_KEY=
# an operator's own line, in the older free form
#   generate: password, length 12
export LEGACY__PASSWORD=
PLAIN__KEY=

# cloudflared: supplied by the operator, never generated (optional: ...): from the dashboard
#CLOUDFLARED__TUNNEL_TOKEN=
"""
    assert read_secrets_example(text) == [
        ExampleSecret("LITELLM__MASTER_KEY", "litellm", "token", 40, "sk-", "master key: clients send it as Bearer"),
        ExampleSecret("N8N__ENCRYPTION_KEY", "n8n", "hex", 64),
        ExampleSecret("LEGACY__PASSWORD", None, "password", 12),
        ExampleSecret("PLAIN__KEY", None, "token", 32),
    ]


def test_the_manifest_reader_refuses_the_ports_validate_refuses():
    """Ports cross the bundle too: 1-65535 on both sides (a host_port of 99999 was probed on 34463)."""
    svc = {**_service("web:1"), "ports": [{"name": "http", "container": 80, "host": 8080, "bind": "127.0.0.1",
                                           "protocol": "tcp"}],
           "health": {"port": "http", "host_port": 8080, "path": "/", "scheme": "http", "status": []}}
    assert _manifest(web=svc).services["web"].health.host_port == 8080
    for key, value in (("container", 0), ("host", 70000)):
        with pytest.raises(BundleError, match=rf"services\.web\.ports\.0\.{key}: port {value} is out of range"):
            _manifest(web={**svc, "ports": [{**svc["ports"][0], key: value}]})
    with pytest.raises(BundleError, match=r"services\.web\.health\.host_port: port 99999 is out of range"):
        _manifest(web={**svc, "health": {**svc["health"], "host_port": 99999}})
