"""builder.platforms: one way to match a platform, on both sides."""

from builder.platforms import expected_image_id, match_platform, platform_file


def test_platform_matching_and_ids():
    assert platform_file("linux/arm64/v8") == "linux_arm64_v8"
    assert match_platform("linux/arm64", ["linux/amd64", "linux/arm64/v8"]) == "linux/arm64/v8"
    assert match_platform("linux/386", ["linux/amd64"]) is None
    assert expected_image_id({"linux/amd64": "sha256:a"}, "linux/amd64") == "sha256:a"
    assert expected_image_id({"linux/amd64": "sha256:a"}, "linux/arm64") is None
