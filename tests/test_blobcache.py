"""The content-addressed blob cache: verified on the way in, resumable, shared safely."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading

import pytest

from builder.blobcache import BlobCache, Restarted, Tail, default_cache_root, link_or_copy
from builder.errors import RegistryError


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Source:
    """Serves a blob from an offset in chunks, like RegistryClient.open_blob (no mock of the cache)."""

    def __init__(self, data: bytes, *, corrupt_first: int = 0, cut_after: int | None = None,
                 ignore_range: bool = False, chunk: int = 1000, gate: threading.Event | None = None) -> None:
        self.data, self.corrupt_left, self.cut_after = data, corrupt_first, cut_after
        self.ignore_range, self.chunk = ignore_range, chunk
        self.offsets: list[int] = []
        self.gate = gate      # the first attempt waits here after its first chunk

    @contextlib.contextmanager
    def open(self, offset: int):
        self.offsets.append(offset)
        start = 0 if self.ignore_range else offset
        body = self.data[start:]
        if self.corrupt_left:
            self.corrupt_left -= 1
            body = bytes([body[0] ^ 1]) + body[1:]
        cut, self.cut_after = self.cut_after, None
        gate, self.gate = self.gate, None

        class Stream:
            range_honoured = not self.ignore_range or offset == 0

            def __iter__(s):
                nonlocal gate
                sent = 0
                for i in range(0, len(body), self.chunk):
                    if cut is not None and sent >= cut:
                        raise RegistryError(f"transfer interrupted after {start + sent} bytes")
                    piece = body[i:i + self.chunk]
                    sent += len(piece)
                    yield piece
                    if gate is not None:
                        assert gate.wait(10), "the test never opened the gate"
                        gate = None
        yield Stream()


@pytest.fixture
def cache(tmp_path) -> BlobCache:
    return BlobCache(tmp_path / "blobs")


def test_default_root_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_root() == tmp_path / "labbuild" / "blobs"
    assert BlobCache().path("sha256:" + "a" * 64) == tmp_path / "labbuild" / "blobs" / "sha256" / ("a" * 64)


def test_fetch_stores_verified_blob_and_second_fetch_is_a_hit(cache):
    data = os.urandom(10_000)
    src = Source(data)
    seen = []
    path, got = cache.fetch(digest_of(data), len(data), src.open, on_bytes=seen.append)
    assert path.read_bytes() == data and got == len(data) == sum(seen)
    assert oct(path.stat().st_mode & 0o777) == "0o444"
    path2, got2 = cache.fetch(digest_of(data), len(data), src.open)
    assert path2 == path and got2 == 0 and src.offsets == [0]
    assert not list(cache.partials.glob("*.partial"))


def test_wrong_bytes_are_discarded_and_fetched_again(cache):
    data = os.urandom(5000)
    src = Source(data, corrupt_first=2)
    path, _ = cache.fetch(digest_of(data), len(data), src.open)
    assert path.read_bytes() == data
    assert src.offsets == [0, 0, 0]   # two bad downloads thrown away, each restarted from 0


def test_blob_that_never_hashes_right_is_refused_and_not_kept(cache):
    data = os.urandom(5000)
    src = Source(data, corrupt_first=100)
    with pytest.raises(RegistryError) as exc:
        cache.fetch(digest_of(data), len(data), src.open, retries=2, what="example/img")
    assert "example/img" in exc.value.message and "hashing to" in exc.value.message
    assert not cache.has(digest_of(data))
    assert not list(cache.partials.glob("*.partial"))


def test_oversized_body_is_refused(cache):
    data = os.urandom(3000)
    src = Source(data + b"x" * 5000)
    with pytest.raises(RegistryError) as exc:
        cache.fetch(digest_of(data), len(data), src.open, retries=0)
    assert "more than the expected 3000 bytes" in exc.value.message
    assert not cache.has(digest_of(data))


def test_interrupted_download_resumes_from_the_partial_file(cache):
    data = os.urandom(50_000)
    src = Source(data, cut_after=20_000)
    path, got = cache.fetch(digest_of(data), len(data), src.open)
    assert path.read_bytes() == data
    assert src.offsets == [0, 20_000]    # the second request asks only for the rest
    assert got == len(data)


def test_partial_file_left_by_an_earlier_run_is_resumed(cache):
    data = os.urandom(30_000)
    partial = cache._partial(digest_of(data))
    partial.write_bytes(data[:12_345])
    src = Source(data)
    path, got = cache.fetch(digest_of(data), len(data), src.open)
    assert path.read_bytes() == data and src.offsets == [12_345] and got == len(data) - 12_345


def test_server_ignoring_range_restarts_cleanly(cache):
    data = os.urandom(30_000)
    cache._partial(digest_of(data)).write_bytes(data[:10_000])
    src = Source(data, ignore_range=True)
    path, _ = cache.fetch(digest_of(data), len(data), src.open)
    assert path.read_bytes() == data


def test_corrupt_partial_file_is_not_trusted(cache):
    data = os.urandom(30_000)
    cache._partial(digest_of(data)).write_bytes(b"\0" * 10_000)   # garbage from a broken run
    src = Source(data)
    path, _ = cache.fetch(digest_of(data), len(data), src.open)
    assert path.read_bytes() == data and src.offsets == [10_000, 0]


def test_threads_wanting_the_same_blob_download_it_once(cache):
    data = os.urandom(200_000)
    src = Source(data, chunk=100)
    results = []

    def worker():
        results.append(cache.fetch(digest_of(data), len(data), src.open)[1])

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0] * 5 + [len(data)]
    assert src.offsets == [0]


def test_put_verifies_bytes(cache):
    data = b'{"schemaVersion":2}'
    assert cache.put(digest_of(data), data).read_bytes() == data
    with pytest.raises(RegistryError):
        cache.put(digest_of(b"other"), data)


def test_link_places_the_blob_without_copying_when_possible(cache, tmp_path):
    data = os.urandom(4096)
    cache.put(digest_of(data), data)
    how = cache.link(digest_of(data), tmp_path / "out" / "blob")
    assert how in ("reflink", "hardlink", "copy")
    assert (tmp_path / "out" / "blob").read_bytes() == data
    # same filesystem: never a plain copy
    assert how != "copy"
    if how == "hardlink":
        assert (tmp_path / "out" / "blob").stat().st_ino == cache.path(digest_of(data)).stat().st_ino


def test_link_or_copy_replaces_an_existing_file(tmp_path):
    src = tmp_path / "a"
    src.write_bytes(b"new")
    dst = tmp_path / "b"
    dst.write_bytes(b"old")
    link_or_copy(src, dst)
    assert dst.read_bytes() == b"new"


def test_real_registry_blob_resumes_with_range(cache, registry):
    """The registry client's open_blob with an offset really continues the download."""
    from builder.registry import RegistryClient
    from support.oci import Blob, push_blob

    data = os.urandom(300_000)
    blob = Blob(data, "application/octet-stream")
    with registry.client() as c:
        push_blob(c, "blobtest/x", blob)
    cache._partial(blob.digest).write_bytes(data[:100_000])
    offsets = []
    with RegistryClient() as client:
        def opener(offset):
            offsets.append(offset)
            return client.open_blob(f"{registry.host}/blobtest/x", blob.digest, offset=offset)
        path, got = cache.fetch(blob.digest, blob.size, opener)
    assert path.read_bytes() == data and offsets == [100_000] and got == 200_000


def test_unsynced_blob_is_settled_this_boot_and_rechecked_after_a_restart(cache):
    good, bad = os.urandom(5000), os.urandom(5000)
    for data in (good, bad):
        cache.fetch(digest_of(data), len(data), Source(data).open, sync=False)
    marker = cache.root / "unsynced"
    assert sorted(p.name for p in marker.iterdir()) == sorted(digest_of(d)[7:] for d in (good, bad))
    cache.settle(digest_of(good))                  # same boot: fsync, trusted, marker gone
    assert cache.has(digest_of(good), len(good)) and not (marker / digest_of(good)[7:]).exists()
    # a restart before writeback: the bytes on disk are not the blob's; the other boot id forces a re-hash
    path = cache.path(digest_of(bad))
    os.chmod(path, 0o644)
    path.write_bytes(b"\0" * len(bad))
    (marker / digest_of(bad)[7:]).write_text("another-boot")
    cache.settle(digest_of(bad))
    assert not cache.has(digest_of(bad)) and not (marker / digest_of(bad)[7:]).exists()
    cache.settle(digest_of(bad))                   # nothing left to settle: a no-op


def fetch_in_thread(cache: BlobCache, data: bytes, src: Source, tail: Tail) -> threading.Thread:
    """``cache.fetch`` with ``tail`` in a thread, saying ``end``/``fail`` as ``fetch.image_files`` does."""
    def run():
        try:
            cache.fetch(digest_of(data), len(data), src.open, tail=tail)
            tail.end(cache.path(digest_of(data)))
        except BaseException as exc:
            tail.fail(exc)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def read_following(tail: Tail) -> tuple[bytes, int]:
    """Everything a reader of ``tail`` ends up with, and how often it had to start over."""
    got, restarts = bytearray(), 0
    with tail.open() as reader:
        while True:
            try:
                block = reader.read(700)
            except Restarted:
                got.clear()
                restarts += 1
                continue
            if not block:
                return bytes(got), restarts
            got += block


def test_a_reader_follows_the_download_as_it_arrives(cache):
    data = os.urandom(10_000)
    gate = threading.Event()
    tail = Tail()
    thread = fetch_in_thread(cache, data, Source(data, gate=gate), tail)
    with tail.open() as reader:
        first = reader.read(5000)          # while the download waits at its first chunk
        assert first == data[:1000] and not cache.has(digest_of(data))
        gate.set()
        rest = b""
        while block := reader.read(5000):
            rest += block
    thread.join()
    assert first + rest == data and cache.has(digest_of(data))


def test_a_reader_starts_over_when_the_download_does(cache):
    data = os.urandom(10_000)
    gate = threading.Event()
    tail = Tail()
    thread = fetch_in_thread(cache, data, Source(data, corrupt_first=1, gate=gate), tail)
    reader = tail.open()
    assert reader.read(1000) != data[:1000]          # the first attempt's (wrong) first chunk
    gate.set()
    with pytest.raises(Restarted):
        while reader.read(1000):
            pass
    rest = b""
    while block := reader.read(1000):                 # the second attempt, from byte 0
        rest += block
    reader.close()
    thread.join()
    assert rest == data


def test_a_resumed_download_does_not_restart_its_reader(cache):
    data = os.urandom(10_000)
    tail = Tail()
    src = Source(data, cut_after=4000)
    fetch_in_thread(cache, data, src, tail).join()
    assert src.offsets == [0, 4000]
    assert read_following(tail) == (data, 0)


def test_a_reader_gets_the_download_error(cache):
    data = os.urandom(5000)
    tail = Tail()
    fetch_in_thread(cache, data, Source(data, corrupt_first=100), tail).join()
    with pytest.raises(RegistryError, match="could not download"):
        read_following(tail)


def test_a_blob_cached_elsewhere_is_read_whole(cache):
    data = os.urandom(5000)
    cache.fetch(digest_of(data), len(data), Source(data).open)
    tail = Tail()
    fetch_in_thread(cache, data, Source(data), tail).join()     # a hit: no attempt begins
    assert read_following(tail) == (data, 0)


def test_a_reader_opening_late_finds_the_blob_renamed_into_the_cache(tmp_path):
    """A small blob may be verified and renamed before its reader opens it, and before the
    fetch's caller says ``end``: the reader waits for the tail to name the file."""
    partial, final = tmp_path / "x.partial", tmp_path / "x"
    data = os.urandom(3000)
    tail = Tail()
    partial.write_bytes(data)
    tail.begin(partial, 0)
    tail.grew(len(data))
    os.replace(partial, final)                    # BlobCache._commit, before the caller's tail.end
    got = []
    reader = threading.Thread(target=lambda: got.append(read_following(tail)), daemon=True)
    reader.start()
    reader.join(0.3)
    assert reader.is_alive()                      # not an error: it waits
    tail.end(final)
    reader.join(5)
    assert got == [(data, 0)]


def test_a_reader_never_opens_the_next_attempts_file_under_the_old_attempts_length(tmp_path):
    """A wrong download is discarded before its file goes, and the retry creates the same path
    before it says ``begin``: a reader that had not started must wait for the new attempt,
    not read the new (empty) file as if it held the old attempt's bytes."""
    partial, final = tmp_path / "x.partial", tmp_path / "x"
    wrong, right = os.urandom(3000), os.urandom(3000)
    tail = Tail()
    partial.write_bytes(wrong)
    tail.begin(partial, 0)
    tail.grew(len(wrong))
    tail.discard()                                # BlobCache.fetch: the bytes hashed wrong
    partial.unlink()
    partial.write_bytes(b"")                      # the retry opens the same path ...
    got = []
    reader = threading.Thread(target=lambda: got.append(read_following(tail)), daemon=True)
    reader.start()
    reader.join(0.3)
    assert reader.is_alive() and not got          # ... and the reader waits for its begin
    partial.write_bytes(right)
    tail.begin(partial, 0)
    tail.grew(len(right))
    os.replace(partial, final)
    tail.end(final)
    reader.join(5)
    assert got == [(right, 0)]
