"""tests/apps/build.py: what goes into a recipe's build context."""

from __future__ import annotations

import tarfile

from apps.build import _context
from apps.recipe import RECIPES


def test_a_recipe_that_downloads_gets_the_host_ca_bundle_in_its_context_but_not_in_its_hash(tmp_path, monkeypatch):
    recipe = next(r for r in RECIPES if r.registries)
    bundle = tmp_path / "ca.pem"
    hashes = []
    for pem in (b"first CA\n", b"second CA\n"):
        bundle.write_bytes(pem)
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        with tarfile.open(fileobj=_context(recipe)) as tar:
            assert tar.extractfile("host/ca-certificates.crt").read() == pem
        hashes.append(recipe.hash("base"))
    assert hashes[0] == hashes[1]
    plain = next(r for r in RECIPES if not r.registries)
    with tarfile.open(fileobj=_context(plain)) as tar:
        assert "host/ca-certificates.crt" not in tar.getnames()


def test_a_host_file_is_in_the_context_and_the_hash_and_its_absence_is_named(tmp_path):
    import dataclasses
    recipe = next(r for r in RECIPES if r.host_files)          # open-webui: the CPU torch wheel of /opt/wheels
    ((name, path),) = recipe.host_files
    assert name.startswith("wheels/torch-") and path.startswith("/opt/wheels/")
    wheel = tmp_path / "torch.whl"
    hashes = []
    for content in (b"one build\n", b"another build\n"):
        wheel.write_bytes(content)
        local = dataclasses.replace(recipe, host_files=((name, str(wheel)),))
        assert local.missing() == ""
        with tarfile.open(fileobj=_context(local)) as tar:
            assert tar.extractfile(name).read() == content
        hashes.append(local.hash("base"))
    assert hashes[0] != hashes[1]                              # its bytes are part of the recipe
    absent = dataclasses.replace(recipe, host_files=((name, str(tmp_path / "nowhere.whl")),))
    assert absent.missing().startswith(f"{tmp_path / 'nowhere.whl'} not on this machine")
