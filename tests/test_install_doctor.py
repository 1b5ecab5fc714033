"""builder.install.doctor: the checks that need no engine (ports with a real socket, memory, GPU,
disk accounting, the report's two views)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from builder.format.manifest import FileEntry, Manifest, ManifestPort, ManifestService
from builder.install.doctor import (Check, DoctorReport, blob_bytes, check_dir, disk_need, check_gpu, check_memory, check_ports,
                                    gpu_services, parse_size, port_free, port_owner)


def service(*, memory=None, gpus=None, port=None, models=()) -> ManifestService:
    ports = (ManifestPort(name="http", container=80, host=port, bind="127.0.0.1", protocol="tcp"),) if port else ()
    return ManifestService(image="x/y:1", digest="sha256:" + "0" * 64, verified=True, config_digests={},
                           ports=ports, health=None, depends_on=(), volumes=(), secrets=(), runbook="runbooks/y.md",
                           memory=memory, gpus=gpus, models=models)


def manifest(services, files=None) -> Manifest:
    return Manifest(lab="lab", name="lab-p-1.0.0", version="1.0.0", profile="p", inputs="i", labbuild="0",
                    offline=True, platforms=("linux/amd64",), services=services, files=files or {})


def test_optional_manifest_fields_round_trip_and_stay_out_of_the_json_when_unset():
    m = manifest({"gpu-svc": service(memory="2g", gpus="all"), "plain": service()})
    data = m.to_json()
    assert data["services"]["gpu-svc"]["memory"] == "2g" and data["services"]["gpu-svc"]["gpus"] == "all"
    assert "memory" not in data["services"]["plain"] and "gpus" not in data["services"]["plain"]
    assert Manifest.loads(m.dumps()) == m
    assert gpu_services(m) == ["gpu-svc"]


def test_a_taken_port_is_named_with_its_process_and_a_free_one_passes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_free("127.0.0.1", port) == (False, "in use")
        me = Path("/proc/self/comm").read_text().strip()
        assert port_owner(port) == f"{me} (pid {os.getpid()})"
        (check,) = check_ports(manifest({"web": service(port=port)}), own=set())
        assert check.state == "fail" and str(port) in check.detail and me in check.detail and check.fix
        (own,) = check_ports(manifest({"web": service(port=port)}), own={(port, "tcp")})
        assert own.state == "ok" and "own" in own.detail
    assert port_free("127.0.0.1", port)[0]
    (check,) = check_ports(manifest({"web": service(port=port)}), own=set())
    assert check.state == "ok"


def test_memory_limits_against_the_host():
    assert parse_size("16g") == 16 << 30 and parse_size("512m") == 512 << 20 and parse_size("100") == 100
    huge = check_memory(manifest({"ollama": service(memory="100000g")}), None)
    assert huge.state == "fail" and "ollama" in huge.detail and "ollama" in huge.fix
    assert check_memory(manifest({"a": service(memory="1m")}), None).state == "ok"
    assert check_memory(manifest({"a": service()}), None).state == "ok"


def test_gpu_is_refused_when_asked_without_a_runtime_and_quiet_when_not_asked():
    m = manifest({"ollama": service(gpus="all"), "web": service()})
    asked = check_gpu(m, None, gpu=True)     # no engine here: no nvidia runtime, and no CDI spec on this host
    if not any(Path(d).is_dir() and any("nvidia" in p.name for p in Path(d).iterdir()) for d in ("/etc/cdi", "/var/run/cdi")):
        assert asked.state == "fail" and "ollama" in asked.detail and "NVIDIA Container Toolkit" in asked.fix
    assert check_gpu(m, None, gpu=False).state == "ok"
    assert check_gpu(manifest({"web": service()}), None, gpu=False) is None
    assert check_gpu(manifest({"web": service()}), None, gpu=True).state == "warn"


def test_disk_counts_every_blob_under_images():
    files = {"images/blobs/sha256/aa": FileEntry("0" * 64, 1000), "images/blobs/sha256/bb": FileEntry("0" * 64, 24),
             "images/index.json": FileEntry("0" * 64, 5), "compose.yaml": FileEntry("0" * 64, 7)}
    assert blob_bytes(manifest({}, files)) == 1024
    assert disk_need(manifest({}, files)) == (2048, 1024, 0)


def test_disk_counts_model_blobs_once_and_unpacked_layers_twice():
    from builder.format.manifest import ManifestBlob, ManifestModel
    blob, config, layer = ("sha256:" + c * 64 for c in "abc")
    model = ManifestModel(name="library/m", tag="1", digest=blob, format="ollama", volume="models", path="",
                          role=None, media_type="", size=300, blobs=(ManifestBlob(config, 20, ""),
                                                                     ManifestBlob(layer, 5000, "")))
    files = {f"images/blobs/sha256/{d[7:]}": FileEntry(d[7:], n) for d, n in ((blob, 300), (config, 20), (layer, 5000))}
    files["images/blobs/sha256/" + "d" * 64] = FileEntry("d" * 64, 1000)          # an image layer
    m = manifest({"ollama": service(models=(model,))}, files)
    assert disk_need(m) == (2000 + 5320, 1000, 5320)


def test_dir_check_and_the_report_views(tmp_path):
    assert check_dir(tmp_path / "new" / "inst").state == "ok"
    (tmp_path / "file").write_text("")
    assert check_dir(tmp_path / "file" / "inst").state == "fail"
    report = DoctorReport([Check("engine", "ok", "Docker Engine 20.10"), Check("port a/http", "fail", "taken", "stop it")])
    assert not report.ok and report.to_json()["checks"][1] == {"name": "port a/http", "state": "fail",
                                                               "detail": "taken", "fix": "stop it"}
    table = report.render_table()
    assert "FAIL" in table and "fix: stop it" in table and table.endswith("1 check(s) failed")
