"""The guests-directory scan: which files count, unsafe files, the fingerprint cache."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import minimal_cfg as cfg
from xenreconcile import guestdir, xlcfg
from xenreconcile.guestdir import MAX_CFG_BYTES, GuestDirScanner
from xenreconcile.models import DesiredGuest, DesiredState, InvalidFile

FOREIGN_UID = 4321
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


@pytest.fixture
def guests(tmp_path: Path) -> Path:
    path = tmp_path / "guests"
    path.mkdir()
    path.chmod(0o755)
    return path


def write(directory: Path, filename: str, text: str | bytes, mode: int = 0o644) -> Path:
    path = directory / filename
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)
    return path


def scan(directory: Path, **kwargs: Any) -> DesiredState:
    return scan_within_deadline(GuestDirScanner(str(directory), **kwargs).scan)


def scan_within_deadline(func: Callable[[], DesiredState], seconds: float = 10) -> DesiredState:
    """Run `func` in a thread; fail (instead of hanging) when it blocks."""
    result: list[DesiredState] = []
    thread = threading.Thread(target=lambda: result.append(func()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the scan blocked"
    return result[0]


def names(state: DesiredState) -> list[str]:
    return [guest.name for guest in state.guests]


def only_invalid(state: DesiredState) -> InvalidFile:
    assert state.error is None
    assert len(state.invalid) == 1, state.invalid
    return state.invalid[0]


# --- which files count --------------------------------------------------------------------


def test_valid_guest(guests: Path) -> None:
    path = write(guests, "web.cfg", cfg("web1"))
    state = scan(guests)
    assert state == DesiredState(
        guests=(
            DesiredGuest(
                name="web1",
                path=str(path),
                cfg_hash=hashlib.sha256(cfg("web1").encode()).hexdigest(),
            ),
        )
    )


def test_only_visible_cfg_files_directly_in_the_dir_count(guests: Path) -> None:
    write(guests, "a.cfg", cfg("a"))
    for ignored in ("b.cfg~", "c.cfg.disabled", ".d.cfg.swp", ".e.cfg", "notes.txt", "cfg"):
        write(guests, ignored, cfg(ignored))
    (guests / "sub.cfg").mkdir()
    (guests / "sub").mkdir()
    write(guests / "sub", "nested.cfg", cfg("nested"))
    state = scan(guests)
    assert names(state) == ["a"]
    assert state.invalid == ()


def test_guests_are_sorted_by_name_and_paths_absolute(
    guests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(guests, "1.cfg", cfg("zeta"))
    write(guests, "2.cfg", cfg("alpha"))
    monkeypatch.chdir(guests.parent)
    state = GuestDirScanner("guests").scan()
    assert names(state) == ["alpha", "zeta"]
    assert state.guests[0].path == str(guests / "2.cfg")


def test_symlink_to_a_regular_file_counts(guests: Path, tmp_path: Path) -> None:
    target = write(tmp_path, "real.cfg", cfg("linked"))
    (guests / "linked.cfg").symlink_to(target)
    state = scan(guests)
    assert state.guests == (
        DesiredGuest(
            "linked", str(guests / "linked.cfg"), hashlib.sha256(target.read_bytes()).hexdigest()
        ),
    )


def test_fifo_named_cfg_is_ignored_and_does_not_block(guests: Path) -> None:
    os.mkfifo(guests / "pipe.cfg")
    write(guests, "a.cfg", cfg("a"))
    state = scan(guests)
    assert names(state) == ["a"]
    assert state.invalid == ()


def test_symlink_to_fifo_is_invalid_and_does_not_block(guests: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (guests / "pipe.cfg").symlink_to(tmp_path / "pipe")
    invalid = only_invalid(scan(guests))
    assert "not a regular file (a FIFO)" in invalid.reason


def test_fifo_swapped_in_after_the_stat_is_refused_without_blocking(guests: Path) -> None:
    os.mkfifo(guests / "late.cfg")
    scanner = GuestDirScanner(str(guests))
    outcome: list[object] = []
    thread = threading.Thread(
        target=lambda: outcome.append(scanner._read(str(guests / "late.cfg"))),
        daemon=True,
    )
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "opening a FIFO blocked"
    assert outcome == [InvalidFile(str(guests / "late.cfg"), "not a regular file (a FIFO)")]


def test_symlink_to_dev_zero_is_refused(guests: Path) -> None:
    (guests / "zero.cfg").symlink_to("/dev/zero")
    invalid = scan_within_deadline(GuestDirScanner(str(guests)).scan).invalid[0]
    assert invalid.path == str(guests / "zero.cfg")
    assert "not a regular file (a character device)" in invalid.reason


def test_symlink_loop_is_refused(guests: Path) -> None:
    (guests / "a.cfg").symlink_to(guests / "b.cfg")
    (guests / "b.cfg").symlink_to(guests / "a.cfg")
    state = scan(guests)
    assert [item.path for item in state.invalid] == [str(guests / "a.cfg"), str(guests / "b.cfg")]
    assert all("symlink loop" in item.reason for item in state.invalid)


def test_dangling_symlink_is_reported(guests: Path) -> None:
    (guests / "gone.cfg").symlink_to("/nonexistent/gone.cfg")
    assert only_invalid(scan(guests)).reason == "dangling symlink to /nonexistent/gone.cfg"


# --- invalid content ----------------------------------------------------------------------


def test_file_of_exactly_1_mib_is_read(guests: Path) -> None:
    head = cfg("big")
    write(guests, "big.cfg", head + "#" * (MAX_CFG_BYTES - len(head) - 1) + "\n")
    assert names(scan(guests)) == ["big"]


def test_file_over_1_mib_is_invalid(guests: Path) -> None:
    head = cfg("big")
    write(guests, "big.cfg", head + "#" * (MAX_CFG_BYTES - len(head)) + "\n")
    invalid = only_invalid(scan(guests))
    assert invalid.reason == "larger than 1 MiB"
    assert invalid.name is None


def test_non_utf8_file_names_line_column_and_offset(guests: Path) -> None:
    write(guests, "latin1.cfg", b'name = "g1"\n# caf\xe9\n')
    invalid = only_invalid(scan(guests))
    assert invalid.reason == "not UTF-8: invalid byte 0xe9 at byte offset 17"
    assert (invalid.line, invalid.column) == (2, 6)


def test_empty_file_is_invalid(guests: Path) -> None:
    write(guests, "empty.cfg", "")
    assert only_invalid(scan(guests)).reason == "empty file (no name)"


def test_unparsable_file_is_invalid_with_its_line(guests: Path) -> None:
    write(guests, "ok.cfg", cfg("ok"))
    write(guests, "bad.cfg", "memory = 128\nname = \n")
    state = scan(guests)
    assert names(state) == ["ok"]
    invalid = only_invalid(state)
    assert invalid.path == str(guests / "bad.cfg")
    assert invalid.line == 2
    assert invalid.reason


def test_name_starting_with_a_no_break_space_is_invalid_with_its_line(guests: Path) -> None:
    write(guests, "pasted.cfg", 'memory = 128\nname = "\u00a0web"\n')
    write(guests, "a.cfg", cfg("a"))
    state = scan(guests)
    assert names(state) == ["a"]
    invalid = only_invalid(state)
    assert (invalid.path, invalid.line, invalid.column) == (str(guests / "pasted.cfg"), 2, 1)
    assert "U+00A0 NO-BREAK SPACE" in invalid.reason


def test_file_without_a_name_is_invalid(guests: Path) -> None:
    write(guests, "anon.cfg", "memory = 128\n")
    invalid = only_invalid(scan(guests))
    assert "name" in invalid.reason
    assert invalid.line is None


def test_duplicate_names_are_kept_apart(guests: Path) -> None:
    write(guests, "one.cfg", cfg("twin"))
    write(guests, "two.cfg", cfg("twin"))
    write(guests, "other.cfg", cfg("other"))
    state = scan(guests)
    assert names(state) == ["other"]
    assert state.duplicates == {"twin": (str(guests / "one.cfg"), str(guests / "two.cfg"))}
    assert state.invalid == ()


# --- permissions --------------------------------------------------------------------------


@needs_root
def test_file_owned_by_another_user_is_refused(guests: Path) -> None:
    path = write(guests, "foreign.cfg", cfg("foreign"))
    os.chown(path, FOREIGN_UID, -1)
    invalid = only_invalid(scan(guests))
    assert f"owned by uid {FOREIGN_UID}" in invalid.reason
    assert names(scan(guests, allowed_uids={0, FOREIGN_UID})) == ["foreign"]
    assert names(scan(guests, strict_permissions=False)) == ["foreign"]


@pytest.mark.parametrize(("mode", "shown"), [(0o664, "0664"), (0o646, "0646"), (0o666, "0666")])
def test_file_writable_by_group_or_others_is_refused(guests: Path, mode: int, shown: str) -> None:
    write(guests, "loose.cfg", cfg("loose"), mode=mode)
    invalid = only_invalid(scan(guests))
    assert f"mode {shown} is writable by group or others" in invalid.reason
    assert names(scan(guests, strict_permissions=False)) == ["loose"]


def test_read_only_and_private_modes_are_fine(guests: Path) -> None:
    write(guests, "a.cfg", cfg("a"), mode=0o600)
    write(guests, "b.cfg", cfg("b"), mode=0o444)
    assert names(scan(guests)) == ["a", "b"]


def test_group_writable_directory_is_an_error(guests: Path) -> None:
    write(guests, "a.cfg", cfg("a"))
    guests.chmod(0o775)
    state = scan(guests)
    assert state.guests == ()
    assert state.error is not None
    assert str(guests) in state.error
    assert "mode 0775 is writable by group or others" in state.error
    assert names(scan(guests, strict_permissions=False)) == ["a"]


@needs_root
def test_directory_owned_by_another_user_is_an_error(guests: Path) -> None:
    os.chown(guests, FOREIGN_UID, -1)
    state = scan(guests)
    assert state.error is not None
    assert f"owned by uid {FOREIGN_UID}" in state.error


@needs_root
def test_symlink_target_owned_by_another_user_is_refused(guests: Path, tmp_path: Path) -> None:
    target = write(tmp_path, "real.cfg", cfg("linked"))
    os.chown(target, FOREIGN_UID, -1)
    (guests / "linked.cfg").symlink_to(target)
    invalid = only_invalid(scan(guests))
    assert f"unsafe symlink target {target}" in invalid.reason
    assert f"owned by uid {FOREIGN_UID}" in invalid.reason


def test_symlink_target_in_a_writable_directory_is_refused(guests: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    target = write(shared, "real.cfg", cfg("linked"))
    (guests / "linked.cfg").symlink_to(target)
    invalid = only_invalid(scan(guests))
    assert f"unsafe directory {shared}" in invalid.reason
    assert "mode 0777" in invalid.reason


# --- every component on the way -----------------------------------------------------------


def foreign_dir(parent: Path, name: str, mode: int = 0o755) -> Path:
    """A directory owned by another user (who can rename or replace what is in it)."""
    path = parent / name
    path.mkdir()
    path.chmod(mode)
    os.chown(path, FOREIGN_UID, -1)
    return path


@needs_root
def test_symlink_through_a_user_owned_directory_is_refused(guests: Path, tmp_path: Path) -> None:
    inner = foreign_dir(tmp_path, "home") / "etc"
    inner.mkdir(mode=0o755)
    target = write(inner, "real.cfg", cfg("linked"))
    (guests / "linked.cfg").symlink_to(target)
    invalid = only_invalid(scan(guests))
    assert f"unsafe directory {tmp_path / 'home'} (owner uid {FOREIGN_UID}" in invalid.reason
    assert "mode 0755) is not owned by uid 0 (root)" in invalid.reason
    assert f"on the way to symlink target {target}" in invalid.reason
    assert names(scan(guests, strict_permissions=False)) == ["linked"]


@needs_root
def test_symlink_through_a_user_owned_symlink_is_refused(guests: Path, tmp_path: Path) -> None:
    target = write(tmp_path, "real.cfg", cfg("linked"))
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    hop = sticky / "hop.cfg"
    hop.symlink_to(target)
    os.lchown(hop, FOREIGN_UID, -1)  # its owner may replace it, even in a sticky directory
    (guests / "linked.cfg").symlink_to(hop)
    invalid = only_invalid(scan(guests))
    assert f"unsafe symlink {hop} (owner uid {FOREIGN_UID}" in invalid.reason
    os.lchown(hop, 0, -1)
    assert names(scan(guests)) == ["linked"]


def test_symlink_with_a_relative_target_is_resolved_from_its_directory(
    guests: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    write(shared, "real.cfg", cfg("linked"))
    (guests / "linked.cfg").symlink_to("../shared/./real.cfg")
    assert names(scan(guests)) == ["linked"]
    shared.chmod(0o777)
    assert f"unsafe directory {shared}" in only_invalid(scan(guests)).reason


@needs_root
def test_guests_dir_inside_a_user_owned_directory_is_an_error(tmp_path: Path) -> None:
    guests = foreign_dir(tmp_path, "alice") / "guests"
    guests.mkdir(mode=0o755)
    write(guests, "a.cfg", cfg("a"))
    state = scan(guests)
    assert state.guests == ()
    assert state.error is not None
    assert state.error.startswith(f"guests directory {guests} is unsafe: on the way to it, ")
    assert f"directory {tmp_path / 'alice'} (owner uid {FOREIGN_UID}, mode 0755)" in state.error
    assert names(scan(guests, strict_permissions=False)) == ["a"]


@needs_root
def test_guests_dir_behind_a_user_owned_symlink_is_an_error(guests: Path, tmp_path: Path) -> None:
    write(guests, "a.cfg", cfg("a"))
    link = tmp_path / "xen"
    link.symlink_to(guests)
    os.lchown(link, FOREIGN_UID, -1)
    state = scan(link)
    assert state.error is not None
    assert f"symlink {link} (owner uid {FOREIGN_UID}" in state.error
    os.lchown(link, 0, -1)
    assert names(scan(link)) == ["a"]


def test_guests_dir_inside_a_world_writable_directory_is_an_error(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    guests = shared / "guests"
    guests.mkdir(mode=0o755)
    write(guests, "a.cfg", cfg("a"))
    state = scan(guests)
    assert state.error is not None
    assert f"directory {shared} (owner uid 0 (root), mode 0777)" in state.error
    assert "is writable by group or others (and not sticky)" in state.error


def test_root_owned_sticky_ancestor_is_accepted(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    guests = sticky / "guests"
    guests.mkdir(mode=0o755)
    write(guests, "a.cfg", cfg("a"))
    target = write(sticky, "real.cfg", cfg("linked"))
    (guests / "linked.cfg").symlink_to(target)
    assert names(scan(guests)) == ["a", "linked"]


def test_a_sticky_guests_dir_itself_is_still_refused(tmp_path: Path) -> None:
    guests = tmp_path / "guests"
    guests.mkdir()
    guests.chmod(0o1777)
    state = scan(guests)
    assert state.error is not None
    assert "mode 1777 is writable by group or others" in state.error


def test_checked_bytes_are_those_of_the_scan_not_of_the_file_now(guests: Path) -> None:
    path = write(guests, "a.cfg", cfg("a"))
    scanner = GuestDirScanner(str(guests))
    (guest,) = scanner.scan().guests
    write(guests, "a.cfg", cfg("evil"))
    assert scanner.checked_bytes(guest.path, guest.cfg_hash) == cfg("a").encode()
    assert scanner.checked_bytes(guest.path, "0" * 64) is None
    assert scanner.checked_bytes(str(guests / "other.cfg"), guest.cfg_hash) is None
    scanner.scan()
    assert scanner.checked_bytes(str(path), guest.cfg_hash) is None


# --- the directory itself -----------------------------------------------------------------


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    state = scan(tmp_path / "absent")
    assert state == DesiredState(error=f"guests directory {tmp_path / 'absent'} does not exist")


def test_directory_replaced_by_a_file_is_an_error_and_recovers(guests: Path) -> None:
    write(guests, "a.cfg", cfg("a"))
    scanner = GuestDirScanner(str(guests))
    assert names(scanner.scan()) == ["a"]
    (guests / "a.cfg").unlink()
    guests.rmdir()
    guests.write_text("oops")
    assert scanner.scan() == DesiredState(error=f"guests directory {guests} is not a directory")
    guests.unlink()
    guests.mkdir(mode=0o755)
    write(guests, "b.cfg", cfg("b"))
    assert names(scanner.scan()) == ["b"]


# --- the fingerprint cache ----------------------------------------------------------------


@pytest.fixture
def parse_count(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts parse_cfg calls per file and reads of file content."""
    counts: dict[str, int] = {}
    real_parse = xlcfg.parse_cfg
    real_read = guestdir._read_at_most

    def counting_parse(text: str, filename: str = "<string>") -> xlcfg.XlCfg:
        counts[os.path.basename(filename)] = counts.get(os.path.basename(filename), 0) + 1
        return real_parse(text, filename)

    def counting_read(fd: int, limit: int) -> bytes:
        counts["reads"] = counts.get("reads", 0) + 1
        return real_read(fd, limit)

    monkeypatch.setattr(xlcfg, "parse_cfg", counting_parse)
    monkeypatch.setattr(guestdir, "_read_at_most", counting_read)
    return counts


def test_unchanged_files_are_not_read_again(guests: Path, parse_count: dict[str, int]) -> None:
    write(guests, "a.cfg", cfg("a"))
    write(guests, "bad.cfg", "name = \n")
    scanner = GuestDirScanner(str(guests))
    first = scanner.scan()
    second = scanner.scan()
    assert second == first
    assert names(second) == ["a"]
    assert len(second.invalid) == 1
    assert parse_count == {"a.cfg": 1, "bad.cfg": 1, "reads": 2}


def test_changed_file_is_read_again(guests: Path, parse_count: dict[str, int]) -> None:
    write(guests, "a.cfg", cfg("a"))
    write(guests, "b.cfg", cfg("b"))
    scanner = GuestDirScanner(str(guests))
    scanner.scan()
    write(guests, "a.cfg", cfg("renamed"))
    state = scanner.scan()
    assert names(state) == ["b", "renamed"]
    assert parse_count == {"a.cfg": 2, "b.cfg": 1, "reads": 3}


def test_touched_file_is_read_again(guests: Path, parse_count: dict[str, int]) -> None:
    path = write(guests, "a.cfg", cfg("a"))
    scanner = GuestDirScanner(str(guests))
    scanner.scan()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    scanner.scan()
    assert parse_count["a.cfg"] == 2


def test_replaced_file_of_same_size_is_read_again(
    guests: Path, parse_count: dict[str, int]
) -> None:
    path = write(guests, "a.cfg", cfg("a"))
    scanner = GuestDirScanner(str(guests))
    scanner.scan()
    stat = path.stat()
    write(guests, "new.tmp", cfg("b"))
    os.utime(guests / "new.tmp", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(guests / "new.tmp", path)
    assert names(scanner.scan()) == ["b"]
    assert parse_count["a.cfg"] == 2


def test_permissions_are_checked_on_every_pass(guests: Path, parse_count: dict[str, int]) -> None:
    path = write(guests, "a.cfg", cfg("a"))
    scanner = GuestDirScanner(str(guests))
    assert names(scanner.scan()) == ["a"]
    path.chmod(0o666)
    assert "writable by group or others" in only_invalid(scanner.scan()).reason
    path.chmod(0o644)
    assert names(scanner.scan()) == ["a"]


def test_vanished_files_leave_the_cache(guests: Path) -> None:
    write(guests, "a.cfg", cfg("a"))
    write(guests, "b.cfg", cfg("b"))
    scanner = GuestDirScanner(str(guests))
    scanner.scan()
    (guests / "a.cfg").unlink()
    assert names(scanner.scan()) == ["b"]
    assert list(scanner._cache) == [str(guests / "b.cfg")]
