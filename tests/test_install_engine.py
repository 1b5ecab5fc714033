"""install/engine.StreamingLoad against the real engine: a docker load fed block by block."""

from __future__ import annotations

import hashlib
import json

import pytest
from support import oci

from builder.errors import InstallError
from builder.host.engine import StreamingLoad
from builder.install.unpack import load_header


def load_stream(image: oci.Image, tag: str) -> list[bytes]:
    """The docker-load tar of ``image`` (without the trailer), in pieces as install sends them."""
    def member(name: str, data: bytes) -> bytes:
        return load_header(name, len(data)) + data + b"\0" * (-len(data) % 512)
    hexes = [hashlib.sha256(b.data).hexdigest() for b in [image.config, *image.layers]]
    manifest = [{"Config": f"blobs/sha256/{hexes[0]}", "RepoTags": [tag],
                 "Layers": [f"blobs/sha256/{h}" for h in hexes[1:]]}]
    pieces = [member("manifest.json", json.dumps(manifest).encode())]
    for h, blob in zip(hexes, [image.config, *image.layers]):
        pieces.append(member(f"blobs/sha256/{h}", blob.data))
    return pieces


@pytest.fixture
def image(docker_engine):
    img = oci.make_image([{"f": b"streamed %d" % id(docker_engine)}], label="streaming-load")
    yield img
    try:
        docker_engine.images.remove(img.config.digest, force=True)
    except Exception:
        pass


def test_a_load_of_announced_length_goes_in_with_content_length(docker_engine, image):
    tag = "labbuild-test/streaming-load:sized"
    pieces = load_stream(image, tag)
    load = StreamingLoad(docker_engine, size=sum(map(len, pieces)) + len(StreamingLoad.TRAILER))
    for p in pieces:
        load.put(p)
    load.finish()
    assert docker_engine.images.get(tag).id == image.config.digest


def test_a_load_of_unknown_length_goes_in_chunked(docker_engine, image):
    tag = "labbuild-test/streaming-load:chunked"
    load = StreamingLoad(docker_engine)
    for p in load_stream(image, tag):
        load.put(p)
    load.finish()
    assert docker_engine.images.get(tag).id == image.config.digest


@pytest.mark.parametrize("off_by", [-512, 512])
def test_a_stream_of_another_length_than_announced_loads_nothing(docker_engine, image, off_by):
    tag = f"labbuild-test/streaming-load:off{off_by}"
    pieces = load_stream(image, tag)
    load = StreamingLoad(docker_engine, size=sum(map(len, pieces)) + len(StreamingLoad.TRAILER) + off_by)
    for p in pieces:
        load.put(p)
    with pytest.raises(InstallError, match="internal error: the docker load stream"):
        load.finish()
    # the raw listing: images.list() fetches each image again, racing tests that remove theirs
    assert not [i for i in docker_engine.api.images() if tag in (i.get("RepoTags") or [])]
