"""How a domain's life ended, read from xl's monitor log (the texts of real xl 4.17)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xenreconcile.exits import (
    ExitReason,
    Life,
    life_of,
    lives_to_read,
    parse_lives,
    read_life,
)
from xenreconcile.models import Domain, GuestMemory, Memory

# Real xl 4.17.7 monitor logs (in-guest poweroff, in-guest reboot that xl restarted
# itself, a crash whose log starts without its "Waiting" line, xl destroy).
POWEROFF = """\
Waiting for domain a (domid 12) to die [pid 357]
Domain 12 has shut down, reason code 0 0x0
Action for shutdown reason code 0 is destroy
Domain 12 needs to be cleaned up: destroying the domain
Done. Exiting now
"""
REBOOT = """\
Waiting for domain c (domid 14) to die [pid 367]
Domain 14 has shut down, reason code 1 0x1
Action for shutdown reason code 1 is restart
Domain 14 needs to be cleaned up: destroying the domain
Done. Rebooting now
Waiting for domain c (domid 16) to die [pid 367]
"""
CRASH = """\
Domain 1 has shut down, reason code 3 0x3
Action for shutdown reason code 3 is destroy
Domain 1 needs to be cleaned up: destroying the domain
Done. Exiting now
"""
DESTROY = """\
Waiting for domain d (domid 15) to die [pid 372]
Domain 15 has been destroyed.
"""
WATCHDOG = """\
Waiting for domain w (domid 7) to die [pid 100]
Domain 7 has shut down, reason code 4 0x4
Action for shutdown reason code 4 is destroy
Domain 7 needs to be cleaned up: destroying the domain
Done. Exiting now
"""
SUSPEND = """\
Waiting for domain s (domid 8) to die [pid 101]
Domain 8 has shut down, reason code 2 0x2
"""
RUNNING = "Waiting for domain r (domid 9) to die [pid 102]\n"


@pytest.mark.parametrize(
    ("text", "domid", "reason", "code", "ended"),
    [
        (POWEROFF, 12, ExitReason.POWEROFF, 0, True),
        (REBOOT, 14, ExitReason.REBOOT, 1, True),
        (REBOOT, 16, ExitReason.UNKNOWN, None, False),  # the life xl restarted runs on
        (CRASH, 1, ExitReason.CRASH, 3, True),
        (DESTROY, 15, ExitReason.DESTROYED, None, True),
        (WATCHDOG, 7, ExitReason.WATCHDOG, 4, True),
        (SUSPEND, 8, ExitReason.UNKNOWN, 2, True),  # suspend has no word: unknown, code kept
        (RUNNING, 9, ExitReason.UNKNOWN, None, False),  # no final line (yet)
    ],
)
def test_real_log_texts_are_classified(
    text: str, domid: int, reason: ExitReason, code: int | None, ended: bool
) -> None:
    life = life_of(parse_lives(text), domid)
    assert life is not None
    assert (life.reason, life.code, life.ended) == (reason, code, ended)


def test_a_life_of_another_domid_is_not_taken() -> None:
    assert life_of(parse_lives(POWEROFF), 13) is None


def test_the_last_life_of_a_domid_wins() -> None:
    # domids restart at 1 after a Dom0 reboot, so one log may hold two lives of domid 1.
    text = CRASH + "Waiting for domain a (domid 1) to die [pid 9]\nDomain 1 has been destroyed.\n"
    assert life_of(parse_lives(text), 1) == Life(1, None, destroyed=True)


def test_unrelated_lines_are_ignored() -> None:
    text = "libxl: error: something\n" + POWEROFF + "garbage (domid x)\n"
    assert parse_lives(text) == [Life(12, 0)]


def write_log(directory: Path, name: str, text: str, suffix: str = "") -> None:
    (directory / f"xl-{name}.log{suffix}").write_text(text, encoding="utf-8")


def test_read_life_reads_the_current_log(tmp_path: Path) -> None:
    write_log(tmp_path, "a", POWEROFF)
    assert read_life(str(tmp_path), "a", 12) == Life(12, 0)


def test_read_life_finds_a_life_rotated_to_dot_1(tmp_path: Path) -> None:
    # Somebody created the guest again (xl rotated the log) before we read it.
    write_log(tmp_path, "d", DESTROY, ".1")
    write_log(tmp_path, "d", "Waiting for domain d (domid 20) to die [pid 400]\n")
    assert read_life(str(tmp_path), "d", 15) == Life(15, None, destroyed=True)
    assert read_life(str(tmp_path), "d", 20) == Life(20)


def test_read_life_of_a_domid_in_no_log_is_none(tmp_path: Path) -> None:
    write_log(tmp_path, "a", POWEROFF)
    assert read_life(str(tmp_path), "a", 99) is None
    assert read_life(str(tmp_path), "missing", 12) is None


def test_read_life_does_not_follow_a_symlink(tmp_path: Path) -> None:
    write_log(tmp_path, "real", POWEROFF)
    os.symlink(tmp_path / "xl-real.log", tmp_path / "xl-a.log")
    assert read_life(str(tmp_path), "a", 12) is None


def dom(name: str, domid: int, flags: str = "-b----") -> Domain:
    return Domain(name, domid, 512, 1, flags, 1.0)


def test_lives_to_read_are_the_remembered_lives_no_longer_listed() -> None:
    memory = Memory(
        guests={
            "gone": GuestMemory(life_domid=3),
            "same": GuestMemory(life_domid=4),
            "new": GuestMemory(life_domid=5),
            "dying": GuestMemory(life_domid=6),
            "never": GuestMemory(),
        }
    )
    listing = (dom("same", 4), dom("new", 7), dom("dying", 6, "-----d"), dom("never", 8))
    assert lives_to_read(memory, listing) == {"gone": 3, "new": 5, "dying": 6}
    assert lives_to_read(memory, None) == {}
