"""tests/apps/testlab.py: a test lab is the shipped blueprints with only [image] replaced."""

from __future__ import annotations

import json

import pytest

from apps.recipe import RECIPES, application
from apps.testlab import IMAGE_KEYS, make_test_lab, split_reference, substitute_image
from builder.blueprint import load_lab

DIGEST = "sha256:" + "ab" * 32
REFS = {
    "litellm-db": f"127.0.0.1:5999/labbuild-apps/postgres:0123456789abcdef0123@{DIGEST}",
    "langfuse-redis": f"127.0.0.1:5999/labbuild-apps/redis:fedcba9876543210fedc@{DIGEST}",
    "prometheus": f"localhost:5000/labbuild-apps/prometheus:1a2b@{DIGEST}",
}


def test_every_byte_of_a_test_lab_blueprint_but_the_image_is_the_shipped_one(tmp_path, repo_root):
    root = make_test_lab(tmp_path / "lab", REFS, lab_name="apps-check")
    shipped = sorted((repo_root / "blueprints" / "services").glob("*.toml"))
    made = sorted((root / "blueprints" / "services").glob("*.toml"))
    assert [p.name for p in made] == [p.name for p in shipped]
    for path in shipped:
        want = path.read_bytes()
        got = (root / "blueprints" / "services" / path.name).read_bytes()
        if path.stem not in REFS:
            assert got == want, path.name
            continue
        old = load_lab(repo_root).services[path.stem].image
        new = split_reference(REFS[path.stem])
        assert got != want
        restored = got.decode()
        for key in IMAGE_KEYS:    # put the shipped values back: what remains must be the shipped bytes
            line = f'{key} = "{new[key]}"\n'
            assert restored.count(line) == 1, (path.name, key)
            restored = restored.replace(line, f'{key} = "{getattr(old, key)}"\n')
        # the [image] track (an upstream tag policy) goes with the upstream tag; nothing else differs
        want = b"".join(line for line in want.splitlines(keepends=True) if not line.startswith(b"track = "))
        assert restored.encode() == want, path.name
    assert (root / "lockfiles" / "lab.lock.json").read_bytes() == (repo_root / "lockfiles" / "lab.lock.json").read_bytes()


def test_a_test_lab_loads_with_the_substituted_images_its_own_name_and_a_narrow_profile(tmp_path, repo_root):
    root = make_test_lab(tmp_path / "lab", {"litellm-db": REFS["litellm-db"]}, lab_name="apps-check",
                         profile=("apps-test", ["litellm-db"]))
    lab = load_lab(root)
    assert lab.name == "apps-check"
    assert list(lab.profile_closure("apps-test")) == ["litellm-db"]
    image = lab.services["litellm-db"].image
    assert (image.name, image.tag, image.digest) == ("127.0.0.1:5999/labbuild-apps/postgres",
                                                     "0123456789abcdef0123", DIGEST)
    shipped = load_lab(repo_root)
    assert set(lab.profiles) == set(shipped.profiles) | {"apps-test"}
    for name in shipped.profiles:
        assert lab.profile_closure(name) == shipped.profile_closure(name)


def test_substituting_keeps_comments_and_layout_of_the_image_table():
    text = ('[service]\nname = "x"\n\n# the pin\n[image]\n  name = "docker.io/library/postgres"   # upstream\n'
            'tag = "17.9"\ndigest = "sha256:' + "0" * 64 + '"\n\n[[ports]]\nname = "p"\n')
    got = substitute_image(text, REFS["litellm-db"])
    assert got == text.replace("docker.io/library/postgres", "127.0.0.1:5999/labbuild-apps/postgres") \
        .replace('"17.9"', '"0123456789abcdef0123"').replace("sha256:" + "0" * 64, DIGEST)


@pytest.mark.parametrize("ref", ["127.0.0.1:5000/a/b@" + DIGEST, "127.0.0.1:5000/a/b:1", "b:1@md5:x"])
def test_a_reference_without_tag_or_digest_is_refused(ref):
    with pytest.raises(ValueError, match="not a reference"):
        split_reference(ref)


def test_every_recipe_serves_shipped_services_and_every_other_application_says_why_it_has_none(repo_root):
    from apps.images import catalog_images
    from apps.recipe import NO_RECIPE
    images = catalog_images(repo_root)
    pinned = {application(repo) for repo in images.values()}
    for recipe in RECIPES:
        assert recipe.upstream in images.values(), recipe.name
        assert (recipe.directory / "Dockerfile").is_file()
        upstream_repo = recipe.dockerfile.removeprefix("https://github.com/").split("/blob/")[0]
        assert upstream_repo in (recipe.directory / "Dockerfile").read_text(), recipe.name   # cited there
    assert pinned - {r.name for r in RECIPES} == set(NO_RECIPE), json.dumps(sorted(pinned))
