"""builder.host.labdir: the install dir's release links."""

from __future__ import annotations

import os

import pytest

from builder.errors import InstallError
from builder.host.labdir import activate, current_release


def test_activate_switches_current_and_remembers_previous(tmp_path):
    r1, r2 = tmp_path / "releases" / "1.0.0", tmp_path / "releases" / "1.1.0"
    r1.mkdir(parents=True)
    r2.mkdir()
    with pytest.raises(InstallError):
        current_release(tmp_path)
    assert activate(tmp_path, r1) is None
    assert current_release(tmp_path) == r1.resolve()
    assert activate(tmp_path, r2) == r1.resolve()
    assert os.readlink(tmp_path / "current") == "releases/1.1.0"        # relative: DIR can move
    assert (tmp_path / "previous").resolve() == r1.resolve()
    activate(tmp_path, r1)                                             # rollback = swap
    assert current_release(tmp_path) == r1.resolve() and (tmp_path / "previous").resolve() == r2.resolve()
