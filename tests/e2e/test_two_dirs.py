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
