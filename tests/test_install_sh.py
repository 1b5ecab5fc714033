"""install.sh, the POSIX installer, without an engine: syntax under dash and busybox sh, its
manifest and secrets parsers against the Python ones on a real bundle, and its refusals.

The full install with the engine (load, ID check, compose, health, upgrade) is in
tests/e2e/test_airgap.py and tests/e2e/test_faults.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from importlib import resources

import pytest

from builder.install.secrets import secret_prefixes, secret_specs
from e2e.labkit import AirgapLab, Service, free_port, one_service_lab, path_with_venv

SCRIPT = resources.files("builder").joinpath("templates", "install.sh").read_text("utf-8")
SHELLS = [s for s in (["dash"], ["/bin/busybox", "sh"]) if shutil.which(s[0])]


def awk_program(marker: str) -> str:
    """The awk program of install.sh that reads ``marker`` (its input file name)."""
    m = re.search(r"awk '\n([^']*)'\s*" + re.escape(marker), SCRIPT)
    assert m, f"no awk program reading {marker} in install.sh"
    return m.group(1)


def flatten(obj, prefix=""):
    """What install.sh's flattener should print, computed from the parsed JSON."""
    out = []
    if isinstance(obj, dict):
        if not obj:
            return [f"{prefix}={{}}"]
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(obj, list):
        if not obj:
            return [f"{prefix}=[]"]
        for i, v in enumerate(obj):
            out += flatten(v, f"{prefix}.{i}")
    else:
        out.append(f"{prefix}={json.dumps(obj) if not isinstance(obj, str) else obj}")
    return out


def unpacked_release(lab: AirgapLab, tmp_path, *, with_images: bool = False):
    """Lock ``lab``, release 1.0.0 and unpack it; the bundle's top directory."""
    from builder.bundle.release import build_release
    lab.write()
    lab.lock()
    bundle = build_release(lab.root, "1.0.0", with_images=with_images, out_dir=tmp_path / "dist",
                           progress=False).bundle
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (top,) = (tmp_path / "unpacked").iterdir()
    return top


@pytest.fixture
def bundle_dir(tmp_path, registry, monkeypatch):
    """An unpacked online bundle of a small lab (no engine needed to build it)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lab = AirgapLab(root=tmp_path / "lab", registry=registry, name=f"sh-{uuid.uuid4().hex[:8]}")
    lab.services = {"web": Service("web", free_port(), secret=True, volume=True),
                    "api": Service("api", free_port(), depends_on=("web",))}
    for svc in lab.services.values():
        lab.push(svc)
    return unpacked_release(lab, tmp_path)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[-1])
def test_script_parses_in_posix_shells(shell, tmp_path):
    path = tmp_path / "install.sh"
    path.write_text(SCRIPT)
    p = subprocess.run([*shell, "-n", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_script_uses_no_bashisms():
    body = "\n".join(l for l in SCRIPT.splitlines() if not l.lstrip().startswith("#"))
    assert not re.search(r"(^|[\s=(])\$'", body, re.M)   # $'...' quoting
    for bashism in ("[[", "local ", "<(", "source ", "declare ", "==="):
        assert bashism not in body, bashism
    assert not re.search(r"^\s*function\s+\w+\s*(\(\))?\s*\{", body, re.M)  # awk's function f(x) is fine


@pytest.mark.parametrize("awk", [["awk"], ["/bin/busybox", "awk"]], ids=["awk", "busybox-awk"])
def test_manifest_flattener_agrees_with_json(bundle_dir, awk):
    if not shutil.which(awk[0]):
        pytest.skip(f"{awk[0]} missing")
    p = subprocess.run([*awk, awk_program('"$1"'), str(bundle_dir / "manifest.json")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert p.stdout.splitlines() == flatten(manifest)
    lines = set(p.stdout.splitlines())
    port = manifest["services"]["web"]["health"]["host_port"]
    assert f"services.web.health.host_port={port}" in lines
    assert "services.api.depends_on.0=web" in lines


def test_secret_parser_agrees_with_python(bundle_dir):
    example = bundle_dir / "secrets.env.example"
    p = subprocess.run(["awk", awk_program("secrets.env.example"), str(example)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    got = {k: (kind, int(n)) for k, kind, n, _ in (l.split() for l in p.stdout.splitlines())}
    assert got == secret_specs(example.read_text()) == {
        "WEB__API_TOKEN": ("token", 24), "WEB__DB_PASSWORD": ("password", 20)}


def test_secret_parser_reads_prefixes_and_skips_supplied_secrets_like_python(tmp_path):
    example = tmp_path / "secrets.env.example"
    example.write_text("# litellm: generate=token length=48 prefix=sk-: admin key (length 5 is not it)\n"
                       "LITELLM__LITELLM_MASTER_KEY=\n\n"
                       "# langfuse: generate=hex length=32 prefix=pk-lf-\nLANGFUSE__PUBLIC=\n\n"
                       "# db: generate=password length=20\nDB__PASSWORD=\n\n"
                       "# cloudflared: supplied by the operator, never generated: Zero Trust\n"
                       "#CLOUDFLARED__TUNNEL_TOKEN=\n")
    p = subprocess.run(["awk", awk_program("secrets.env.example"), str(example)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    got = {k: (kind, int(n), pre) for k, kind, n, pre in (l.split() for l in p.stdout.splitlines())}
    assert got == {"LITELLM__LITELLM_MASTER_KEY": ("token", 48, "sk-"), "LANGFUSE__PUBLIC": ("hex", 32, "pk-lf-"),
                   "DB__PASSWORD": ("password", 20, "-")}
    specs, prefixes = secret_specs(example.read_text()), secret_prefixes(example.read_text())
    assert {k: (kind, n, prefixes.get(k, "-")) for k, (kind, n) in specs.items()} == got


def test_tampered_bundle_is_refused_before_anything_is_touched(bundle_dir, tmp_path):
    compose = bundle_dir / "compose.yaml"
    compose.write_text(compose.read_text() + "# sneaky\n")
    target = tmp_path / "target"
    p = subprocess.run(["dash", str(bundle_dir / "install.sh"), "--dir", str(target)],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert "compose.yaml: FAILED" in p.stderr and "nothing was installed" in p.stderr
    assert not target.exists()


@pytest.mark.parametrize("args, message", [
    ([], "--dir DIR is required"),
    (["--dir"], "--dir needs a value"),
    (["--dir", "x", "--timeout", "soon"], "--timeout must be a number"),
    (["--frobnicate"], "unknown argument: --frobnicate"),
])
def test_usage_errors(args, message, tmp_path):
    path = tmp_path / "install.sh"
    path.write_text(SCRIPT)
    p = subprocess.run(["dash", str(path), *args], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 1 and message in p.stderr


def test_not_a_bundle_directory(tmp_path):
    path = tmp_path / "install.sh"
    path.write_text(SCRIPT)
    p = subprocess.run(["dash", str(path), "--dir", str(tmp_path / "t")], capture_output=True, text=True)
    assert p.returncode == 1 and "is not an unpacked bundle" in p.stderr


def test_delta_bundle_is_refused_naming_labbuild_install(tmp_path, registry, monkeypatch):
    from builder.bundle.release import build_release
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lab = one_service_lab(AirgapLab(root=tmp_path / "lab", registry=registry, name=f"sh-{uuid.uuid4().hex[:8]}"))
    build_release(lab.root, "1.0.0", with_images=True, out_dir=tmp_path / "dist", progress=False)
    lab.services["web"].version = "2"
    lab.push(lab.services["web"])
    lab.write()
    lab.lock()
    delta = build_release(lab.root, "1.1.0", with_images=True, since="1.0.0", out_dir=tmp_path / "dist",
                          progress=False).bundle
    with tarfile.open(delta) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (top,) = (tmp_path / "unpacked").iterdir()
    target = tmp_path / "target"
    p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target)], capture_output=True, text=True)
    assert p.returncode == 1
    assert "delta bundle" in p.stderr and "labbuild install" in p.stderr and "1.0.0" in p.stderr
    assert not target.exists()


def test_a_bundle_that_ships_models_is_refused_naming_labbuild_install(tmp_path, registry, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lab = AirgapLab(root=tmp_path / "lab", registry=registry, name=f"sh-{uuid.uuid4().hex[:8]}")
    model = lab.push_model("tiny", "q4", b"weights")
    lab.services = {"llm": Service("llm", free_port(), volume=True,
                                   models=[{k: v for k, v in model.items() if k != "image"}])}
    lab.push(lab.services["llm"])
    top = unpacked_release(lab, tmp_path, with_images=True)
    target = tmp_path / "target"
    p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target)], capture_output=True, text=True)
    assert p.returncode == 1
    assert f"ships models (llm:{model['name']})" in p.stderr and "labbuild install" in p.stderr
    assert "nothing was installed" in p.stderr and not target.exists()


def _nvidia_here() -> bool:
    from pathlib import Path
    runtimes = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True)
    cdi = [p for d in ("/etc/cdi", "/var/run/cdi") if Path(d).is_dir() for p in Path(d).iterdir()
           if "nvidia" in p.name.lower()]
    return '"nvidia"' in runtimes.stdout or bool(cdi)


def test_gpu_without_the_nvidia_runtime_is_refused_before_anything_is_installed(tmp_path, registry, monkeypatch,
                                                                               docker_engine):
    if _nvidia_here():
        pytest.skip("this host has the NVIDIA runtime: the refusal cannot be shown")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lab = AirgapLab(root=tmp_path / "lab", registry=registry, name=f"sh-{uuid.uuid4().hex[:8]}")
    lab.services = {"llm": Service("llm", free_port(), extra="[resources]\ngpus = 1\n")}
    lab.push(lab.services["llm"])
    top = unpacked_release(lab, tmp_path)
    assert (top / "compose.gpu.yaml").is_file()
    target = tmp_path / "target"
    p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target), "--gpu", "--no-start"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no nvidia runtime" in p.stderr and "--no-gpu" in p.stderr
    assert "nothing was installed" in p.stderr and not (target / "releases").exists()
    # neither flag keeps what the install has: a wrapper that turned GPUs on keeps them on (and is refused here)
    from builder.host.compose import render_wrapper
    target.mkdir()
    (target / "compose.yaml").write_text(render_wrapper(lab.name, "releases/0.9.0", True))
    p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target), "--no-start"], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "no nvidia runtime" in p.stderr
    p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target), "--no-gpu", "--no-start"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (target / "compose.yaml").read_text() == render_wrapper(lab.name, "releases/1.0.0", False)


def test_gpu_on_a_bundle_without_gpu_services_warns_and_writes_labbuilds_wrapper(bundle_dir, tmp_path,
                                                                                 docker_engine):
    from builder.host.compose import render_wrapper
    target = tmp_path / "target"
    p = subprocess.run(["dash", str(bundle_dir / "install.sh"), "--dir", str(target), "--gpu", "--no-start"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "no service of this bundle reserves a GPU" in p.stderr
    lab = json.loads((bundle_dir / "manifest.json").read_text())["lab"]
    assert (target / "compose.yaml").read_text() == render_wrapper(lab, "releases/1.0.0", False)


def test_images_that_do_not_fit_on_the_engines_disk_are_refused_before_anything_is_installed(
        tmp_path, registry, monkeypatch, docker_engine):
    """install.sh checks disk as doctor does: image blobs x2 against the free space of the engine's root.
    The bundle is edited to claim a 1 PB layer (its SHA256SUMS line follows), so the real df answers no."""
    import hashlib
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lab = one_service_lab(AirgapLab(root=tmp_path / "lab", registry=registry, name=f"sh-{uuid.uuid4().hex[:8]}"))
    top = unpacked_release(lab, tmp_path, with_images=True)
    manifest = json.loads((top / "manifest.json").read_text())
    blobs = sorted(n for n in manifest["files"] if n.startswith("images/blobs/"))
    manifest["files"][blobs[-1]]["size"] = 10 ** 15
    (top / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    digest = hashlib.sha256((top / "manifest.json").read_bytes()).hexdigest()
    sums = [f"{digest}  manifest.json" if line.endswith("  manifest.json") else line
            for line in (top / "SHA256SUMS").read_text().splitlines()]
    (top / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    target = tmp_path / "target"
    p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target), "--no-start"],
                       capture_output=True, text=True, env={**os.environ, "PATH": path_with_venv()})
    assert p.returncode == 1, p.stderr
    root = docker_engine.info()["DockerRootDir"]
    free_mib = shutil.disk_usage(root).free >> 20
    need_mib = round(sum(manifest["files"][n]["size"] for n in blobs) * 2 / 1024) // 1024
    assert f"nothing was installed): disk: {need_mib} MiB needed for the images (x2 unpacked)" in p.stderr
    assert f"MiB free on {root}" in p.stderr and "docker system prune" in p.stderr
    said_free = int(p.stderr.split(" MiB free on")[0].rsplit(", ", 1)[1])
    assert abs(said_free - free_mib) < 1024
    assert not target.exists()


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[-1])
def test_a_changed_file_with_a_recomputed_sums_line_is_refused(bundle_dir, tmp_path, shell):
    """SHA256SUMS is signed by nothing: a file changed together with its SHA256SUMS line still
    disagrees with manifest.json (which --key's signature covers), and install.sh refuses it."""
    import hashlib
    compose = bundle_dir / "compose.yaml"
    compose.write_text(compose.read_text() + "# sneaky\n")
    sums = bundle_dir / "SHA256SUMS"
    new = hashlib.sha256(compose.read_bytes()).hexdigest()
    sums.write_text("".join(f"{new}  compose.yaml\n" if line.endswith("  compose.yaml") else line + "\n"
                            for line in sums.read_text().splitlines()))
    target = tmp_path / "target"
    p = subprocess.run([*shell, str(bundle_dir / "install.sh"), "--dir", str(target)], capture_output=True, text=True)
    assert p.returncode == 1, p.stderr
    assert "SHA256SUMS does not agree with manifest.json on compose.yaml: nothing was installed" in p.stderr
    assert not target.exists()
