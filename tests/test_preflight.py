"""Which needs Dom0 does not meet yet: one look per pass, and the daemon waiting."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.daemon_harness import DaemonRun
from xenreconcile.models import DesiredGuest, DesiredState
from xenreconcile.preflight import Preflight, linux_interfaces, parse_ifconfig_list
from xenreconcile.simxl import wait_until as wait_for

# `ifconfig -l` as FreeBSD prints it on a Dom0 set up as the Handbook says.
FREEBSD_IFCONFIG_L = "em0 lo0 bridge0 xnb1.0 xnb2.0\n"


def cfg_text(name: str, disk: str, bridge: str = "bridge0") -> str:
    """A guest cfg with one disk, a cdrom whose image is gone, and one vif."""
    return (
        f'name = "{name}"\nkernel = "/dev/null"\nmemory = 128\n'
        f"disk = [ '{disk},raw,xvda,rw', '/gone/install.iso,raw,hdc:cdrom,r' ]\n"
        f"vif = [ 'bridge={bridge}' ]\n"
    )


class Files:
    """Guest files by path, as a scanner hands out their checked bytes."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.reads = 0

    def add(self, name: str, text: str) -> DesiredGuest:
        """Store a guest file; return its desired guest."""
        data = text.encode()
        path = f"/guests/{name}.cfg"
        self.data[path] = data
        return DesiredGuest(name, path, hashlib.sha256(data).hexdigest())

    def checked_bytes(self, path: str, cfg_hash: str) -> bytes | None:
        """The bytes of `path` (counted)."""
        self.reads += 1
        return self.data.get(path)


def test_parse_ifconfig_list() -> None:
    """The recorded FreeBSD output gives each interface name."""
    names = parse_ifconfig_list(FREEBSD_IFCONFIG_L)
    assert names == {"em0", "lo0", "bridge0", "xnb1.0", "xnb2.0"}


def test_linux_interfaces(tmp_path: Path) -> None:
    """/sys/class/net's entries are the interfaces; an unreadable one gives None."""
    for name in ("lo", "eth0", "xenbr0"):
        (tmp_path / name).mkdir()
    assert linux_interfaces(str(tmp_path)) == {"lo", "eth0", "xenbr0"}
    assert linux_interfaces(str(tmp_path / "none")) is None


def test_unmet_paths_and_bridges_one_look_per_pass() -> None:
    """Missing disks and bridges are named per guest; each path is looked at once and
    the interfaces listed once, however many guests share them; cdroms never count."""
    files = Files()
    web = files.add("web", cfg_text("web", "/dev/zvol/tank/web"))
    db = files.add("db", cfg_text("db", "/dev/zvol/tank/web", bridge="bridge1"))
    ok = files.add("ok", cfg_text("ok", "/dev/null"))
    looked: list[str] = []
    listed: list[int] = []

    def exists(path: str) -> bool:
        looked.append(path)
        return path == "/dev/null"

    def interfaces() -> frozenset[str]:
        listed.append(1)
        return parse_ifconfig_list(FREEBSD_IFCONFIG_L)

    preflight = Preflight(files.checked_bytes, exists=exists, interfaces=interfaces)
    unmet = preflight.unmet(DesiredState(guests=(web, db, ok)))
    assert unmet == {
        "web": ("/dev/zvol/tank/web",),
        "db": ("/dev/zvol/tank/web", "bridge bridge1"),
    }
    assert sorted(looked) == ["/dev/null", "/dev/zvol/tank/web"]
    assert len(listed) == 1


def test_needs_parsed_once_per_content() -> None:
    """An unchanged file is not read or parsed again on the next pass."""
    files = Files()
    web = files.add("web", cfg_text("web", "/dev/null"))
    preflight = Preflight(files.checked_bytes, exists=lambda _p: True, interfaces=frozenset)
    for _ in range(3):
        preflight.unmet(DesiredState(guests=(web,)))
    assert files.reads == 1


def test_unknown_interfaces_do_not_block() -> None:
    """When the interfaces cannot be listed, bridges are left to xl that pass."""
    files = Files()
    web = files.add("web", cfg_text("web", "/dev/null", bridge="bridge9"))
    preflight = Preflight(files.checked_bytes, exists=lambda _p: True, interfaces=lambda: None)
    assert preflight.unmet(DesiredState(guests=(web,))) == {}


def test_daemon_waits_for_a_disk_then_creates_with_no_failure(tmp_path: Path) -> None:
    """A guest whose disk appears later is *waiting*, then created: zero failures."""
    run = DaemonRun(tmp_path, interval="0.3s")
    disk = tmp_path / "disks" / "web.img"
    run.add_guest("web", text=cfg_text("web", str(disk), bridge="lo"))
    run.start()
    try:
        wait_for(lambda: run.events("guest_waiting", "web"), 15, "the guest to wait")
        [waiting] = run.events("guest_waiting", "web")
        assert waiting["error"] == f"waiting for {disk}"
        assert run.running() == set()
        status = run.cli("status")
        assert "waiting" in status.stdout
        assert f"waiting for {disk}" in status.stdout
        check = run.cli("check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"wait  web  {run.guests_dir / 'web.cfg'}: waiting for {disk}" in check.stdout
        disk.parent.mkdir()
        disk.write_bytes(b"")
        wait_for(lambda: "web" in run.running(), 15, "the guest to be created")
        assert run.events("create_failed") == []
        doc = run.status()
        [web] = [g for g in doc["guests"] if g["name"] == "web"]
        assert (web["state"], web["attempts"]) == ("running", 0)
    finally:
        run.kill()
