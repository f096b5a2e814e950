"""`xl create` reads the very bytes the scan checked, from an unnamed file, never the path."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import simxl_daemon
from xenreconcile.daemon import Daemon
from xenreconcile.guestdir import GuestDirScanner
from xenreconcile.models import CreateAction, CreateResult, DesiredState
from xenreconcile.simxl import SimXl
from xenreconcile.xl import NOT_RUN, STDIN_PATH, XlRunner, create_checked

GOOD = 'name = "good"\ntype = "pv"\nkernel = "/boot/vmlinuz"\nmemory = 128\n'
EVIL = 'name = "evil"\ntype = "pv"\nbootloader = "/home/mallory/rootkit"\nmemory = 128\n'


def action_for(path: Path, data: bytes, name: str = "good") -> CreateAction:
    return CreateAction(name, str(path), hashlib.sha256(data).hexdigest())


# --- what xl is given to read ---------------------------------------------------------------


def test_xl_reads_the_checked_bytes_from_an_unnamed_file(simxl: SimXl) -> None:
    result = XlRunner(simxl.command).create_from_bytes(GOOD.encode(), "/guests/good.cfg")
    assert result.ok, result.stderr_tail
    (call,) = simxl.creates()
    assert (call["argv"], call["name"]) == (["create", STDIN_PATH], "good")
    assert simxl.names() == ["good"]
    assert result.stderr_tail == "Parsing config from /guests/good.cfg"


def test_xls_messages_name_the_original_file(simxl: SimXl) -> None:
    simxl.set_faults(create_fail={"good": "parse"})
    result = XlRunner(simxl.command).create_from_bytes(GOOD.encode(), "/guests/good.cfg")
    assert not result.ok
    assert result.stderr_tail.splitlines()[:2] == [
        "Parsing config from /guests/good.cfg",
        "/guests/good.cfg:1: config parsing error near `is': syntax error, "
        "unexpected IDENT, expecting += or '='",
    ]


def test_without_memfd_a_removed_temporary_file_holds_the_bytes(
    simxl: SimXl, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memfd(_name: str) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    assert XlRunner(simxl.command).create_from_bytes(GOOD.encode(), "/guests/good.cfg").ok
    assert simxl.names() == ["good"]


@pytest.mark.parametrize("data", [None, EVIL.encode()])
def test_bytes_that_are_not_the_checked_ones_never_reach_xl(
    tmp_path: Path, data: bytes | None
) -> None:
    given: list[bytes] = []

    def create_from_bytes(content: bytes, _shown: str) -> CreateResult:
        given.append(content)
        return CreateResult(ok=True, exit_code=0)

    action = action_for(tmp_path / "g.cfg", GOOD.encode())
    result = create_checked(create_from_bytes, action, data)
    assert given == []
    assert not result.ok
    assert result.exit_code == NOT_RUN
    assert "the content checked by the scan is not at hand" in result.stderr_tail


def test_the_checked_bytes_are_handed_on(tmp_path: Path) -> None:
    given: list[tuple[bytes, str]] = []

    def create_from_bytes(content: bytes, shown: str) -> CreateResult:
        given.append((content, shown))
        return CreateResult(ok=True, exit_code=0)

    data = GOOD.encode()
    assert create_checked(create_from_bytes, action_for(tmp_path / "g.cfg", data), data).ok
    assert given == [(data, str(tmp_path / "g.cfg"))]


# --- the daemon's create path ---------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path, simxl: SimXl) -> Iterator[Daemon]:
    yield simxl_daemon(tmp_path, simxl.command)


def swap_after_first_scan(scanner: GuestDirScanner, swap: Callable[[], None]) -> None:
    """Make `scanner` run `swap()` right after its first scan, as an attacker
    racing the daemon between the check and `xl create` would."""
    real_scan = scanner.scan
    calls = []

    def scan() -> DesiredState:
        state = real_scan()
        if not calls:
            calls.append(1)
            swap()
        return state

    scanner.scan = scan  # type: ignore[method-assign]


def one_pass(daemon: Daemon) -> None:
    """One pass and the creates it starts, waited for. (`run --once` would go on
    and, its file having changed, create what the swapped file now says: a
    create of its own, not the checked one.)"""
    daemon.start()
    try:
        daemon.run_pass(daemon.clock.monotonic())
        daemon.workers.join(lambda: None)
    finally:
        daemon.keeper.unlock()


def test_a_file_swapped_between_scan_and_create_never_reaches_xl(
    daemon: Daemon, simxl: SimXl, tmp_path: Path
) -> None:
    path = tmp_path / "guests" / "good.cfg"
    path.write_text(GOOD)

    def swap() -> None:
        evil = tmp_path / "guests" / ".evil.tmp"
        evil.write_text(EVIL)
        os.replace(evil, path)

    swap_after_first_scan(daemon.scanner, swap)
    one_pass(daemon)
    assert [c.get("name") for c in simxl.creates()] == ["good"]
    assert "evil" not in simxl.names()


def test_a_symlink_repointed_between_scan_and_create_never_reaches_xl(
    daemon: Daemon, simxl: SimXl, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    (real / "good.cfg").write_text(GOOD)
    (real / "evil.cfg").write_text(EVIL)
    link = tmp_path / "guests" / "good.cfg"
    link.symlink_to(real / "good.cfg")

    def repoint() -> None:
        link.unlink()
        link.symlink_to(real / "evil.cfg")

    swap_after_first_scan(daemon.scanner, repoint)
    one_pass(daemon)
    assert [c.get("name") for c in simxl.creates()] == ["good"]
    assert "evil" not in simxl.names()
