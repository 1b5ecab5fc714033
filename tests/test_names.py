"""builder.names: one grammar per identifier, matched in full, shared by the schema,
the loaders and install.sh."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from builder import names
from builder.blueprint import blueprint_schema

INSTALL_SH = Path(__file__).resolve().parents[1] / "builder" / "templates" / "install.sh"

SAMPLES = {
    "service": (["ab", "open-webui", "n8n", "a1-b2"], ["a", "ab-", "-ab", "zz--q", "Ab", "a_b", "ab\n", "a" * 42]),
    "profile": (["base", "phase1", "x-y"], ["x\n---\nservices: []", "../../../escaped", "Phase1", "a--b", ""]),
    "version": (["0.1.0", "1.2.3-rc.1", "1.0.0+build.5", "10.20.30-alpha.beta"],
                ["1.0.0\n", "01.0.0", "1.0", "0/../../../../X", "1.0.0-", "v1.0.0"]),
    "tag": (["v1.12.4", "3.7.13", "lab-4.6.3"], ["v1\n", "", ".hidden", "a b"]),
    "digest": (["sha256:" + "0" * 64], ["sha256:" + "0" * 64 + "\n", "sha256:" + "A" * 64, "md5:00"]),
    "env_key": (["QDRANT__SERVICE__API_KEY", "_X", "a.b"], ["KEY\n", "1KEY", "A-B", ""]),
    "file_name": (["web.conf", "a_b-c.1"], ["a/b", "..", ".hidden", "x\n"]),
    "container_path": (["/data", "/var/lib/postgresql/data"], ["/data:ro", "data", "/a\nb"]),
    "line": (["Where to get it: Zero Trust > Tunnels"], ["a\nb", "tab\there"]),
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_grammars_match_in_full(kind):
    good, bad = SAMPLES[kind]
    assert [v for v in good if not names.is_valid(kind, v)] == []
    assert [v for v in bad if names.is_valid(kind, v)] == []
    assert names.problem(kind, bad[0]) and names.problem(kind, good[0]) is None


def test_the_grammars_are_the_schema_s_defs():
    defs = blueprint_schema()["$defs"]
    for kind, key in names.KINDS.items():
        assert names.grammar(kind)[0].pattern == defs[key]["pattern"]


def test_schema_patterns_end_like_ecma_262():
    assert re.search(names.pattern_fullmatch("^a$"), "a") and not re.search(names.pattern_fullmatch("^a$"), "a\n")
    assert names.pattern_fullmatch("^/") == "^/" and names.pattern_fullmatch("^a\\$") == "^a\\$"


def test_inside_refuses_paths_leaving_the_root(tmp_path):
    assert names.inside(tmp_path, "a", "b.json") == (tmp_path / "a" / "b.json").resolve()
    for bad in ("../x", "a/../../x", "/etc/passwd"):
        with pytest.raises(ValueError):
            names.inside(tmp_path, bad)


def _sh_grammar(name: str) -> str:
    m = re.search(rf"^{name}='([^']*)'$", INSTALL_SH.read_text(), re.M)
    assert m, f"{name} is not in install.sh"
    return m[1]


@pytest.mark.parametrize("kind,variables", [("service", ("GRAMMAR_NAME", "GRAMMAR_SERVICE_LENGTH")),
                                            ("lab", ("GRAMMAR_NAME", "GRAMMAR_LAB_LENGTH")),
                                            ("version", ("GRAMMAR_VERSION", "GRAMMAR_VERSION"))])
def test_install_sh_checks_the_same_grammars_under_dash(kind, variables, tmp_path):
    """install.sh cannot read the schema: its EREs, run as install.sh runs them, must agree with names.py."""
    pattern, length = (_sh_grammar(v) for v in variables)
    values = [v for pair in SAMPLES.get(kind, SAMPLES["service"]) for v in pair] + ["abc\ndef", "x y", "a" * 50]
    script = ("valid() { case \"$2\" in *\"\n\"*) return 1 ;; esac; printf '%s\\n' \"$2\" | grep -Eqx -- \"$1\"; }\n"
              'for v in "$@"; do if valid "$P" "$v" && valid "$L" "$v"; then echo 1; else echo 0; fi; done')
    out = subprocess.run(["dash", "-c", script, "sh", *values], capture_output=True, text=True,
                         env={"P": pattern, "L": length, "PATH": "/usr/bin:/bin"}, check=True).stdout.split()
    expected = ["1" if names.is_valid(kind, v) else "0" for v in values]
    assert out == expected, list(zip(values, out, expected))


def test_the_template_hook_checks_the_same_service_grammar():
    """Plain cookiecutter users have no labbuild: the hook's own regexes must agree with names.py."""
    import importlib.util
    hook = Path(__file__).resolve().parents[1] / "cookiecutter-service" / "hooks" / "pre_gen_project.py"
    spec = importlib.util.spec_from_file_location("pre_gen_hook", hook)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for kind, regex in (("service", module.NAME_RE), ("tag", module.TAG_RE), ("digest", module.DIGEST_RE)):
        for value in [v for pair in SAMPLES[kind] for v in pair]:
            assert (regex.fullmatch(value) is not None) == names.is_valid(kind, value), (kind, value)


@given(port=st.integers(-5, 200_000))
def test_a_registry_port_is_what_a_port_number_is(port):
    """The port inside registry hosts (a regex) and port_number (an integer range) are one range: 1-65535."""
    assert names.is_valid("registry", f"reg.lan:{port}") == names.is_port(port) == (1 <= port <= 65535)
    assert names.is_valid("repository", f"10.0.0.1:{port}/a/b") == names.is_port(port)


def test_repositories_are_a_registry_host_then_a_path():
    """One registry-host grammar: the schema's repository pattern starts with registry_host's, letter for letter."""
    host, repository = names.grammar("registry")[0].pattern, names.grammar("repository")[0].pattern
    assert repository.startswith(host.removesuffix("$") + "/")
    for bad, said in (("[::1]:5000", "is an IPv6 address"), ("reg.lan:65536", "port 65536 is out of range"),
                      ("qdrant", "is not a registry host")):
        assert said in names.registry_problem(bad)
        assert said.replace("is not a registry host", "is not fully qualified") in names.repository_problem(
            bad + "/a/b")
    for odd in ("reg.lan:²", "reg.lan:" + "9" * 5000, "", "[", "/", None, 5000):    # said, never raised
        assert isinstance(names.registry_problem(odd), str) and isinstance(names.repository_problem(odd), str)
