"""The error hierarchy: errors declare their data in __init__, with defaults."""

from __future__ import annotations

from builder.errors import LabbuildError, LockError, Problem, RegistryError


def test_lock_error_names_no_services_unless_given():
    assert LockError("stale").services == {}
    failed = {"db": "not found"}
    err = LockError("1 of 2 service(s) could not be resolved", services=failed,
                    problems=[Problem(file="db.toml", path="image.digest", message="not found")])
    failed["web"] = "later change"
    assert err.services == {"db": "not found"}
    assert err.problems[0].file == "db.toml"


def test_registry_error_carries_what_was_asked_for():
    bare = RegistryError("content hashes wrong")
    assert (bare.registry, bare.image, bare.digest, bare.status) == (None, None, None, None)
    err = RegistryError("not found", hint="push it", registry="127.0.0.1:5000",
                        image="127.0.0.1:5000/x", digest="sha256:" + "0" * 64, status=404)
    assert isinstance(err, LabbuildError)
    assert (err.registry, err.image, err.status) == ("127.0.0.1:5000", "127.0.0.1:5000/x", 404)
    assert err.render() == "error: not found\nhint: push it"
