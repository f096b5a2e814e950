"""`xl create` reads the very bytes the scan checked: a private copy, never the path again."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xenreconcile import logs
from xenreconcile.config import parse_config
from xenreconcile.daemon import Daemon
from xenreconcile.guestdir import GuestDirScanner
from xenreconcile.models import CreateAction, CreateResult, DesiredState
from xenreconcile.simxl import SimXl
from xenreconcile.xl import CFG_COPY_DIR, NOT_RUN, XlRunner, create_checked, private_copy

GOOD = 'name = "good"\ntype = "pv"\nkernel = "/boot/vmlinuz"\nmemory = 128\n'
EVIL = 'name = "evil"\ntype = "pv"\nbootloader = "/home/mallory/rootkit"\nmemory = 128\n'


def action_for(path: Path, data: bytes, name: str = "good") -> CreateAction:
    return CreateAction(name, str(path), hashlib.sha256(data).hexdigest())


class Recorder:
    """A stand-in for `XlRunner.create` that keeps what it was given to read."""

    def __init__(self, output: str = "") -> None:
        self.output = output
        self.seen: list[tuple[str, bytes, int]] = []

    def create(self, path: str) -> CreateResult:
        st = os.stat(path)
        self.seen.append((path, Path(path).read_bytes(), stat.S_IMODE(st.st_mode)))
        return CreateResult(ok=False, exit_code=1, stderr_tail=self.output.format(path=path))


# --- the copy ------------------------------------------------------------------------------


def test_xl_reads_a_private_copy_that_is_removed_afterwards(tmp_path: Path) -> None:
    data = GOOD.encode()
    copies = tmp_path / "state" / CFG_COPY_DIR
    (tmp_path / "state").mkdir(mode=0o755)
    recorder = Recorder()
    create_checked(recorder.create, action_for(tmp_path / "g.cfg", data), data, str(copies))
    ((path, seen, mode),) = recorder.seen
    assert Path(path).parent == copies
    assert (seen, mode) == (data, 0o600)
    assert stat.S_IMODE(copies.stat().st_mode) == 0o700
    assert list(copies.iterdir()) == []


def test_xls_messages_name_the_original_file(tmp_path: Path) -> None:
    data = GOOD.encode()
    original = tmp_path / "guests" / "g.cfg"
    recorder = Recorder("Parsing config from {path}\n{path}:3: config parsing error\n")
    result = create_checked(
        recorder.create, action_for(original, data), data, str(tmp_path / "copies")
    )
    assert result.stderr_tail == (
        f"Parsing config from {original}\n{original}:3: config parsing error\n"
    )


@pytest.mark.parametrize("data", [None, EVIL.encode()])
def test_bytes_that_are_not_the_checked_ones_never_reach_xl(
    tmp_path: Path, data: bytes | None
) -> None:
    recorder = Recorder()
    action = action_for(tmp_path / "g.cfg", GOOD.encode())
    result = create_checked(recorder.create, action, data, str(tmp_path / "copies"))
    assert recorder.seen == []
    assert not result.ok
    assert result.exit_code == NOT_RUN
    assert "the content checked by the scan is not at hand" in result.stderr_tail


def test_an_unsafe_copy_directory_is_refused(tmp_path: Path) -> None:
    copies = tmp_path / "copies"
    copies.mkdir()
    copies.chmod(0o777)
    recorder = Recorder()
    data = GOOD.encode()
    result = create_checked(
        recorder.create, action_for(tmp_path / "g.cfg", data), data, str(copies)
    )
    assert recorder.seen == []
    assert result.exit_code == NOT_RUN
    assert f"{copies} is unsafe: mode 0777 is writable by group or others" in result.stderr_tail


def test_a_symlink_planted_as_the_copy_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "copies").symlink_to(elsewhere)
    with (
        pytest.raises(OSError, match="not a directory"),
        private_copy(str(tmp_path / "copies"), b"x", "0" * 64),
    ):
        pass
    assert list(elsewhere.iterdir()) == []


def test_stale_copies_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    copies = tmp_path / "copies"
    copies.mkdir(mode=0o700)
    stale, fresh = copies / "old.cfg", copies / "new.cfg"
    stale.write_text("x")
    fresh.write_text("y")
    os.utime(stale, (1.0, 1.0))
    with private_copy(str(copies), b"z", "0" * 64) as path:
        assert sorted(copies.iterdir()) == sorted([fresh, Path(path)])


# --- the daemon's create path ---------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path, simxl: SimXl) -> Iterator[Daemon]:
    guests = tmp_path / "guests"
    guests.mkdir(mode=0o755)
    config = parse_config(
        f"guests_dir: {guests}\nstate_dir: {tmp_path / 'state'}\n"
        f"log_file: {tmp_path / 'daemon.log'}\nlog_format: json\n",
        "test.yaml",
    )
    logs.configure(config.log_file, config.log_format, config.log_level)
    yield Daemon(
        config,
        runner=XlRunner(simxl.command),
        boot_time=lambda: 1000.0,
        use_watcher=False,
    )


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
    daemon.run_once()
    assert [c.get("name") for c in simxl.creates()] == ["good"]
    assert "evil" not in simxl.names()
    assert list((tmp_path / "state" / CFG_COPY_DIR).iterdir()) == []


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
    daemon.run_once()
    assert [c.get("name") for c in simxl.creates()] == ["good"]
    assert "evil" not in simxl.names()
