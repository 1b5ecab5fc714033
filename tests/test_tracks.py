"""Tracks, tag order and steps (builder.tracks): pure, no registry."""

from __future__ import annotations

import pytest

from builder.tracks import TrackError, choose, compile_track, default_track, fitting_tag, on_track, sort_tags, step

DIFY = ["1.15.0", "1.15.1", "1.16.0", "1.17.2", "1.17.3-rc.1", "2.0.0", "latest", "1.17.2-slim",
        "sha256-" + "a" * 64 + ".sig", "1.18.0-beta.1"]


@pytest.mark.parametrize("tag, track", [
    ("0.6.0-local", r"^(\d+)\.(\d+)\.(\d+)-local$"),
    ("v1.97.0", r"^v(\d+)\.(\d+)\.(\d+)$"),
    ("lab-4.6.3", r"^lab-(\d+)\.(\d+)\.(\d+)$"),
    ("8.4.2-alpine", r"^(\d+)\.(\d+)\.(\d+)-alpine$"),
    ("RELEASE.2025-09-07T16-13-09Z", r"^RELEASE\.(\d+)-(\d+)-(\d+)T(\d+)-(\d+)-(\d+)Z$"),
])
def test_the_default_track_is_the_tags_own_shape(tag, track):
    assert default_track(tag) == track
    assert on_track(tag, track)


def test_pre_releases_latest_digest_tags_and_variants_are_never_candidates_by_default():
    choice = choose("1.15.0", DIFY, None)
    assert (choice.newest, choice.step, choice.held) == ("1.17.2", "minor", "2.0.0")


def test_a_track_that_admits_pre_releases_orders_them_by_semver():
    track = r"^(\d+)\.(\d+)\.(\d+)(-(rc|beta)\.\d+)?$"
    assert choose("1.15.0", DIFY, track).newest == "1.18.0-beta.1"
    assert sort_tags(["1.17.0", "1.17.0-rc.1", "1.16.0", "1.17.1-rc.2"]) == \
        ["1.16.0", "1.17.0-rc.1", "1.17.0", "1.17.1-rc.2"]


def test_major_steps_only_when_asked_for():
    assert choose("1.15.0", DIFY, None, major=True).newest == "2.0.0"
    assert choose("1.15.0", DIFY, None, major=True).step == "major"
    assert choose("2.0.0", DIFY, None) == choose("2.0.0", DIFY, None, major=True)
    assert choose("2.0.0", DIFY, None).step is None


def test_suffix_tracks_keep_their_variant():
    tags = ["0.6.3-local", "0.6.3-serverless", "0.6.4-serverless", "0.7.0-rc1-local"]
    assert choose("0.6.0-local", tags, None).newest == "0.6.3-local"
    assert choose("0.6.0-local", tags, None).step == "patch"


def test_a_declared_track_keeps_lts_lines_and_database_majors():
    clickhouse = ["25.3", "25.4", "25.8", "25.10", "26.1", "26.3", "latest", "25.8.1.5101"]
    lts = r"^(\d+)\.(3|8)$"
    assert (choose("25.3", clickhouse, lts).newest, choose("25.3", clickhouse, lts).held) == ("25.8", "26.3")
    assert choose("25.3", clickhouse, lts, major=True).newest == "26.3"
    postgres = ["16.4", "16.6", "17.2", "17.9", "18.1", "17", "17.9-alpine"]
    assert choose("17.2", postgres, r"^17\.(\d+)$", major=True).newest == "17.9"


def test_numeric_order_where_a_tag_is_not_semver():
    minio = ["RELEASE.2025-10-15T17-29-55Z", "RELEASE.2025-09-07T16-13-09Z", "RELEASE.2024-12-18T13-15-44Z",
             "RELEASE.2025-10-15T17-29-55Z.fips"]
    choice = choose("RELEASE.2025-09-07T16-13-09Z", minio, None)
    assert (choice.newest, choice.step) == ("RELEASE.2025-10-15T17-29-55Z", "minor")
    assert sort_tags(["25.3.10.1", "25.3.9.2", "25.3.10.0"]) == ["25.3.9.2", "25.3.10.0", "25.3.10.1"]


@pytest.mark.parametrize("old, new, kind", [
    ("1.15.0", "1.15.3", "patch"), ("1.15.0", "1.17.0", "minor"), ("1.15.0", "2.0.0", "major"),
    ("v0.11.0", "v0.11.2", "patch"), ("1.17.0-rc.1", "1.17.0", "patch"), ("25.3", "25.8", "minor"),
    ("2025.8.2", "2026.1.0", "major"),
])
def test_steps(old, new, kind):
    assert step(old, new) == kind


def test_a_to_tag_must_be_on_the_track():
    assert fitting_tag("1.15.0", None, ["1.17.2", "0.6.3-local"]) == ["1.17.2"]
    assert fitting_tag("0.6.0-local", None, ["1.17.2", "0.6.3-local"]) == ["0.6.3-local"]
    assert fitting_tag("17.2", r"^17\.(\d+)$", ["18.1"]) == []


def test_a_bad_track_says_why():
    with pytest.raises(TrackError, match="missing \\), unterminated subpattern at position 0"):
        compile_track("(1")
