"""The real-application tests push each image once: ``apps.build.push_image`` keeps what a push wrote
into a test registry's storage and hard-links it into the next test registry, which then serves it
exactly as if it had been pushed (manifest by tag and by digest, every blob with its digest), with
no ``docker push`` -- which compresses every layer again, minutes for the larger applications.
Real registries (Distribution) and the real engine; the tests/apps redis image (small)."""

from __future__ import annotations

import hashlib

import httpx
import pytest

import apps.build as build
from apps.build import push_image, recipe_image
from labkit import path_with_venv
from support.dockerenv import require_tool
from support.registry import start_registry

pytestmark = [pytest.mark.docker]

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def test_an_image_pushed_once_is_served_by_the_next_registry_without_a_push(docker_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", path_with_venv() + ":/usr/sbin:/sbin")
    require_tool("debootstrap")
    require_tool("docker-registry")
    monkeypatch.setattr(build, "PUSHED", tmp_path / "pushed")
    built = recipe_image(docker_engine, "redis")
    repo, tag = built.ref.rsplit(":", 1)

    first = start_registry(tmp_path / "r1")
    try:
        ref1 = push_image(docker_engine, built, first.host, first.storage)       # a real push, kept
    finally:
        first.stop()

    def no_push(*args, **kwargs):
        raise AssertionError("docker push was called: the kept push was not used")

    monkeypatch.setattr(docker_engine.api, "push", no_push)
    second = start_registry(tmp_path / "r2")
    try:
        ref2 = push_image(docker_engine, built, second.host, second.storage)
        digest = ref2.rsplit("@", 1)[1]
        assert ref2 == f"{second.host}/{repo}:{tag}@{digest}" and digest == ref1.rsplit("@", 1)[1]
        base = f"http://{second.host}/v2/{repo}"
        by_tag = httpx.get(f"{base}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=10)
        assert by_tag.status_code == 200 and "sha256:" + hashlib.sha256(by_tag.content).hexdigest() == digest
        assert httpx.head(f"{base}/manifests/{digest}", headers={"Accept": ACCEPT}, timeout=10).status_code == 200
        manifest = by_tag.json()
        for blob in [manifest["config"], *manifest["layers"]]:
            got = httpx.get(f"{base}/blobs/{blob['digest']}", timeout=60, follow_redirects=True)
            assert got.status_code == 200 and len(got.content) == blob["size"]
            assert "sha256:" + hashlib.sha256(got.content).hexdigest() == blob["digest"]
        # another repository of that registry is not served by it
        assert httpx.get(f"http://{second.host}/v2/labbuild-apps/postgres/manifests/{tag}",
                         headers={"Accept": ACCEPT}, timeout=10).status_code == 404
    finally:
        second.stop()
