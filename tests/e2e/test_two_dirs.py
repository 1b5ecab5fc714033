"""One lab, two install dirs (hardening round two, class 4): the compose project is the lab's
name, so a second `install --dir` would take over the first DIR's containers. Refused, naming
the first DIR, with nothing of the second DIR touched; upgrades of the same DIR still work."""

from __future__ import annotations

import pytest

from builder.errors import LabbuildError
from builder.install.apply import install_bundle, uninstall
from labkit import one_service_lab


def test_a_second_dir_for_the_same_lab_is_refused_naming_the_first(airgap, docker_engine, tmp_path):
    lab = one_service_lab(airgap)
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    first, second = tmp_path / "first", tmp_path / "second"
    assert install_bundle(bundle, first, timeout=30).ok
    before = {c.id: c.labels for c in docker_engine.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={lab.name}"})}
    with pytest.raises(LabbuildError, match=f"already installed in {first}"):
        install_bundle(bundle, second, timeout=30)
    assert not (second / "current").exists() and not (second / ".env").exists()
    after = {c.id: c.labels for c in docker_engine.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={lab.name}"})}
    assert after == before                                     # the first DIR's containers untouched
    assert install_bundle(bundle, first, timeout=30).ok        # the same DIR upgrades as before
    uninstall(first, volumes=True)


def test_another_labs_bundle_is_refused_before_its_images_are_loaded(airgap, registry, docker_engine, tmp_path):
    import uuid

    import docker

    from labkit import AirgapLab

    lab = one_service_lab(airgap)
    bundle = lab.release("1.0.0")
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    other = one_service_lab(AirgapLab(root=tmp_path / "other", registry=registry, name=name, salt=name))
    try:
        other_bundle = other.release("1.0.0")
        lab.offline(docker_engine)
        other.offline(docker_engine)
        target = tmp_path / "inst"
        assert install_bundle(bundle, target, timeout=30).ok
        with pytest.raises(LabbuildError, match=f"holds the lab {lab.name!r}, this bundle is the lab {name!r}"):
            install_bundle(other_bundle, target, timeout=30)
        for ref in other.refs:                                   # nothing of the refused bundle loaded
            with pytest.raises(docker.errors.ImageNotFound):
                docker_engine.images.get(ref)
    finally:
        other.cleanup(docker_engine)
    uninstall(target, volumes=True)
