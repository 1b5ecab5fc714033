"""`labbuild mirror`: an image bundle into a real registry, by digest; idempotent and resumable."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import uuid

import httpx
import pytest

from builder.bundle.release import build_release
from builder.cli import main
from builder.errors import BundleError
from builder.mirror import mirror_bundle, parse_target

from e2e.labkit import AirgapLab, two_service_lab
from support.faultproxy import FaultProxy
from support.registry import start_registry
from test_registry import skopeo_raw

WRITES = ("POST", "PUT", "PATCH")


@pytest.fixture
def bundle(tmp_path, registry, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lab = AirgapLab(root=tmp_path / "lab", registry=registry, name=f"mirror-{uuid.uuid4().hex[:8]}")
    two_service_lab(lab)           # web: a multi-arch index; api: a single manifest
    lab.bundle = build_release(lab.root, "1.0.0", with_images=True, out_dir=tmp_path / "dist", progress=False).bundle
    return lab


@pytest.fixture
def target(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("target"))
    proxy = FaultProxy(reg.host)
    yield proxy
    proxy.close()
    reg.stop()


def bundle_blob(bundle, digest: str) -> bytes:
    with tarfile.open(bundle) as tar:
        top = tar.getmembers()[0].name
        return tar.extractfile(f"{top}/images/blobs/sha256/{digest.split(':')[1]}").read()


def test_target_names():
    t = parse_target("reg.lan:5000/mirror/lab")
    assert (t.registry, t.prefix) == ("reg.lan:5000", "mirror/lab")
    assert t.repository("docker.io/library/postgres") == "reg.lan:5000/mirror/lab/library/postgres"
    assert t.repository("postgres") == "reg.lan:5000/mirror/lab/library/postgres"
    assert t.repository("ghcr.io/open-webui/open-webui") == "reg.lan:5000/mirror/lab/open-webui/open-webui"
    assert parse_target("127.0.0.1:5000").repository("127.0.0.1:6000/a/b") == "127.0.0.1:5000/a/b"
    for bad in ("notahost/x", "reg.lan/UPPER", "reg.lan/a//b", "reg.lan/../x", "reg lan"):
        with pytest.raises(BundleError):
            parse_target(bad)


class NoNetwork:
    """A registry client that fails the test on any use."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the mirror reached for the registry: client.{name}")


def test_a_target_port_past_65535_or_an_ipv6_host_is_refused_before_any_request(bundle):
    """The registry-host grammar of image and model names: `--to HOST:99999` once retried five times."""
    for to, said in (("127.0.0.1:99999", "port 99999 is out of range (1-65535)"),
                     ("127.0.0.1:0/lab", "port 0 is out of range"), ("[::1]:5000/lab", "is an IPv6 address")):
        with pytest.raises(BundleError, match=re.escape(said)) as err:
            mirror_bundle(bundle.bundle, to, client=NoNetwork())
        assert err.value.message.startswith(f"--to {to!r}: ") and "REGISTRY[/PREFIX]" in err.value.hint


def test_mirror_by_digest_then_nothing_to_push(bundle, target, capsys):
    lab = bundle
    to = f"{target.host}/mirror"
    assert main(["--json", "mirror", str(lab.bundle), "--to", to]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and len(out["images"]) == 2 and out["blobs"]["pushed"] > 0
    direct = f"{target.upstream}/mirror"         # skopeo asks the registry itself
    for svc in lab.services.values():
        ref = f"{direct}/{lab.repo(svc.name)}"
        raw = skopeo_raw(f"{ref}@{svc.digest}")
        assert raw == bundle_blob(lab.bundle, svc.digest)          # the exact bytes: digest unchanged
        assert skopeo_raw(f"{ref}:{svc.version}") == raw            # the lock's tag, no suffix
    web = json.loads(bundle_blob(lab.bundle, lab.services["web"].digest))
    for child in web["manifests"]:                                   # each platform's manifest too
        assert skopeo_raw(f"{direct}/{lab.repo('web')}@{child['digest']}") == bundle_blob(lab.bundle, child["digest"])

    before = len(target.requests)
    again = mirror_bundle(lab.bundle, to)
    new = target.requests[before:]
    assert not again.pushed_anything and again.blobs_present == out["blobs"]["pushed"] + out["blobs"]["mounted"]
    assert new and not [r for r in new if r[0] in WRITES]
    assert {m for m, _ in new} == {"HEAD"}


def test_interrupted_mirror_resumes(bundle, target, tmp_path):
    lab = bundle
    to = f"{target.host}/resume"
    target.latency = 0.4                       # slow enough to kill the run part-way
    env = {**os.environ, "LABBUILD_PUSH_WORKERS": "1"}
    log = open(tmp_path / "mirror.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from builder.cli import main; sys.exit(main())",
                             "mirror", str(lab.bundle), "--to", to], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and target.count("POST", "/blobs/uploads/") < 2 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, (tmp_path / "mirror.log").read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.count("POST", "/blobs/uploads/") >= 2
    target.latency = 0.0
    result = mirror_bundle(lab.bundle, to)
    assert result.blobs_present >= 1           # what the killed run pushed is not pushed again
    for svc in lab.services.values():
        assert skopeo_raw(f"{target.upstream}/resume/{lab.repo(svc.name)}@{svc.digest}") == bundle_blob(lab.bundle, svc.digest)


def test_damaged_bundle_pushes_nothing(bundle, target, tmp_path):
    data = bytearray(bundle.bundle.read_bytes())
    at = data.index(b'"schemaVersion"')          # inside a manifest or index: the plan reads it first
    data[at + 1] ^= 1
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    with pytest.raises(BundleError):
        mirror_bundle(damaged, f"{target.host}/x")
    assert not target.requests


def test_a_damaged_layer_stops_the_mirror_before_any_manifest_or_tag(bundle, target, tmp_path):
    from builder.bundle.reader import BlobRanges
    digest, (offset, size) = max(BlobRanges(bundle.bundle).ranges.items(), key=lambda r: r[1][1])
    data = bytearray(bundle.bundle.read_bytes())
    data[offset + size // 2] ^= 1               # inside the biggest blob: found while it is pushed
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"blob {digest} does not match its digest"):
        mirror_bundle(damaged, f"{target.host}/x")
    assert not [r for r in target.requests if r[0] == "PUT" and "/manifests/" in r[1]]
    for svc in bundle.services.values():         # nothing names the damaged images: no manifest, no tag
        url = f"http://{target.upstream}/v2/x/{bundle.repo(svc.name)}/manifests/{svc.version}"
        assert httpx.head(url).status_code == 404
