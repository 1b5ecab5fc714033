"""The registry client against a real Distribution registry, a token server
and a fault-injecting proxy (tests/support/)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from builder.errors import RegistryError
from builder.registry import (DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, ImageName,
                              RegistryClient, load_credentials, parse_image_name, registry_scheme)
from support import oci
from support.dockerenv import require_tool
from support.faultproxy import FaultProxy
from support.registry import free_port, start_registry
from support.tokenserver import TokenServer


def client(**kw) -> RegistryClient:
    """A client with short backoff and no ambient Docker credentials."""
    kw.setdefault("credentials", {})
    return RegistryClient(backoff=0.05, deadline=20, **kw)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """One registry holding each manifest kind, pushed by hand."""
    require_tool("docker-registry")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    amd = oci.make_image([{"a": b"amd64"}], platform="linux/amd64")
    arm = oci.make_image([{"a": b"arm64"}], platform="linux/arm64")
    docker_amd = oci.make_image([{"d": b"amd64"}], platform="linux/amd64", docker=True)
    docker_arm = oci.make_image([{"d": b"arm64"}], platform="linux/arm64/v8", docker=True)
    ns = SimpleNamespace(
        reg=reg, host=reg.host,
        docker=oci.make_image([{"x": b"schema2"}, {"y": b"two"}], docker=True),
        oci=oci.make_image([{"x": b"oci"}], platform="linux/arm64"),
        index=oci.make_index([amd, arm]),
        dlist=oci.make_index([docker_amd, docker_arm], docker=True),
    )
    with reg.client() as c:
        oci.push_image(c, "kinds/docker", "v1", ns.docker)
        oci.push_image(c, "kinds/oci", "v1", ns.oci)
        oci.push_index(c, "kinds/index", "v1", ns.index)
        oci.push_index(c, "kinds/dlist", "v1", ns.dlist)
    yield ns
    reg.stop()


@pytest.fixture
def proxy(images):
    p = FaultProxy(images.host)
    yield p
    p.close()


def skopeo_raw(ref: str) -> bytes:
    require_tool("skopeo")
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                          check=True, capture_output=True, timeout=60).stdout


# --------------------------------------------------------------------------- names and transport

@pytest.mark.parametrize("name, registry, repository", [
    ("postgres", "registry-1.docker.io", "library/postgres"),
    ("docker.io/postgres", "registry-1.docker.io", "library/postgres"),
    ("docker.io/qdrant/qdrant", "registry-1.docker.io", "qdrant/qdrant"),
    ("index.docker.io/library/redis", "registry-1.docker.io", "library/redis"),
    ("ghcr.io/open-webui/open-webui", "ghcr.io", "open-webui/open-webui"),
    ("127.0.0.1:5000/a/b", "127.0.0.1:5000", "a/b"),
    ("localhost/app", "localhost", "app"),
    ("ollama/ollama", "registry-1.docker.io", "ollama/ollama"),
])
def test_image_names_are_normalised_like_docker(name, registry, repository):
    assert parse_image_name(name) == ImageName(registry, repository)


def test_plain_http_only_for_loopback_and_listed_insecure_registries():
    assert registry_scheme("127.0.0.1:5000") == "http"
    assert registry_scheme("127.8.9.1:5000") == "http"
    assert registry_scheme("localhost:5000") == "http"
    assert registry_scheme("[::1]:5000") == "http"
    assert registry_scheme("registry-1.docker.io") == "https"
    assert registry_scheme("10.0.0.5:5000") == "https"
    assert registry_scheme("10.0.0.5:5000", ["10.0.0.5:5000"]) == "http"
    assert registry_scheme("registry.lan", ["http://registry.lan/"]) == "http"
    assert registry_scheme("localhost.evil.com") == "https"


def test_credentials_come_from_docker_config(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw1").decode()},
        "ghcr.io": {"username": "me", "password": "pw2"},
        "127.0.0.1:5000": {"auth": base64.b64encode(b"local:p:w").decode()},
    }}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert load_credentials().auths == {"registry-1.docker.io": ("hub", "pw1"), "ghcr.io": ("me", "pw2"),
                                        "127.0.0.1:5000": ("local", "p:w")}


HELPER = """#!/bin/sh
# a Docker credential helper (docker-credential-helpers protocol) over a JSON file beside it
[ "$1" = get ] || { echo "only get" >&2; exit 2; }
read -r server
echo "$server" >> "$(dirname "$0")/asked"
python3 - "$server" "$(dirname "$0")/logins.json" <<'PY'
import json, sys
server, logins = sys.argv[1], json.load(open(sys.argv[2]))
if server not in logins:
    print("credentials not found in native keychain"); sys.exit(1)
if logins[server] == "broken":
    print("the keyring exploded"); sys.exit(3)
if logins[server] == "garbage":
    print("not json"); sys.exit(0)
user, secret = logins[server]
print(json.dumps({"ServerURL": server, "Username": user, "Secret": secret}))
PY
"""


def install_helper(bin_dir, name: str, logins: dict, monkeypatch) -> None:
    """A real ``docker-credential-<name>`` program on PATH answering from ``logins`` (server -> [user, secret])."""
    bin_dir.mkdir(exist_ok=True)
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(HELPER)
    program.chmod(0o755)
    (bin_dir / "logins.json").write_text(json.dumps(logins))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_credential_helpers_are_asked_as_the_docker_cli_does(tmp_path, monkeypatch):
    """credHelpers for its registry, else credsStore (which replaces auths), each asked once, lazily."""
    install_helper(tmp_path / "bin", "labtest", {
        "https://index.docker.io/v1/": ["hub", "from-store"], "ghcr.io": ["gh", "from-helper"],
        "broken.example": "broken", "garbage.example": "garbage", "token.example": ["<token>", "refresh"]},
        monkeypatch)
    (tmp_path / "config.json").write_text(json.dumps({
        "auths": {"ghcr.io": {}, "quay.io": {"auth": base64.b64encode(b"q:file").decode()}},
        "credHelpers": {"ghcr.io": "labtest"}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    creds = load_credentials()
    assert not (tmp_path / "bin" / "asked").exists()          # nothing asked until a registry wants a login
    assert creds.get("ghcr.io") == ("gh", "from-helper") and "ghcr.io" in creds
    assert creds.get("quay.io") == ("q", "file")               # no store: the file's logins
    assert creds.get("registry-1.docker.io") is None
    (tmp_path / "config.json").write_text(json.dumps({
        "auths": {"quay.io": {"auth": base64.b64encode(b"q:file").decode()}}, "credsStore": "labtest"}))
    creds = load_credentials()
    assert creds.get("registry-1.docker.io") == ("hub", "from-store")    # Hub logins live under its v1 URL
    assert creds.get("quay.io") is None                                  # the store replaces the file
    assert creds.get("registry-1.docker.io") == ("hub", "from-store")
    asked = (tmp_path / "bin" / "asked").read_text().split()
    assert asked == ["ghcr.io", "https://index.docker.io/v1/", "quay.io"]   # once per registry
    with pytest.raises(RegistryError, match=r"docker-credential-labtest get failed \(exit 3\): the keyring exploded"):
        creds.get("broken.example")
    with pytest.raises(RegistryError, match="answered something other than"):
        creds.get("garbage.example")
    with pytest.raises(RegistryError, match="identity token") as err:
        creds.get("token.example")
    assert "docker login token.example" in err.value.hint


BOUNDED_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))
from builder.errors import RegistryError
from builder.registry import load_credentials
try:
    load_credentials().get("ghcr.io")
except RegistryError as exc:
    print(exc.render())
"""


@pytest.mark.parametrize("endless", ["helper stdout", "helper stderr", "config.json"])
def test_a_helper_that_prints_forever_is_stopped_and_refused(endless, tmp_path):
    """In a child with its address space capped: reading all the output first would die of MemoryError."""
    marker = f"labbuild-endless-{os.getpid()}-{tmp_path.name}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-forever"
    helper.write_text(f"#!/bin/sh\nyes {marker}{' >&2' if endless == 'helper stderr' else ''}\n")
    helper.chmod(0o755)
    if endless == "config.json":
        (tmp_path / "config.json").symlink_to("/dev/zero")
    else:
        (tmp_path / "config.json").write_text(json.dumps({"credsStore": "forever"}))
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", BOUNDED_CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    if endless == "config.json":
        assert f"{tmp_path / 'config.json'} is not a regular file" in proc.stdout, proc.stdout
    else:
        assert "error: docker-credential-forever get printed more than 1 MiB and was stopped" in proc.stdout
        assert "hint: " in proc.stdout and "echo ghcr.io | docker-credential-forever get" in proc.stdout
    assert time.monotonic() - started < 30      # stopped at the cap, not at the helper's 60 s timeout
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert left == [], f"the helper's `yes` still runs: {left}"


def test_a_missing_or_misnamed_helper_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "nosuchhelper"}))
    with pytest.raises(RegistryError, match="docker-credential-nosuchhelper.*not on PATH") as err:
        load_credentials().get("ghcr.io")
    assert str(tmp_path / "config.json") in err.value.message
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"ghcr.io": "../../bin/sh"}}))
    with pytest.raises(RegistryError, match="not a program name"):
        load_credentials().get("ghcr.io")
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": ["pass"]}))
    with pytest.raises(RegistryError, match="credsStore must be a helper name"):
        load_credentials()


def test_broken_docker_config_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{not json")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with pytest.raises(RegistryError, match="cannot read Docker credentials"):
        load_credentials()


# --------------------------------------------------------------------------- manifests and blobs

@pytest.mark.parametrize("kind, media_type", [
    ("docker", DOCKER_MANIFEST), ("oci", OCI_MANIFEST), ("index", OCI_INDEX), ("dlist", DOCKER_LIST)])
def test_each_manifest_kind_resolves_to_the_digest_skopeo_sees(images, kind, media_type):
    pushed = getattr(images, kind)
    name = f"{images.host}/kinds/{kind}"
    raw = skopeo_raw(f"{name}:v1")
    with client() as c:
        by_tag = c.fetch_manifest(name, "v1")
        by_digest = c.fetch_manifest(name, pushed.digest)
        assert c.resolve_tag(name, "v1") == pushed.digest
    assert by_tag.data == raw == by_digest.data
    assert by_tag.digest == by_digest.digest == "sha256:" + hashlib.sha256(raw).hexdigest() == pushed.digest
    assert by_digest.media_type == media_type


def test_resolve_tag_asks_head_first_and_falls_back_to_get(images, proxy):
    name = f"{proxy.host}/kinds/index"
    with client() as c:
        assert c.resolve_tag(name, "v1") == images.index.digest
        assert (proxy.count("HEAD"), proxy.count("GET")) == (1, 0)
        proxy.add("strip_header", "/manifests/v1", method="HEAD", name="Docker-Content-Digest")
        assert c.resolve_tag(name, "v1") == images.index.digest
        assert (proxy.count("HEAD"), proxy.count("GET")) == (2, 1)


def test_unknown_tag_and_missing_digest_are_not_found_and_not_retried(images, proxy):
    missing = "sha256:" + "0" * 64
    with client() as c:
        with pytest.raises(RegistryError) as err:
            c.fetch_manifest(f"{proxy.host}/kinds/oci", missing)
        with pytest.raises(RegistryError):
            c.resolve_tag(f"{proxy.host}/kinds/oci", "nope")
    assert err.value.status == 404 and err.value.digest == missing
    assert err.value.registry == proxy.host and err.value.image == f"{proxy.host}/kinds/oci"
    assert "not found" in err.value.message and err.value.hint
    assert proxy.count() == 2   # one GET, one HEAD: nothing retried


def test_fetch_blob_is_verified_and_open_blob_resumes_with_range(images):
    name = f"{images.host}/kinds/docker"
    layer = images.docker.layers[1]
    with client() as c:
        assert c.fetch_blob(name, images.docker.config.digest) == images.docker.config.data
        with c.open_blob(name, layer.digest) as blob:
            assert b"".join(blob) == layer.data and blob.start == 0 and blob.range_honoured
            assert blob.total_size == layer.size
        with c.open_blob(name, layer.digest, offset=10) as blob:
            assert blob.range_honoured and blob.start == 10 and blob.total_size == layer.size
            assert b"".join(blob) == layer.data[10:]


# --------------------------------------------------------------------------- faults

def test_altered_manifest_is_refused_and_never_retried(images, proxy):
    proxy.add("alter", "/manifests/", times=10)
    with client() as c, pytest.raises(RegistryError, match="hash to") as err:
        c.fetch_manifest(f"{proxy.host}/kinds/index", images.index.digest)
    assert err.value.digest == images.index.digest
    assert proxy.count() == 1


def test_altered_config_blob_is_refused(images, proxy):
    proxy.add("alter", "/blobs/", times=10)
    with client() as c, pytest.raises(RegistryError, match="blob bytes hash to"):
        c.fetch_blob(f"{proxy.host}/kinds/docker", images.docker.config.digest)
    assert proxy.count() == 1


@pytest.mark.parametrize("fault", [
    dict(kind="status", code=500), dict(kind="status", code=503), dict(kind="reset"), dict(kind="truncate")])
def test_transient_faults_are_retried(images, proxy, fault):
    proxy.add(path="/v2/kinds/", times=2, **fault)
    with client() as c:
        assert c.fetch_manifest(f"{proxy.host}/kinds/oci", images.oci.digest).digest == images.oci.digest
        assert c.fetch_blob(f"{proxy.host}/kinds/oci", images.oci.config.digest) == images.oci.config.data
    assert proxy.count() == 4   # two failures, then the manifest; then the blob


def test_429_waits_for_retry_after(images, proxy):
    proxy.add("status", "/manifests/", code=429, retry_after="1")
    start = time.monotonic()
    with client() as c:
        c.fetch_manifest(f"{proxy.host}/kinds/oci", images.oci.digest)
    assert time.monotonic() - start >= 1.0
    assert proxy.count() == 2


def test_429_asking_to_wait_beyond_the_deadline_fails_at_once(images, proxy):
    proxy.add("status", "/manifests/", code=429, retry_after="120")
    start = time.monotonic()
    with client() as c, pytest.raises(RegistryError, match="Retry-After 120s") as err:
        c.fetch_manifest(f"{proxy.host}/kinds/oci", images.oci.digest)
    assert time.monotonic() - start < 2 and err.value.status == 429
    assert "rate-limiting" in err.value.hint


def test_slow_response_beyond_the_timeout_is_retried(images, proxy):
    proxy.add("delay", "/manifests/", seconds=1.5)
    with client(timeout=0.5) as c:
        assert c.fetch_manifest(f"{proxy.host}/kinds/oci", images.oci.digest).digest == images.oci.digest
    assert proxy.count() == 2


def test_persistent_5xx_gives_up_after_the_retry_budget(images, proxy):
    proxy.add("status", "/manifests/", code=502, times=100)
    with client(retries=2) as c, pytest.raises(RegistryError, match="gave up after 3 attempt") as err:
        c.fetch_manifest(f"{proxy.host}/kinds/oci", images.oci.digest)
    assert err.value.status == 502 and err.value.registry == proxy.host
    assert proxy.count() == 3


def test_dead_registry_fails_fast_and_is_remembered():
    name = f"127.0.0.1:{free_port()}/gone/image"
    with client(retries=2) as c:
        start = time.monotonic()
        with pytest.raises(RegistryError, match="unreachable") as err:
            c.fetch_manifest(name, "sha256:" + "1" * 64)
        assert time.monotonic() - start < 10
        assert "answers from this host" in err.value.hint
        start = time.monotonic()
        with pytest.raises(RegistryError, match="unreachable"):
            c.fetch_blob(name, "sha256:" + "2" * 64)
        assert time.monotonic() - start < 0.5


def test_per_registry_concurrency_is_bounded(images):
    slow = FaultProxy(images.host, latency=0.1)
    try:
        with client(per_registry_concurrency=3) as c, ThreadPoolExecutor(12) as pool:
            digests = list(pool.map(lambda _: c.fetch_manifest(f"{slow.host}/kinds/oci", images.oci.digest).digest,
                                    range(12)))
        assert set(digests) == {images.oci.digest}
        assert slow.max_in_flight == 3
    finally:
        slow.close()


# --------------------------------------------------------------------------- authentication

def test_basic_auth_uses_docker_config_credentials(tmp_path_factory, tmp_path, monkeypatch):
    require_tool("docker-registry")
    reg = start_registry(tmp_path_factory.mktemp("authreg"), htpasswd=("alice", "s3cret"))
    try:
        image = oci.make_image([{"f": b"private"}])
        with reg.client() as c:
            oci.push_image(c, "private/app", "v1", image)
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
        with RegistryClient(backoff=0.05) as c, pytest.raises(RegistryError, match="requires a login") as err:
            c.fetch_manifest(f"{reg.host}/private/app", image.digest)
        assert f"docker login {reg.host}" in err.value.hint
        (tmp_path / "config.json").write_text(json.dumps(
            {"auths": {reg.host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}}))
        with RegistryClient(backoff=0.05) as c:
            assert c.fetch_manifest(f"{reg.host}/private/app", image.digest).digest == image.digest
            assert c.fetch_blob(f"{reg.host}/private/app", image.config.digest) == image.config.data
        (tmp_path / "config.json").write_text(json.dumps(
            {"auths": {reg.host: {"auth": base64.b64encode(b"alice:wrong").decode()}}}))
        with RegistryClient(backoff=0.05) as c, pytest.raises(RegistryError, match="access denied"):
            c.fetch_manifest(f"{reg.host}/private/app", image.digest)
        install_helper(tmp_path / "bin", "labtest", {reg.host: ["alice", "s3cret"]}, monkeypatch)
        (tmp_path / "config.json").write_text(json.dumps({"auths": {reg.host: {}}, "credsStore": "labtest"}))
        with RegistryClient(backoff=0.05) as c:     # the login from the credential store
            assert c.fetch_manifest(f"{reg.host}/private/app", image.digest).digest == image.digest
    finally:
        reg.stop()


def test_anonymous_bearer_flow_caches_a_token_per_scope(images):
    tokens = TokenServer()
    gate = FaultProxy(images.host, bearer=tokens)
    try:
        with client() as c:
            name = f"{gate.host}/kinds/docker"
            assert c.fetch_manifest(name, images.docker.digest).digest == images.docker.digest
            assert c.fetch_blob(name, images.docker.config.digest) == images.docker.config.data
            assert c.resolve_tag(name, "v1") == images.docker.digest
            assert tokens.issued == 1
            c.fetch_manifest(f"{gate.host}/kinds/oci", images.oci.digest)
            assert tokens.issued == 2
        assert gate.count() == 5   # a single 401 taught the client the realm
    finally:
        gate.close()
        tokens.close()


def test_credentialed_bearer_flow_sends_docker_config_credentials(images):
    tokens = TokenServer(users={"bob": "hunter2"})
    gate = FaultProxy(images.host, bearer=tokens)
    name = f"{gate.host}/kinds/index"
    try:
        with client() as c, pytest.raises(RegistryError, match="token service .* refused"):
            c.fetch_manifest(name, images.index.digest)
        with client(credentials={gate.host: ("bob", "hunter2")}) as c:
            assert c.fetch_manifest(name, images.index.digest).digest == images.index.digest
        assert tokens.issued == 1 and tokens.refused == 1
    finally:
        gate.close()
        tokens.close()


# --------------------------------------------------------------------------- tag lists

TAGS = ["1.0.0", "1.1.0", "2.0.0", "latest", "1.2.0-rc.1", "sha256-" + "a" * 64 + ".sig"]


@pytest.fixture(scope="module")
def tagged(images):
    """kinds/tagged: one image under several tags."""
    with images.reg.client() as c:
        for tag in TAGS:
            oci.push_image(c, "kinds/tagged", tag, images.oci)
    return "kinds/tagged"


def test_tag_list_follows_link_pages_to_the_end(images, tagged):
    pages = FaultProxy(images.host, page_tags=2)
    try:
        with client() as c:
            assert sorted(c.list_tags(f"{pages.host}/{tagged}")) == sorted(TAGS)
        assert pages.count("GET", "/tags/list") == 3          # 6 tags, 2 a page
        assert pages.count("GET", "last=") == 2               # pages 2 and 3 from the Link headers
        assert pages.count("HEAD") == 0
    finally:
        pages.close()


def test_tag_list_of_a_registry_that_ignores_n_is_one_page(proxy, tagged):
    with client() as c:
        assert sorted(c.list_tags(f"{proxy.host}/{tagged}")) == sorted(TAGS)
    assert proxy.count() == 1


def test_tag_list_behind_a_token_service(images, tagged):
    tokens = TokenServer()
    gate = FaultProxy(images.host, bearer=tokens, page_tags=4)
    try:
        with client() as c:
            assert sorted(c.list_tags(f"{gate.host}/{tagged}")) == sorted(TAGS)
        assert tokens.issued == 1 and gate.count("GET", "/tags/list") == 3   # one 401, then two pages
    finally:
        gate.close()
        tokens.close()


def test_tag_list_of_a_missing_repository_names_it(proxy):
    with client() as c, pytest.raises(RegistryError, match="kinds/nothing.*not found"):
        c.list_tags(f"{proxy.host}/kinds/nothing")


def test_a_next_link_leaving_the_repository_is_refused(images, tagged, monkeypatch):
    pages = FaultProxy(images.host, page_tags=2)
    original = pages._tag_page

    def elsewhere(name, path, headers):
        status, out, data = original(name, path, headers)
        return status, [(k, v.replace(f"/v2/{name}/", "/v2/other/repo/") if k == "Link" else v)
                        for k, v in out], data

    monkeypatch.setattr(pages, "_tag_page", elsewhere)
    try:
        with client() as c, pytest.raises(RegistryError, match="leaves kinds/tagged's tag list"):
            c.list_tags(f"{pages.host}/{tagged}")
    finally:
        pages.close()
