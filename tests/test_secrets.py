"""Secrets after install (issue 24): rotation decisions from blueprint to manifest.json, the
audit log, `labbuild secrets list` and what is due — the parts that need no engine
(tests/e2e/test_secrets_e2e.py rotates on the real one)."""

from __future__ import annotations

import pytest
from test_inputs import PROFILES, TUNNEL
from test_render import SERVICES, make_lab, release_input

from builder.errors import BundleError
from builder.format.manifest import Manifest, ManifestRotation

DECIDED_WEB = SERVICES["web"].replace('''
        [secrets.API_TOKEN]
        generate = "token"
        length = 40
''', '''
        [secrets.API_TOKEN]
        generate = "token"
        length = 40
        rotate = true
        rotate_days = 30
        [secrets.API_TOKEN.holder]
        exec = ["sh", "-c", "printf %s \\"$LAB_SECRET_NEW\\" > /data/token"]
        [secrets.DATA_KEY]
        generate = "hex"
        rotate = false
        rotate_reason = "the data volume is encrypted with it"
''')
assert "rotate_days" in DECIDED_WEB


def _services(tmp_path, **overrides):
    from builder.bundle.pack import manifest_services

    root = make_lab(tmp_path / "lab", services={"tunnel": TUNNEL}, profiles=PROFILES, **overrides)
    return manifest_services(release_input(root))


def _manifest(services) -> Manifest:
    return Manifest(lab="lab", name="lab-full-1.0.0", version="1.0.0", profile="full", inputs="i", labbuild="t",
                    offline=False, platforms=("linux/amd64",), services=services, files={})


# --------------------------------------------------------------------------- the bundle

def test_manifest_carries_decisions_only_for_decided_secrets(tmp_path):
    undecided = _manifest(_services(tmp_path / "a"))
    assert all(s.rotation == {} for s in undecided.services.values())
    assert all("rotation" not in s for s in undecided.to_json()["services"].values())   # old bundles keep their bytes

    decided = _manifest(_services(tmp_path / "b", web=DECIDED_WEB))
    web = decided.to_json()["services"]["web"]
    assert web["rotation"] == {
        "WEB__API_TOKEN": {"rotate": True, "days": 30,
                           "holder": ["sh", "-c", 'printf %s "$LAB_SECRET_NEW" > /data/token']},
        "WEB__DATA_KEY": {"rotate": False, "reason": "the data volume is encrypted with it"}}
    assert Manifest.loads(decided.dumps()) == decided
    assert decided.services["web"].rotation["WEB__DATA_KEY"] == ManifestRotation(
        rotate=False, reason="the data volume is encrypted with it")


@pytest.mark.parametrize("rotation, message", [
    ({"OTHER__KEY": {"rotate": True}}, "'OTHER__KEY' is not a secret of web"),
    ({"WEB__API_TOKEN": {"rotate": False}}, "a reason goes only with rotate false"),
    ({"WEB__API_TOKEN": {"rotate": True, "days": 0}}, "days: 0 is out of range"),
    ({"WEB__API_TOKEN": {"rotate": "yes"}}, "rotate: expected bool"),
    ({"WEB__API_TOKEN": {"rotate": True, "holder": "sh -c x"}}, "holder is not a list"),
])
def test_the_manifest_reader_refuses_what_validate_refuses(tmp_path, rotation, message):
    data = _manifest(_services(tmp_path)).to_json()
    data["services"]["web"]["rotation"] = rotation
    with pytest.raises(BundleError, match=r"services\.web") as exc:
        Manifest.from_json(data)
    assert message in exc.value.message
