"""Delta planning (pure): which blobs a delta relies on, by image and by layer chain."""

from __future__ import annotations

from builder.bundle.archive import BundleFile
from builder.bundle.delta import Base, delta_members, plan_delta
from builder.bundle.fetch import PlannedImage
from builder.format.manifest import FileEntry, Manifest
from builder.lockfile import ImageRecord, LayerRecord, Lock, PlatformRecord

AMD = "linux/amd64"


def d(c: str) -> str:
    return "sha256:" + c * 64


def image(ref: str, manifest: str, config: str, layers: list[str], platform: str = AMD) -> ImageRecord:
    rec = PlatformRecord(manifest=d(manifest), media_type="m", config=d(config), size=10, manifest_size=10,
                         config_size=20, layers=tuple(LayerRecord(d(l), 100, "l") for l in layers))
    return ImageRecord(reference=ref, digest=d(manifest), media_type="m", verified=True, size=10,
                       platforms={platform: rec})


def base_of(images: dict[str, ImageRecord], blobs: list[str] = ()) -> Base:
    m = Manifest(lab="lab", name="lab-p-1.0.0", version="1.0.0", profile="p", inputs="", labbuild="x",
                 offline=True, platforms=(AMD,), services={},
                 files={f"images/blobs/sha256/{b * 64}": FileEntry("0" * 64, 1) for b in blobs})
    return Base(m, "f" * 64, "lab-p-1.0.0.tar", Lock(lab="lab", inputs="", platforms=(AMD,), services=images))


def planned(rec: ImageRecord) -> PlannedImage:
    return PlannedImage(rec.reference, rec, dict(rec.platforms), ("svc",))


def test_unchanged_image_is_relied_on_whole():
    a = image("r/a:1", "1", "2", ["3", "4"])
    plan = plan_delta(base_of({"a": a}, ["1", "2", "3", "4"]), [planned(a)])
    assert set(plan.relied) == {d("1"), d("2"), d("3"), d("4")}
    assert [(i.reference, i.whole, i.layers) for i in plan.images] == [("r/a:1", True, 2)]


def test_changed_top_layer_relies_on_the_chain_below():
    old = image("r/a:1", "1", "2", ["3", "4"])
    new = image("r/a:2", "5", "6", ["3", "7"])
    plan = plan_delta(base_of({"a": old}), [planned(new)])
    assert set(plan.relied) == {d("3")}
    assert [(i.reference, i.whole, i.layers) for i in plan.images] == [("r/a:1", False, 1)]


def test_a_layer_above_a_changed_layer_is_a_new_chain_and_is_carried():
    old = image("r/a:1", "1", "2", ["3", "4"])
    new = image("r/a:2", "5", "6", ["7", "4"])      # same top blob, new bottom: docker load needs it again
    plan = plan_delta(base_of({"a": old}, ["1", "2", "3", "4"]), [planned(new)])
    assert plan.relied == {} and plan.images == ()


def test_other_platform_of_the_base_is_not_relied_on():
    old = image("r/a:1", "1", "2", ["3"], platform="linux/arm64")
    new = image("r/a:2", "5", "6", ["3"])
    assert plan_delta(base_of({"a": old}), [planned(new)]).relied == {}


def test_members_drop_relied_and_base_blobs_and_trim_docker_load():
    load = b'[{"Config":"blobs/sha256/' + b"2" * 64 + b'","Layers":[],"RepoTags":["r/a:1"]},' \
           b'{"Config":"blobs/sha256/' + b"6" * 64 + b'","Layers":[],"RepoTags":["r/b:1"]}]'
    files = [BundleFile("images/docker-load/linux_amd64.json", data=load),
             BundleFile(f"images/blobs/sha256/{'2' * 64}", data=b"x"),
             BundleFile(f"images/blobs/sha256/{'6' * 64}", data=b"y"),
             BundleFile(f"images/blobs/sha256/{'9' * 64}", data=b"model")]   # unknown to the plan: a model blob
    kept, relied = delta_members(files, {d("2"): 1}, frozenset({d("9")}))
    assert [f.arcname for f in kept] == ["images/docker-load/linux_amd64.json", f"images/blobs/sha256/{'6' * 64}"]
    assert b"r/b:1" in kept[0].data and b"r/a:1" not in kept[0].data
    assert relied == {d("2"): 1, d("9"): 5}
