"""`labbuild outdated` and `lock --update --to/--latest/--split` against a real registry
holding several tags per repository, reached through the fault proxy (which pages tag
lists as Docker Hub does, counts requests, and can demand bearer tokens)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.cli import main
from builder.lockfile import read_lock
from support import oci
from support.dockerenv import require_tool
from support.faultproxy import FaultProxy
from support.registry import free_port, start_registry
from support.tokenserver import TokenServer

REPOS = {
    "lab/app": ["1.15.0", "1.15.1", "1.16.0", "1.17.2", "1.17.3-rc.1", "2.0.0", "latest", "1.17.2-slim",
                "sha256-" + "a" * 64 + ".sig"],
    "lab/daemon": ["0.6.0-local", "0.6.3-local", "0.6.3-serverless", "0.7.0-rc1-local"],
    "lab/db": ["17.2", "17.9", "18.1", "17.9-alpine"],
    "lab/ch": ["25.3", "25.4", "25.8", "25.10", "26.3"],
    "lab/fresh": ["3.1.4", "3.1.4-rc.1"],
    "lab/same": ["1.0.0"],
}


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """A registry with the tags of REPOS (each tag its own image) and a model; ``lab/same:1.0.0``
    was re-pushed, so ``same_old`` is the digest it had before."""
    require_tool("docker-registry")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    digests: dict[tuple[str, str], str] = {}
    with reg.client() as c:
        for repo, tags in REPOS.items():
            for tag in tags:
                digests[(repo, tag)] = oci.push_image(c, repo, tag, oci.make_image([{"v": f"{repo}:{tag}".encode()}]))
        same_old = digests[("lab/same", "1.0.0")]
        digests[("lab/same", "1.0.0")] = oci.push_image(c, "lab/same", "1.0.0", oci.make_image([{"v": b"rebuilt"}]))
        model = oci.ollama_model(b"tiny weights")
        digests[("library/tiny", "v1")] = oci.push_image(c, "library/tiny", "v1", model)
    yield SimpleNamespace(reg=reg, digests=digests, same_old=same_old)
    reg.stop()


@pytest.fixture
def proxy(tagged):
    p = FaultProxy(tagged.reg.host, page_tags=3)
    yield p
    p.close()


def blueprint(name: str, image: str, tag: str, digest: str, extra: str = "", models: str = "") -> str:
    return (f"# {name}: a test service\n[service]\nname = \"{name}\"\ndescription = \"test {name}\"\n"
            f"phase = 0\ncategory = \"app\"\n\n# the pin\n[image]\nname = \"{image}\"  # where it lives\n"
            f"tag = \"{tag}\"    # the version tested\n# moved by `labbuild lock --update`\n"
            f"digest = \"{digest}\"\n{extra}\n[env]\nMODE = \"test\"   # keep me\n" + models)


def make_lab(root: Path, host: str, digests: dict, same_old: str, pins: dict[str, str] | None = None) -> Path:
    """app + daemon (group dify), db (Postgres-like track), ch (LTS track), same (re-pushed), fresh (+ a model)."""
    pins = {"app": "1.15.0", "daemon": "0.6.0-local", "db": "17.2", "ch": "25.3", "fresh": "3.1.4",
            "same": "1.0.0", **(pins or {})}
    extras = {"app": 'group = "dify"\n', "daemon": 'group = "dify"\n',
              "db": "track = '^17\\.(\\d+)$'   # a major needs a dump and restore\n",
              "ch": "track = '^(\\d+)\\.(3|8)$'\n"}
    model = (f'\n[[volumes]]\nname = "data"\ntarget = "/data"\n\n[[models]]\nname = "{host}/library/tiny"\n'
             f'tag = "v1"\ndigest = "{digests[("library/tiny", "v1")]}"\nformat = "ollama"\nvolume = "data"\n'
             'path = "models"\n')
    (root / "blueprints" / "services").mkdir(parents=True, exist_ok=True)
    (root / "blueprints" / "lab.toml").write_text(
        '[lab]\nname = "test-lab"\ndefault_profile = "all"\nplatforms = ["linux/amd64"]\n\n'
        f'[profiles.all]\nservices = {json.dumps(sorted(pins))}\n')
    for name, tag in pins.items():
        repo = "lab/ch" if name == "ch" else f"lab/{name}"
        digest = same_old if name == "same" else digests[(repo, tag)]
        text = blueprint(name, f"{host}/{repo}", tag, digest, extras.get(name, ""), model if name == "fresh" else "")
        (root / "blueprints" / "services" / f"{name}.toml").write_text(text)
    return root


@pytest.fixture
def lab(tmp_path, tagged, proxy):
    return make_lab(tmp_path / "lab", proxy.host, tagged.digests, tagged.same_old)


def run(root: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["--root", str(root), *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def outdated_json(root: Path, *args: str, capsys) -> tuple[int, dict]:
    code, out, _ = run(root, "outdated", "--json", *args, capsys=capsys)
    return code, json.loads(out)


# --------------------------------------------------------------------------- outdated

def test_candidates_follow_track_and_suffix_ignoring_pre_releases_and_latest(lab, tagged, proxy, capsys):
    code, data = outdated_json(lab, capsys=capsys)
    assert code == 1 and data["ok"] is False
    s = data["services"]
    assert s["app"]["newest"] == {"tag": "1.17.2", "digest": tagged.digests[("lab/app", "1.17.2")], "step": "minor"}
    assert s["app"]["held_major"] == "2.0.0" and s["app"]["track"] == r"^(\d+)\.(\d+)\.(\d+)$"
    assert s["daemon"]["newest"]["tag"] == "0.6.3-local" and s["daemon"]["newest"]["step"] == "patch"
    assert s["db"]["newest"]["tag"] == "17.9" and s["db"]["track_declared"] is True
    assert (s["ch"]["newest"]["tag"], s["ch"]["held_major"]) == ("25.8", "26.3")
    assert s["same"]["newest"] == {"tag": "1.0.0", "digest": tagged.digests[("lab/same", "1.0.0")], "step": "digest"}
    assert s["fresh"]["status"] == "current" and s["fresh"]["newest"]["step"] is None
    assert s["fresh"]["models"][0]["status"] == "current"
    assert data["behind"] == ["app", "ch", "daemon", "db", "same"] and data["unreachable"] == {}


def test_major_offers_major_steps_but_a_track_still_holds_a_database_major(lab, capsys):
    code, data = outdated_json(lab, "--major", capsys=capsys)
    s = data["services"]
    assert (s["app"]["newest"]["tag"], s["app"]["newest"]["step"]) == ("2.0.0", "major")
    assert s["ch"]["newest"]["tag"] == "26.3"
    assert s["db"]["newest"]["tag"] == "17.9"          # 18.1 is off the track


def test_a_groups_members_are_reported_together(lab, capsys):
    code, data = outdated_json(lab, "daemon", capsys=capsys)
    assert code == 1 and sorted(data["services"]) == ["app", "daemon"]
    assert data["groups"] == {"dify": {"services": ["app", "daemon"], "status": "behind",
                                       "command": "labbuild lock --update --latest app daemon"}}
    code, out, _ = run(lab, "outdated", capsys=capsys)
    lines = out.splitlines()
    assert lines[0] == "group dify (behind; its pins move together)"
    assert lines[1].startswith("  app ") and "-> 1.17.2 (minor, sha256:" in lines[1] and "[2.0.0: major" in lines[1]
    assert lines[2].startswith("  daemon ") and "-> 0.6.3-local (patch" in lines[2]
    assert lines[3] == "  -> labbuild lock --update --latest app daemon"
    assert lines[-1] == "5 of 6 service(s) behind (major steps only with --major)"


def test_current_pins_exit_0(tmp_path, tagged, proxy, capsys):
    root = make_lab(tmp_path / "lab", proxy.host, tagged.digests, tagged.digests[("lab/same", "1.0.0")],
                    {"app": "1.17.2", "daemon": "0.6.3-local", "db": "17.9", "ch": "25.8"})
    code, data = outdated_json(root, capsys=capsys)
    assert (code, data["ok"], data["behind"], data["unknown"]) == (0, True, [], [])
    code, out, _ = run(root, "outdated", capsys=capsys)
    assert code == 0 and "0 of 6 service(s) behind" in out


def test_tags_are_listed_page_by_page_and_only_chosen_tags_are_asked_for_digests(lab, proxy, capsys):
    outdated_json(lab, capsys=capsys)
    pages = {repo: -(-len(tags) // 3) for repo, tags in REPOS.items()}
    for repo, n in pages.items():
        assert proxy.count("GET", f"/v2/{repo}/tags/list") == n, repo
    assert proxy.count("GET", "/tags/list") == sum(pages.values())
    # one HEAD per chosen tag (6 repositories) and one for the model's tag; no manifest GET, no blob
    assert proxy.count("HEAD", "/manifests/") == 7
    assert proxy.count() == sum(pages.values()) + 7


def test_a_token_auth_registry(tmp_path, tagged, capsys):
    tokens = TokenServer()
    gate = FaultProxy(tagged.reg.host, bearer=tokens, page_tags=2)
    try:
        root = make_lab(tmp_path / "lab", gate.host, tagged.digests, tagged.same_old)
        code, data = outdated_json(root, capsys=capsys)
        assert code == 1 and data["services"]["app"]["newest"]["tag"] == "1.17.2"
        assert data["unknown"] == [] and tokens.issued == 7     # one token per repository scope
    finally:
        gate.close()
        tokens.close()


def test_an_unreachable_registry_is_named_not_fatal(tmp_path, tagged, proxy, capsys):
    root = make_lab(tmp_path / "lab", proxy.host, tagged.digests, tagged.same_old)
    dead = f"127.0.0.1:{free_port()}"
    path = root / "blueprints" / "services" / "fresh.toml"
    path.write_text(path.read_text().replace(proxy.host + "/lab/fresh", dead + "/lab/fresh"))
    code, data = outdated_json(root, capsys=capsys)
    assert code == 1 and list(data["unreachable"]) == [dead]
    assert data["services"]["fresh"]["status"] == "unknown" and data["unknown"] == ["fresh"]
    assert data["services"]["app"]["status"] == "behind"
    code, out, _ = run(root, "outdated", "fresh", capsys=capsys)
    assert code == 0 and f"unknown ({dead} unreachable)" in out
    assert f"unreachable: {dead} (1 service(s) not checked)" in out


def test_usage_errors_exit_2(lab, capsys):
    code, out, err = run(lab, "outdated", "nope", capsys=capsys)
    assert code == 2 and "unknown service(s): nope" in err and "known services: app, ch" in err
    code, out, _ = run(lab, "--json", "outdated", "nope", capsys=capsys)
    assert code == 2 and json.loads(out)["ok"] is False
    assert run(lab, "outdated", "--bogus", capsys=capsys)[0] == 2


# --------------------------------------------------------------------------- lock --update --to / --latest

def snapshot(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((root / "blueprints" / "services").glob("*.toml"))}


def test_moving_one_member_of_a_group_is_refused_naming_the_group(lab, proxy, capsys):
    before = snapshot(lab)
    code, out, err = run(lab, "lock", "--update", "--to", "1.17.2", "app", capsys=capsys)
    assert code == 1
    assert "app.toml:" in err and "image.group: service 'app': it is in group 'dify' with daemon" in err
    assert "--split" in err and snapshot(lab) == before and proxy.count() == 0
    assert not (lab / "lockfiles" / "lab.lock.json").exists()


def test_split_moves_one_member_alone(lab, tagged, capsys):
    code, out, err = run(lab, "lock", "--update", "--to", "1.16.0", "--split", "app", capsys=capsys)
    assert code == 0, err
    assert 'tag = "1.16.0"    # the version tested' in (lab / "blueprints/services/app.toml").read_text()
    assert read_lock(lab / "lockfiles/lab.lock.json").services["app"].reference.endswith("lab/app:1.16.0")


def test_to_moves_the_whole_group_and_keeps_every_other_byte(lab, tagged, capsys):
    before = snapshot(lab)
    code, out, err = run(lab, "--json", "lock", "--update", "--to", "1.17.2", "--to", "0.6.3-local", "app", "daemon",
                         capsys=capsys)
    assert code == 0, err
    after = snapshot(lab)
    for name, tag, repo in (("app.toml", "1.17.2", "lab/app"), ("daemon.toml", "0.6.3-local", "lab/daemon")):
        old_tag = "1.15.0" if name == "app.toml" else "0.6.0-local"
        old_digest = tagged.digests[(repo, old_tag)]
        assert after[name] == before[name].replace(f'tag = "{old_tag}"', f'tag = "{tag}"').replace(
            old_digest, tagged.digests[(repo, tag)])
    assert {n: t for n, t in after.items() if n not in ("app.toml", "daemon.toml")} == \
        {n: t for n, t in before.items() if n not in ("app.toml", "daemon.toml")}
    data = json.loads(out)
    assert data["pins"]["app"]["tag"] == "1.17.2" and data["pins"]["daemon"]["tag"] == "0.6.3-local"
    lock = read_lock(lab / "lockfiles/lab.lock.json")
    assert lock.services["daemon"].digest == tagged.digests[("lab/daemon", "0.6.3-local")]
    assert run(lab, "lock", "--check", capsys=capsys)[0] == 0


def test_latest_moves_to_the_newest_on_each_track(lab, tagged, capsys):
    code, out, err = run(lab, "lock", "--update", "--latest", "app", "daemon", "db", capsys=capsys)
    assert code == 0, err
    tags = {n: read_lock(lab / "lockfiles/lab.lock.json").services[n].tag for n in ("app", "daemon", "db")}
    assert tags == {"app": "1.17.2", "daemon": "0.6.3-local", "db": "17.9"}
    code, out, err = run(lab, "lock", "--update", "--latest", "--major", "app", "daemon", capsys=capsys)
    assert code == 0 and read_lock(lab / "lockfiles/lab.lock.json").services["app"].tag == "2.0.0"


def test_a_to_tag_off_the_track_is_refused(lab, proxy, capsys):
    before = snapshot(lab)
    code, out, err = run(lab, "lock", "--update", "--to", "18.1", "db", capsys=capsys)
    assert code == 1 and "db.toml:" in err and "none of 18.1 is on its track '^17\\.(\\d+)$'" in err
    assert "edit [image] tag (and track) by hand" in err and snapshot(lab) == before and proxy.count() == 0


@pytest.mark.parametrize("args", [
    ["--to", "1.17.2", "app"],                       # no --update
    ["--update", "--to", "1.17.2"],                  # no SERVICE
    ["--update", "--to", "1.17.2", "--latest", "app"],
    ["--update", "--split", "app"],
    ["--update", "--major", "app"],
    ["--update", "--to", "latest", "app"],
])
def test_lock_move_usage_errors_exit_2(lab, args, capsys):
    assert run(lab, "lock", *args, capsys=capsys)[0] == 2
