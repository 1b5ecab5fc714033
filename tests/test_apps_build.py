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
