"""`[[models]]` from validate to the bundle, without an engine: the blueprint rules,
`lock` against a real registry behind an anonymous token service (as
registry.ollama.ai hands them out), the manifest and diff, the Open WebUI
wiring, and the on-disk layout contract with Ollama's source."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from builder.blueprint import load_lab, validate_paths
from builder.bundle.diff import BundleView, diff_bundles
from builder.bundle.release import build_release
from builder.cli import main
from builder.errors import BundleError
from builder.format.manifest import Manifest
from builder.format.models import OLLAMA, model_bytes, shipped_models
from builder.install.models import INCOMING

ollama_blob_path, ollama_manifest_path, reference_of_manifest_path = \
    OLLAMA.blob_path, OLLAMA.manifest_path, OLLAMA.reference_of
from support import oci
from support.dockerenv import require_tool
from support.faultproxy import FaultProxy
from support.registry import start_registry
from support.tokenserver import TokenServer
from test_registry import skopeo_raw

from builder.lockfile import inputs_hash, read_lock, service_inputs
from builder.mirror import mirror_bundle

D = "sha256:" + "1" * 64


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A registry holding an image and three tiny Ollama-format models, behind an anonymous token service."""
    require_tool("docker-registry")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    ns = SimpleNamespace(reg=reg, app=oci.make_image([{"a": b"app"}], docker=True),
                         chat=oci.ollama_model(b"chat weights"), chat2=oci.ollama_model(b"chat weights v2"),
                         embed=oci.ollama_model(b"embedding weights", family="bert"))
    with reg.client() as c:
        oci.push_image(c, "lab/app", "1", ns.app)
        oci.push_image(c, "library/chat", "q4", ns.chat)
        oci.push_image(c, "library/embed", "v1", ns.embed)
    yield ns
    reg.stop()


@pytest.fixture
def gate(models):
    """This test's way to the registry: a proxy demanding anonymous bearer tokens, counting requests."""
    models.tokens = TokenServer()
    models.gate = FaultProxy(models.reg.host, bearer=models.tokens)
    yield models.gate
    models.gate.close()
    models.tokens.close()


def model_toml(name: str, tag: str, digest: str, **extra) -> str:
    fields = {"name": name, "tag": tag, "digest": digest, "format": "ollama", "volume": "data", "path": "models",
              **extra}
    return "\n[[models]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())


def write_lab(root: Path, image: str, image_digest: str, models_toml: str = "", volume: str = "") -> Path:
    (root / "blueprints" / "services").mkdir(parents=True, exist_ok=True)
    (root / "blueprints" / "lab.toml").write_text(
        '[lab]\nname = "mlab"\ndefault_profile = "all"\nplatforms = ["linux/amd64"]\n\n'
        '[profiles.all]\nservices = ["llm"]\n')
    (root / "blueprints" / "services" / "llm.toml").write_text(
        '[service]\nname = "llm"\ndescription = "a model server"\nphase = 0\ncategory = "base"\n\n'
        f'[image]\nname = "{image}"\ntag = "1"\ndigest = "{image_digest}"\n\n'
        + (volume or '[[volumes]]\nname = "data"\ntarget = "/root/.ollama"\n') + models_toml)
    return root


def run(root: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["--root", str(root), *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# --------------------------------------------------------------------------- validate

@pytest.mark.parametrize("models_toml, volume, message", [
    (model_toml("registry.ollama.ai/library/qwen2.5", "0.5b", D, volume="cache"), "", "no volume named 'cache'"),
    (model_toml("registry.ollama.ai/library/qwen2.5", "0.5b", D, path="../etc"), "", "must stay inside the volume"),
    (model_toml("registry.ollama.ai/library/qwen2.5", "0.5b", D, path="a/./b"), "", "must stay inside the volume"),
    (model_toml("registry.ollama.ai/library/qwen2.5", "0.5b", D, path="/models"), "", "does not match"),
    (model_toml("registry.ollama.ai/library/qwen2.5", "latest", D), "", "latest"),
    (model_toml("registry.ollama.ai/library/qwen2.5", "0.5b", "sha256:abc"), "", "is not a digest"),
    (model_toml("registry.ollama.ai/library/qwen2.5", "0.5b", D) * 2, "", "listed twice"),
    (model_toml("library/qwen", "0.5b", D), "", "not fully qualified"),
    (model_toml("127.0.0.1:5000/a/b/c", "1", D), "", "not host/namespace/model"),
    (model_toml("registry.ollama.ai/my.ns/m", "1", D), "", "not a name Ollama accepts"),
    (model_toml("registry.ollama.ai/library/m", "1", D, format="gguf"), "", "is not one of"),
    (model_toml("registry.ollama.ai/library/m", "1", D),
     '[[volumes]]\nname = "data"\ntarget = "/root/.ollama"\nread_only = true\n', "read-only"),
])
def test_validate_refuses_bad_models(tmp_path, models_toml, volume, message, capsys):
    root = write_lab(tmp_path, "docker.io/ollama/ollama", D, models_toml, volume)
    code, out, _ = run(root, "--json", "validate", capsys=capsys)
    result = json.loads(out)
    assert code == 1 and not result["ok"]
    assert any(message in e["message"] and e["path"].startswith("models") for e in result["errors"]), result


def test_validate_accepts_models_and_names_them_as_ollama_does(tmp_path, capsys):
    root = write_lab(tmp_path, "docker.io/ollama/ollama", D,
                     model_toml("registry.ollama.ai/library/qwen2.5", "0.5b", D, role="chat")
                     + model_toml("127.0.0.1:5000/team/embed", "v1", "sha256:" + "2" * 64, role="embedding"))
    assert run(root, "validate", capsys=capsys)[0] == 0
    m1, m2 = load_lab(root).services["llm"].models
    assert m1.served_name == "qwen2.5:0.5b" and m1.reference == "registry.ollama.ai/library/qwen2.5:0.5b"
    assert m2.served_name == "127.0.0.1:5000/team/embed:v1"


# --------------------------------------------------------------------------- lock

@pytest.fixture
def mlab(tmp_path, models, gate):
    h = models.gate.host
    return write_lab(tmp_path / "lab", f"{h}/lab/app", models.app.digest,
                     model_toml(f"{h}/library/chat", "q4", models.chat.digest, role="chat")
                     + model_toml(f"{h}/library/embed", "v1", models.embed.digest, role="embedding"))


def test_lock_resolves_models_through_anonymous_tokens_and_records_every_blob(mlab, models, capsys):
    code, _, err = run(mlab, "lock", capsys=capsys)
    assert code == 0, err
    assert models.tokens.issued > 0         # the registry demanded bearer tokens; they were anonymous
    rec = read_lock(mlab / "lockfiles" / "lab.lock.json").services["llm"]
    chat, embed = rec.models
    for m, img in ((chat, models.chat), (embed, models.embed)):
        assert m.verified and m.digest == img.digest and m.size == len(img.manifest.data)
        assert m.media_type == oci.DOCKER_MANIFEST
        assert (m.config.digest, m.config.size, m.config.media_type) == (
            img.config.digest, img.config.size, oci.DOCKER_CONFIG)
        assert [(l.digest, l.size, l.media_type) for l in m.layers] == [
            (b.digest, b.size, b.media_type) for b in img.layers]
    assert [l.media_type for l in chat.layers] == [oci.OLLAMA_MODEL, oci.OLLAMA_TEMPLATE, oci.OLLAMA_PARAMS]
    # the manifest and the config were fetched and re-hashed; the weights were not downloaded
    assert models.gate.count("GET", f"/library/chat/blobs/{models.chat.config.digest}") == 1
    assert models.gate.count("GET", f"/library/chat/blobs/{models.chat.layers[0].digest}") == 0
    assert run(mlab, "lock", "--check", capsys=capsys)[0] == 0


def test_altered_model_manifest_fails_the_lock(mlab, models, capsys):
    models.gate.add("alter", "/library/embed/manifests/", times=100)
    code, _, err = run(mlab, "lock", capsys=capsys)
    assert code == 1 and "hash to" in err and "models.1.digest" in err
    assert not (mlab / "lockfiles" / "lab.lock.json").exists()


def test_inputs_cover_models_and_check_names_a_moved_model_pin(mlab, models, capsys):
    assert run(mlab, "lock", capsys=capsys)[0] == 0
    lab = load_lab(mlab)
    before = inputs_hash(lab)
    bp = mlab / "blueprints" / "services" / "llm.toml"
    bp.write_text(bp.read_text().replace(models.embed.digest, "sha256:" + "3" * 64))
    assert inputs_hash(load_lab(mlab)) != before
    code, out, _ = run(mlab, "--json", "lock", "--check", capsys=capsys)
    assert code == 1 and "models" in json.loads(out)["services"]["llm"]
    # a service without models keeps the inputs it always had (shipped locks stay byte-identical)
    assert "models" not in service_inputs(load_lab(Path(__file__).resolve().parents[1]), "n8n")


def test_offline_lock_records_model_pins_unverified_and_release_refuses_them(tmp_path, capsys):
    root = write_lab(tmp_path, "127.0.0.1:9/lab/app", D, model_toml("127.0.0.1:9/library/chat", "q4", D))
    assert run(root, "lock", "--offline", capsys=capsys)[0] == 0
    data = json.loads((root / "lockfiles" / "lab.lock.json").read_text())
    assert data["services"]["llm"]["models"] == [{
        "reference": "127.0.0.1:9/library/chat:q4", "digest": D, "verified": False, "media_type": None,
        "size": 0, "config": None, "layers": []}]
    assert run(root, "lock", "--check", capsys=capsys)[0] == 0
    code, _, err = run(root, "release", "1.0.0", "--with-images", capsys=capsys)
    assert code == 1 and "unverified" in err


def test_update_moves_a_model_pin_rewriting_only_its_digest_line(mlab, models, capsys):
    assert run(mlab, "lock", capsys=capsys)[0] == 0
    bp = mlab / "blueprints" / "services" / "llm.toml"
    before = bp.read_text()
    with models.reg.client() as c:      # the model's tag moves upstream
        oci.push_image(c, "library/chat", "q4", models.chat2)
    try:
        code, _, err = run(mlab, "lock", "--update", "llm", capsys=capsys)
    finally:
        with models.reg.client() as c:
            oci.push_manifest(c, "library/chat", "q4", models.chat.manifest)
    assert code == 0, err
    changed = [(a, b) for a, b in zip(before.splitlines(), bp.read_text().splitlines()) if a != b]
    assert changed == [(f'digest = "{models.chat.digest}"', f'digest = "{models.chat2.digest}"')]
    assert "Moved pin of model 0 of 'llm'" in err
    rec = read_lock(mlab / "lockfiles" / "lab.lock.json").services["llm"]
    assert rec.models[0].digest == models.chat2.digest and rec.models[0].verified
    assert run(mlab, "lock", "--check", capsys=capsys)[0] == 0


# --------------------------------------------------------------------------- release and the manifest

def test_release_with_images_carries_every_model_blob_once(mlab, models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert run(mlab, "lock", capsys=capsys)[0] == 0
    result = build_release(mlab, "1.0.0", with_images=True, out_dir=tmp_path / "dist", progress=False)
    with tarfile.open(result.bundle) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isreg()]
        top = tar.getmembers()[0].name.split("/")[0]
        manifest = Manifest.loads(tar.extractfile(f"{top}/manifest.json").read())
        index = json.loads(tar.extractfile(f"{top}/images/index.json").read())
        sums = tar.extractfile(f"{top}/SHA256SUMS").read().decode()
    assert len(names) == len(set(names))
    for img in (models.chat, models.embed):
        for blob in (img.manifest, *img.blobs()):
            rel = f"images/blobs/sha256/{blob.digest.removeprefix('sha256:')}"
            assert rel in names and rel in manifest.files and f"  {rel}\n" in sums
            assert manifest.files[rel].sha256 == blob.digest.removeprefix("sha256:")
    refs = {d["annotations"]["org.opencontainers.image.ref.name"]: d["digest"] for d in index["manifests"]}
    assert refs[f"{models.gate.host}/library/chat:q4"] == models.chat.digest
    assert refs[f"{models.gate.host}/lab/app:1"] == models.app.digest
    entry = manifest.services["llm"]
    assert [m.reference for m in entry.models] == [f"{models.gate.host}/library/chat:q4",
                                                   f"{models.gate.host}/library/embed:v1"]
    assert shipped_models(manifest) == {"llm": entry.models}
    # chat and embed share their template and params blobs: shipped once, counted once
    unique = {b.digest: len(b.data) for img in (models.chat, models.embed) for b in (img.manifest, *img.blobs())}
    assert len(unique) < 2 * 5
    assert model_bytes(manifest) == sum(unique.values())
    # mirror carries the models too, by digest: the exact manifest bytes, the lock's tag
    target = start_registry(tmp_path / "target")
    try:
        mirrored = mirror_bundle(result.bundle, f"{target.host}/lab")
        assert {i.source for i in mirrored.images} >= {f"{models.gate.host}/library/chat:q4",
                                                       f"{models.gate.host}/library/embed:v1"}
        for img, path, tag in ((models.chat, "library/chat", "q4"), (models.embed, "library/embed", "v1")):
            for ref in (f"{target.host}/lab/{path}@{img.digest}", f"{target.host}/lab/{path}:{tag}"):
                assert skopeo_raw(ref) == img.manifest.data
    finally:
        target.stop()
    # without images the manifest only names the models: nothing is shipped, nothing counted
    online = build_release(mlab, "1.0.1", out_dir=tmp_path / "dist", progress=False)
    with tarfile.open(online.bundle) as tar:
        top = online.bundle.name.removesuffix(".tar.gz")
        m2 = Manifest.loads(tar.extractfile(f"{top}/manifest.json").read())
    assert m2.services["llm"].models == entry.models
    assert shipped_models(m2) == {} and model_bytes(m2) == 0


def manifest_with(models_json: list | None) -> Manifest:
    service = {"image": "x/y:1", "digest": D, "verified": True, "config_digests": {}, "ports": [],
               "health": None, "depends_on": [], "volumes": [{"name": "data", "volume": "llm_data",
                                                              "target": "/root/.ollama", "read_only": False}],
               "secrets": [], "runbook": "runbooks/llm.md", "healthcheck": False}
    if models_json is not None:
        service["models"] = models_json
    return Manifest.from_json({"format": 1, "lab": "mlab", "name": "mlab-base-1.0.0", "version": "1.0.0",
                               "profile": "base",
                               "inputs": D, "labbuild": "0", "offline": True, "platforms": [],
                               "services": {"llm": service}, "files": {}})


def model_json(tag: str, digest: str) -> dict:
    return {"name": "registry.ollama.ai/library/m", "tag": tag, "digest": digest, "format": "ollama",
            "volume": "data", "path": "models", "role": None, "media_type": oci.DOCKER_MANIFEST, "size": 10,
            "blobs": [{"digest": "sha256:" + "c" * 64, "size": 5, "media_type": oci.OLLAMA_MODEL}]}


def test_manifest_models_are_optional_and_round_trip():
    plain = manifest_with(None)
    assert "models" not in plain.to_json()["services"]["llm"]     # bundles without models: byte-identical
    rich = manifest_with([model_json("1", D)])
    assert Manifest.loads(rich.dumps()) == rich
    assert rich.to_json()["services"]["llm"]["models"][0]["blobs"][0]["size"] == 5


def test_diff_shows_models_added_and_moved():
    a = BundleView("a", manifest_with([model_json("1", D)]), {})
    b = BundleView("b", manifest_with([model_json("1", "sha256:" + "2" * 64), model_json("2", D)]), {})
    d = diff_bundles(a, b)
    assert [(m["model"], m["before"], m["after"]) for m in d.models] == [
        ("registry.ollama.ai/library/m:1", D, "sha256:" + "2" * 64), ("registry.ollama.ai/library/m:2", None, D)]
    text = d.render_text()
    assert "~ model llm: registry.ollama.ai/library/m:1 digest" in text and "+ model llm: registry.ollama.ai/library/m:2@" in text
    assert d.to_json()["models"] == d.models and not d.identical


# --------------------------------------------------------------------------- one grammar on both sides

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,5}[a-z0-9])?", fullmatch=True)
_HOST = st.builds(".".join, st.lists(_LABEL, min_size=1, max_size=3)) | st.just("localhost")
_PORT = st.integers(0, 70000).map(str) | st.sampled_from(["65535", "65536", "99999", "080", ""])
_PART = st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)*", fullmatch=True)
MODEL_NAMES = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,6})?"   # Docker's names,
                  r"/[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*", fullmatch=True),  # lower case
    st.builds(lambda h, p, parts: f"{h}{':' + p if p else ''}/" + "/".join(parts),     # ports in and past the range
              _HOST, _PORT, st.lists(_PART, min_size=1, max_size=4)),
    st.builds(lambda h, p, ns, m: f"{h}:{p}/{ns}/{m}", _HOST, _PORT.filter(bool),       # mostly placeable names
              st.from_regex(r"[a-z0-9]+([_-][a-z0-9]+)*", fullmatch=True), _PART),
    st.builds(lambda h, p, parts: f"[{h}]:{p}/" + "/".join(parts),                    # IPv6 hosts
              st.sampled_from(["::1", "fe80::1", "2001:db8::5"]), _PORT, st.lists(_PART, min_size=2, max_size=2)),
    st.text(alphabet="ab.:/[]-_09AZ²", max_size=30),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=MODEL_NAMES)
@example(name="[::1]:5000/library/qwen2.5")
@example(name="127.0.0.1:99999/library/qwen2.5")
def test_validate_and_the_manifest_reader_accept_the_same_model_names(tmp_path, name):
    """A name validate passes is one install can read (no release recorded that no install takes), and the
    other way round: the manifest reader asks what validate asks (builder.names.model_name_problem)."""
    root = write_lab(tmp_path, "docker.io/ollama/ollama", D, model_toml(name, "1", D))
    problems = validate_paths(root)
    try:
        manifest_with([{**model_json("1", D), "name": name}])
        refused = None
    except BundleError as exc:
        refused = exc.message
    assert (not problems) == (refused is None), (name, [p.render() for p in problems], refused)


# --------------------------------------------------------------------------- Open WebUI offline by design

def test_open_webui_embeds_through_ollama_only_in_offline_bundles_with_an_embedding_model(lab_copy):
    from builder import __version__
    from builder.bundle.pack import manifest_services
    from builder.lockfile import read_lock as rl
    from builder.render import ReleaseInput
    from builder.render.compose import compose_service
    from builder.render.envfile import lab_settings

    lab, lock = load_lab(lab_copy), rl(lab_copy / "lockfiles" / "lab.lock.json")
    ri = ReleaseInput(lab=lab, lock=lock, profile="base", version="1.0.0", labbuild_version=__version__,
                      offline=True)
    embedding = [m for m in lab.services["ollama"].models if m.role == "embedding"]
    assert embedding, "the shipped catalog pins an embedding model for the base profile"
    wired = {"RAG_EMBEDDING_ENGINE": "ollama", "RAG_EMBEDDING_MODEL": "nomic-embed-text:v1.5",
             "RAG_OLLAMA_BASE_URL": "http://ollama:11434", "OFFLINE_MODE": "true", "HF_HUB_OFFLINE": "1"}
    assert embedding[0].served_name == "nomic-embed-text:v1.5"
    env = compose_service(ri, "open-webui")["environment"]
    settings = lab_settings(ri)
    for key, value in wired.items():
        assert key in env                                            # compose passes it on
        assert settings.get(f"OPEN_WEBUI__{key}", env[key]) == value  # with this value (lab.env or inline)
    offline_start = manifest_services(ri)["open-webui"].health.start_period
    online = ReleaseInput(lab=lab, lock=lock, profile="base", version="1.0.0", labbuild_version=__version__)
    env_online = compose_service(online, "open-webui").get("environment", {})
    assert not set(wired) & set(env_online)
    assert manifest_services(online)["open-webui"].health.start_period == "10m"
    assert offline_start != "10m"


# --------------------------------------------------------------------------- the on-disk layout contract

def test_layout_is_ollamas_legacy_manifest_and_blob_paths():
    """Contract with ollama/ollama: ``manifest.BlobsPath`` (manifest/paths.go; older
    server/modelpath.go ``GetBlobsPath``) turns ``sha256:<hex>`` into ``blobs/sha256-<hex>``;
    ``Name.Filepath()`` (types/model/name.go) is ``host/namespace/model/tag`` under
    ``manifests/``, the host keeping its port (``isValidPart`` allows ':' only there). The
    manifests-v2 code (manifest/paths.go ``resolveManifestPath``) still reads this layout."""
    hexd = "c5396e06af294bd101b30dce59131a76d2b773e76950acc870eda801d3ab0515"
    assert ollama_blob_path(f"sha256:{hexd}") == f"blobs/sha256-{hexd}"
    assert ollama_manifest_path("registry.ollama.ai/library/qwen2.5", "0.5b") == \
        "manifests/registry.ollama.ai/library/qwen2.5/0.5b"
    assert ollama_manifest_path("127.0.0.1:5000/library/m", "t") == "manifests/127.0.0.1:5000/library/m/t"
    assert ollama_manifest_path("localhost:5000/team/m", "q4_K_M") == "manifests/localhost:5000/team/m/q4_K_M"
    assert reference_of_manifest_path("manifests/127.0.0.1:5000/library/m/t") == "127.0.0.1:5000/library/m:t"
    assert reference_of_manifest_path("manifests-v2/ollama.com/library/m/t") == "ollama.com/library/m:t"
    assert reference_of_manifest_path("manifests/registry.ollama.ai/library") is None
    assert INCOMING.startswith("blobs/.")        # not a sha256-<hex> name: Ollama never takes it for a blob
    for bad in ("sha256:xyz", "md5:" + "0" * 32):
        with pytest.raises(Exception):
            ollama_blob_path(bad)
    with pytest.raises(Exception):
        ollama_manifest_path("registry.ollama.ai/a/b/c", "1")
    assert hashlib.sha256(b"").hexdigest() not in INCOMING


def test_runbooks_say_where_models_go_and_how_to_get_them_online(lab_copy):
    from builder import __version__
    from builder.render import ReleaseInput
    from builder.render.runbooks import render_service_runbook

    lab, lock = load_lab(lab_copy), read_lock(lab_copy / "lockfiles" / "lab.lock.json")
    make = lambda offline: ReleaseInput(lab=lab, lock=lock, profile="base", version="1.0.0",  # noqa: E731
                                        labbuild_version=__version__, offline=offline)
    offline = render_service_runbook(make(True), "ollama")
    assert "`qwen2.5:0.5b` (chat)" in offline and "places it into `/root/.ollama/models`" in offline
    online = render_service_runbook(make(False), "ollama")
    assert f"docker exec {lab.name}-ollama-1 ollama pull nomic-embed-text:v1.5" in online
    assert "start period 3m" in render_service_runbook(make(True), "open-webui")
    assert "start period 10m" in render_service_runbook(make(False), "open-webui")
