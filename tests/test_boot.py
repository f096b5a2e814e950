"""Which Dom0 boot this is: reading the kernel's boot id, boot time and uptime, and
telling a reboot from a step of the wall clock."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from xenreconcile.models import Memory
from xenreconcile.simxl import SimXl
from xenreconcile.state import (
    BOOT_FILE_ENV,
    Boot,
    decode_memory,
    encode_memory,
    parse_boot_file,
    parse_kern_boot_id,
    parse_kern_boottime,
    parse_linux_boot_id,
    parse_proc_stat_btime,
    read_boot,
    same_boot,
    saved_boot,
)

HOUR = 3600.0
BOOTED = 1_700_000_000.0
ID_A = "6b1f3c1e-2a57-4b8e-9a59-0c8d1b8c9a11"
ID_B = "0f0e7d52-8f7a-4c1d-b0a4-6f7b5c2e9d33"

# --- reading the boot -------------------------------------------------------------------------


def test_boot_file_gives_id_time_and_the_uptime_since(tmp_path: Path) -> None:
    path = tmp_path / "boot"
    path.write_text(f"boot_id {ID_A}\nbtime {BOOTED + 0.5}\n")
    boot = read_boot({BOOT_FILE_ENV: str(path)})
    assert (boot.boot_id, boot.boot_time) == (ID_A, BOOTED + 0.5)
    assert boot.uptime == pytest.approx(time.time() - BOOTED - 0.5, abs=5)
    assert parse_boot_file(f"btime {BOOTED}\n", now=BOOTED + 30) == Boot(None, BOOTED, 30.0)


def test_an_unusable_boot_file_is_an_unknown_boot(tmp_path: Path) -> None:
    path = tmp_path / "boot"
    path.write_text("garbage")
    assert not read_boot({BOOT_FILE_ENV: str(path)}).known
    path.write_text("btime soon\n")
    assert not read_boot({BOOT_FILE_ENV: str(path)}).known
    assert not read_boot({BOOT_FILE_ENV: str(tmp_path / "nope")}).known


def test_the_simulated_dom0_is_read_through_its_boot_file(simxl: SimXl) -> None:
    boot = read_boot(simxl.env())
    assert (boot.boot_id, boot.boot_time) == (simxl.boot_id(), simxl.boot_time())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")
def test_linux_gives_a_boot_id_and_a_boot_time_consistent_with_the_uptime() -> None:
    boot = read_boot({})
    assert boot.boot_id is not None and parse_linux_boot_id(boot.boot_id) == boot.boot_id
    assert boot.boot_time is not None and boot.uptime is not None
    assert boot.boot_id == read_boot({}).boot_id  # one id per boot, not per read
    # btime is whole seconds: boot time + uptime is now, to within a second or two
    assert boot.boot_time + boot.uptime == pytest.approx(time.time(), abs=3)


def test_parse_linux_boot_id() -> None:
    assert parse_linux_boot_id(ID_A.upper() + "\n") == ID_A
    assert parse_linux_boot_id("not-a-uuid\n") is None
    assert parse_linux_boot_id("") is None


def test_parse_kern_boot_id() -> None:
    raw = bytes(range(16))
    assert parse_kern_boot_id(raw) == raw.hex()
    assert parse_kern_boot_id(b"") is None
    assert parse_kern_boot_id(bytes(16)) is None  # an all-zero id identifies nothing


def test_parse_proc_stat() -> None:
    text = "cpu  1 2 3\nintr 5\nbtime 1699990000\nprocesses 12\n"
    assert parse_proc_stat_btime(text) == 1699990000.0
    assert parse_proc_stat_btime("cpu 1 2\n") is None


def test_parse_kern_boottime() -> None:
    text = "{ sec = 1699990000, usec = 250000 } Tue Nov 14 18:06:40 2023\n"
    assert parse_kern_boottime(text) == 1699990000.25
    assert parse_kern_boottime("") is None


# --- a reboot or a clock step -------------------------------------------------------------------


def test_boot_ids_decide_whatever_the_boot_time_did() -> None:
    saved = Boot(ID_A, BOOTED, uptime=100.0)
    assert same_boot(saved, Boot(ID_A, BOOTED - HOUR, uptime=200.0)) is True  # clock set back
    assert same_boot(saved, Boot(ID_A, BOOTED + 86_400, uptime=200.0)) is True  # a day forward
    assert same_boot(saved, Boot(ID_B, BOOTED, uptime=200.0)) is False  # same second, new boot


def test_without_ids_a_clock_set_back_is_no_reboot() -> None:
    saved = Boot(None, BOOTED, uptime=100.0)
    assert same_boot(saved, Boot(None, BOOTED - HOUR, uptime=150.0)) is True


def test_without_ids_a_small_step_forward_is_no_reboot() -> None:
    saved = Boot(None, BOOTED, uptime=600.0)
    assert same_boot(saved, Boot(None, BOOTED + 120, uptime=700.0)) is True


def test_without_ids_an_uptime_that_went_down_is_a_reboot() -> None:
    saved = Boot(None, BOOTED, uptime=5000.0)
    # even when the new boot's clock is so far behind that its boot time looks older
    assert same_boot(saved, Boot(None, BOOTED - HOUR, uptime=30.0)) is False


def test_without_ids_a_boot_after_the_last_save_is_a_reboot() -> None:
    saved = Boot(None, BOOTED, uptime=100.0)  # saved at BOOTED + 100
    # the new boot has been up longer than the old one was when it saved
    assert same_boot(saved, Boot(None, BOOTED + 400, uptime=300.0)) is False


def test_without_ids_a_state_of_0_1_0_compares_boot_times() -> None:
    saved = Boot(None, BOOTED)  # 0.1.0 saved no uptime
    assert same_boot(saved, Boot(None, BOOTED + 0.6, uptime=10.0)) is True
    assert same_boot(saved, Boot(None, BOOTED + 50, uptime=10.0)) is False


def test_an_id_on_one_side_only_falls_back_to_times() -> None:
    saved = Boot(None, BOOTED, uptime=100.0)  # e.g. written by 0.1.0 (no id)
    assert same_boot(saved, Boot(ID_A, BOOTED - HOUR, uptime=150.0)) is True
    assert same_boot(saved, Boot(ID_A, BOOTED, uptime=50.0)) is False


def test_nothing_to_compare_is_unknown() -> None:
    assert same_boot(Boot(), Boot(ID_A, BOOTED, 1.0)) is None
    assert same_boot(Boot(ID_A, BOOTED, 1.0), Boot()) is None


def test_the_boot_of_a_memory_round_trips_through_state_json() -> None:
    memory = Memory(boot_time=BOOTED, boot_id=ID_A, saved_uptime=12.5)
    assert saved_boot(decode_memory(encode_memory(memory).encode())) == Boot(ID_A, BOOTED, 12.5)
    document = json.loads(encode_memory(Memory(boot_time=BOOTED)))
    assert "boot_id" not in document and "saved_uptime" not in document  # as 0.1.0 wrote it
