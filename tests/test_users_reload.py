"""The provider's reload of `labbuild users` changes, on a real install dir and a real engine.

Authelia cannot run here (its image is not reachable), so a **stand-in** plays its watcher: a
container of the test base image (tests/apps/base.py) mounts DIR/access the way the rendered
compose file mounts it for the provider (the directory, read-only at /access: builder.render.door.USERS_TARGET) and runs a Perl loop
doing what Authelia 4.39's FileWatcher does (internal/service/file_watcher.go): an inotify watch
on the file's directory with fsnotify's mask (backend_inotify.go v1.10.1), events filtered by the
file's base name, a reload on Create (IN_CREATE or IN_MOVED_TO) or Write (IN_MODIFY), skipped
within 0.5 s of the previous reload (FileUserProvider.Reload's cooldown,
internal/authentication/file_user_provider.go). Each reload prints the user names it read. The test shows that each `labbuild users` change (an atomic
rename) reaches a watcher in a container, and — the control — that a mount of the file alone
would not see it (the container keeps the old inode), which is why the contract mounts the
directory.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from test_users import door_install

from builder.operate.users import add_user, remove_user
from builder.render.door import USERS_TARGET

REPO = Path(__file__).resolve().parents[1]
LABBUILD = [str(Path(sys.executable).with_name("labbuild"))]

# struct inotify_event { int wd; uint32_t mask, cookie, len; char name[]; }; syscall numbers of
# inotify_init1 and inotify_add_watch per architecture (the base image has perl-base, no modules).
WATCHER = r"""
$| = 1;
my %nr = (x86_64 => [294, 254, 228], aarch64 => [26, 27, 113]);
my $arch = `uname -m`; chomp $arch;
my ($init1, $add, $clock) = @{$nr{$arch}} or die "unknown arch $arch";
sub now { my $ts = "\0" x 16; syscall($clock, 1, $ts) == 0 or die "clock_gettime: $!";
          my ($s, $ns) = unpack("qq", $ts); return $s + $ns / 1e9; }
my $next = 0;       # Authelia's timeoutReload: no reload before it (0.5 s after the last one)
my $dir = "@TARGET@";
my $fd = syscall($init1, 0);
die "inotify_init1: $!" if $fd < 0;
# fsnotify's watch mask: MODIFY|ATTRIB|MOVED_FROM|MOVED_TO|CREATE|DELETE|DELETE_SELF|MOVE_SELF
my $wd = syscall($add, $fd, $dir, 0x2 | 0x4 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800);
die "inotify_add_watch: $!" if $wd < 0;
open(my $events, "<&=", $fd) or die "fdopen: $!";
print "watching $dir\n";
while (sysread($events, my $buf, 65536)) {
  for (my $off = 0; $off < length $buf;) {
    my ($w, $mask, $cookie, $len) = unpack("iIII", substr($buf, $off, 16));
    my $name = unpack("Z*", substr($buf, $off + 16, $len));
    $off += 16 + $len;
    next unless $name eq "users_database.yml" && ($mask & (0x80 | 0x100 | 0x2));
    my $t = now();
    if ($t < $next) { print "skipped: cooldown\n"; next; }
    $next = $t + 0.5;
    open(my $in, "<", "$dir/$name") or next;
    my @users = map { /^  ([^\s:"]+):\s*$/ ? $1 : () } <$in>;
    print "reload: @users\n";
  }
}
"""


@pytest.fixture
def base_image(docker_engine):
    from apps.base import ensure_base

    return ensure_base(docker_engine).ref


def _labbuild(*args: str) -> None:
    proc = subprocess.run([*LABBUILD, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _wait_for(container, line: str, timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = container.logs().decode().splitlines()
        if line in lines:
            return lines
        time.sleep(0.2)
    raise AssertionError(f"the stand-in never logged {line!r}; it logged: {container.logs().decode()!r}")


@pytest.mark.docker
def test_the_stand_in_watcher_reloads_every_change_through_the_mounted_directory(tmp_path, docker_engine,
                                                                                 base_image):
    inst = door_install(tmp_path)
    _labbuild("users", "add", "root", "--role", "admin", "--dir", str(inst))     # creates DIR/access/
    access = inst / "access"
    name = f"labbuild-test-users-standin-{uuid.uuid4().hex[:8]}"
    dir_mount = docker_engine.containers.run(
        base_image, ["perl", "-e", WATCHER.replace("@TARGET@", USERS_TARGET)], name=name, detach=True, network_mode="none",
        volumes={str(access): {"bind": USERS_TARGET, "mode": "ro"}})
    file_mount = docker_engine.containers.run(
        base_image, ["sleep", "600"], name=name + "-file", detach=True, network_mode="none",
        volumes={str(access / "users_database.yml"): {"bind": "/config/users_database.yml", "mode": "ro"}})
    try:
        _wait_for(dir_mount, f"watching {USERS_TARGET}")
        _labbuild("users", "add", "alice", "--role", "analyst", "--project", "default", "--dir", str(inst))
        _wait_for(dir_mount, "reload: root alice")
        # two changes back to back, in one process (no interpreter start between them): without
        # labbuild's spacing the second would land in the provider's cooldown and be skipped
        add_user(inst, "bob", "user", password="bob-password-1")
        remove_user(inst, "alice")
        lines = _wait_for(dir_mount, "reload: root bob")
        reloads = [ln for ln in lines if ln.startswith("reload:")]
        assert reloads == ["reload: root alice", "reload: root alice bob", "reload: root bob"], lines
        assert "skipped: cooldown" not in lines      # labbuild spaced its writes past the provider's cooldown

        # the control: a file mounted alone keeps the inode it was mounted with
        seen = file_mount.exec_run(["cat", "/config/users_database.yml"]).output.decode()
        assert "root:" in seen and "bob:" not in seen
    finally:
        for c in (dir_mount, file_mount):
            with contextlib.suppress(Exception):
                c.remove(force=True)
