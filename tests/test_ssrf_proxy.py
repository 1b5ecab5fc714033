"""Dify's SSRF proxy as shipped: the real squid runs the blueprint's files and refuses private destinations.

The three [[files]] of ``dify-ssrf-proxy`` are written to a temp dir (only their absolute paths are moved
there) and started with the squid binary found on PATH (Debian's package; the image runs Canonical's build
of the same configuration), listening on the Docker bridge's gateway address. A container on that bridge
(busybox nc sending the absolute-form request an HTTP client sends with HTTP_PROXY set, as the sandbox's
code does) asks the proxy for an HTTP server on the gateway, a private address: refused with squid's ERR_ACCESS_DENIED, as upstream's default; after the
allowlist lines the runbook gives are added to dify_allow_private.conf, the same request goes through.
Skipped when squid is not installed (scripts/bootstrap.sh installs it); Debian bookworm has squid 5.7,
the pinned image 6.14 (not run here: no image pulls).
"""

from __future__ import annotations

import http.server
import io
import ipaddress
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.blueprint import load_lab
from support.oci import BUSYBOX

REPO = Path(__file__).resolve().parents[1]
SBIN_SQUID = Path("/usr/sbin/squid")


def _bridge_gateway(client) -> str:
    """The default bridge's gateway: the host as its containers see it, a private address."""
    gateway = client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    assert ipaddress.ip_address(gateway).is_private, gateway
    return gateway


def _client_image(client) -> str:
    """A one-layer image with static busybox (sh, printf, nc), made here by docker import."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tar.gettarinfo(str(BUSYBOX), arcname="bin/busybox")
        with BUSYBOX.open("rb") as f:
            tar.addfile(info, f)
    client.api.import_image_from_data(buf.getvalue(), repository="labbuild-test/ssrf-client", tag="1")
    return "labbuild-test/ssrf-client:1"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"internal service")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def squid_conf() -> Iterator[Path]:
    if not _squid():
        pytest.skip("squid is not installed (apt-get install squid; scripts/bootstrap.sh does)")
    # not under pytest's 0700 basetemp: squid drops to an unprivileged user when started as root
    tmp_path = Path(tempfile.mkdtemp(prefix="ssrf-squid-"))
    os.chmod(tmp_path, 0o755)
    conf_dir = tmp_path / "etc"
    for d in ("etc", "log", "spool"):
        (tmp_path / d).mkdir()
        os.chmod(tmp_path / d, 0o777)
    bp = load_lab(REPO).services["dify-ssrf-proxy"]
    for f in bp.files:
        text = f.content.replace("/etc/squid/", f"{conf_dir}/").replace("/var/log/squid/", f"{tmp_path}/log/")
        text = text.replace("coredump_dir /var/spool/squid", f"coredump_dir {tmp_path}/spool")
        (conf_dir / Path(f.target).name).write_text(text, "utf-8")
    yield conf_dir / "squid.conf"
    shutil.rmtree(tmp_path, ignore_errors=True)


def _squid() -> str | None:
    """squid on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH)."""
    return shutil.which("squid") or (str(SBIN_SQUID) if SBIN_SQUID.is_file() else None)


def _prefix_paths() -> str:
    """Support-file paths of a squid unpacked under another prefix (dpkg -x): its binary's ../share/squid."""
    prefix = Path(_squid()).resolve().parent.parent
    share, lib = prefix / "share" / "squid", prefix / "lib" / "squid"
    if share == Path("/usr/share/squid") or not share.is_dir():
        return ""
    return (f"mime_table {share}/mime.conf\nicon_directory {share}/icons\nerror_directory {share}/errors/templates\n"
            f"logfile_daemon {lib}/log_file_daemon\nunlinkd_program {lib}/unlinkd\npinger_enable off\n")


def _start(conf: Path, addr: str) -> tuple[subprocess.Popen, int]:
    """squid on ``addr`` with the shipped squid.conf; only the listening address and its own
    pid/log files differ (written to a copy, so the shipped text stays as it is)."""
    port = _free_port(addr)
    run = conf.parent.parent
    text = conf.read_text("utf-8").replace("http_port 3128", f"http_port {addr}:{port}")
    text += (f"pid_filename {run}/spool/squid.pid\ncache_log {run}/log/cache.log\n"
             + ("cache_effective_user nobody\n" if os.geteuid() == 0 else "") + _prefix_paths())
    started = conf.with_name("started.conf")
    started.write_text(text, "utf-8")
    proc = subprocess.Popen([_squid(), "-N", "-f", str(started)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"squid exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            socket.create_connection((addr, port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("squid did not listen within 20 s")


def _get_via(client, image: str, addr: str, proxy_port: int, url: str) -> tuple[int, str]:
    """A proxy request for ``url`` (absolute-form, what an HTTP client sends with HTTP_PROXY set) from a
    container on the default bridge: (HTTP status, body)."""
    host = url.split("/")[2]
    # stdin stays open a while: squid drops a client that half-closes before its answer (half_closed_clients off)
    script = f'(printf "GET {url} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n"; sleep 3) | /bin/busybox nc {addr} {proxy_port}'
    container = client.containers.run(image, ["/bin/busybox", "sh", "-c", script], detach=True)
    try:
        container.wait(timeout=60)
        raw = container.logs(stderr=False).decode(errors="replace")
    finally:
        container.remove(force=True)
    head, _, body = raw.partition("\r\n\r\n")
    status = head.split("\r\n", 1)[0].split()
    assert len(status) >= 2, f"no HTTP answer from the proxy: {raw!r}"
    return int(status[1]), body


def test_shipped_squid_config_refuses_private_destinations_until_allowlisted(squid_conf: Path,
                                                                             docker_engine) -> None:
    addr = _bridge_gateway(docker_engine)
    image = _client_image(docker_engine)
    server = http.server.ThreadingHTTPServer((addr, 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"http://{addr}:{server.server_address[1]}/"
    allow = squid_conf.parent / "dify_allow_private.conf"
    try:
        proc, port = _start(squid_conf, addr)
        try:
            status, body = _get_via(docker_engine, image, addr, port, target)
            assert status == 403 and "ERR_ACCESS_DENIED" in body
        finally:
            proc.kill()   # the shipped shutdown_lifetime makes SIGTERM wait 30 s; it keeps no state
            proc.wait(timeout=10)
        # the runbook's allowlist lines, for exactly this destination
        allow.write_text(allow.read_text("utf-8") + f"acl dify_allowed_private_networks dst {addr}/32\n"
                         "http_access allow client_localnet dify_allowed_private_networks\n", "utf-8")
        proc, port = _start(squid_conf, addr)
        try:
            status, body = _get_via(docker_engine, image, addr, port, target)
            assert status == 200 and body == "internal service"
        finally:
            proc.kill()
            proc.wait(timeout=10)
    finally:
        server.shutdown()
