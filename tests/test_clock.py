"""Times at the persistence boundary: monotonic inside, epoch seconds on disk,
clamped to what their settings allow when they are read back."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from xenreconcile.clock import Instant, from_epoch, to_epoch
from xenreconcile.models import (
    GUEST_TIME_FIELDS,
    MEMORY_TIME_FIELDS,
    Backoff,
    GuestMemory,
    Memory,
    PlannerSettings,
)

NOW = 2_000.0  # monotonic
OFFSET = 1_800_000_000.0  # epoch = monotonic + OFFSET at this moment
DAY = 86_400.0
SETTINGS = PlannerSettings(
    missing_grace=5.0, stable_after=60.0, backoff=Backoff(max=600.0, jitter=5.0)
)
# Memory fields that hold a float but are no deadline of this boot: the boot time
# (epoch, compared with the kernel's) and the uptime at the last save.
NOT_DEADLINES = {"boot_time", "saved_uptime"}


def float_fields(cls: type) -> set[str]:
    hints = typing.get_type_hints(cls)
    return {f.name for f in dataclasses.fields(cls) if float in typing.get_args(hints[f.name])}


def test_every_time_field_is_registered_for_conversion() -> None:
    assert float_fields(GuestMemory) == set(GUEST_TIME_FIELDS)
    assert float_fields(Memory) - NOT_DEADLINES == set(MEMORY_TIME_FIELDS)


def test_times_within_their_bounds_round_trip() -> None:
    web = GuestMemory(attempts=2, next_retry=NOW + 30, created_at=NOW - 10, missing_since=NOW - 1)
    memory = Memory(guests={"web": web, "idle": GuestMemory()}, last_create_at=NOW - 100)
    on_disk = to_epoch(memory, OFFSET)
    assert on_disk.guests["web"].next_retry == NOW + 30 + OFFSET
    assert on_disk.last_create_at == NOW - 100 + OFFSET
    assert from_epoch(on_disk, OFFSET, NOW, SETTINGS) == memory


def test_the_boot_fields_are_not_converted() -> None:
    memory = Memory(boot_time=1_700_000_000.0, boot_id="x", saved_uptime=50.0)
    assert to_epoch(memory, OFFSET) == memory
    assert from_epoch(memory, OFFSET, NOW, SETTINGS) == memory


def test_deadlines_written_under_a_clock_a_day_ahead_are_clamped() -> None:
    ahead = OFFSET + DAY  # the clock at the save was a day ahead of the one now
    web = GuestMemory(next_retry=NOW + 10, created_at=NOW - 1, missing_since=NOW - 1)
    on_disk = to_epoch(Memory(guests={"web": web}, last_create_at=NOW - 1), ahead)
    loaded = from_epoch(on_disk, OFFSET, NOW, SETTINGS)
    assert loaded.guests["web"].next_retry == NOW + 600 + 5  # backoff.max + jitter
    assert loaded.guests["web"].created_at == NOW  # stable_after starts again now
    assert loaded.guests["web"].missing_since == NOW
    assert loaded.last_create_at == NOW


def test_times_written_under_a_clock_a_day_behind_are_clamped_or_kept() -> None:
    behind = OFFSET - DAY
    web = GuestMemory(next_retry=NOW + 10, created_at=NOW - 1, missing_since=NOW - 1)
    on_disk = to_epoch(Memory(guests={"web": web}, last_create_at=NOW - 1), behind)
    loaded = from_epoch(on_disk, OFFSET, NOW, SETTINGS)
    assert loaded.guests["web"].next_retry == pytest.approx(NOW + 10 - DAY)  # past: due now
    assert loaded.guests["web"].created_at == NOW - 60  # counts as stable already
    assert loaded.guests["web"].missing_since == NOW - 5  # grace is over
    assert loaded.last_create_at == pytest.approx(NOW - 1 - DAY)


class StubClock:
    def __init__(self, monotonic: float, wall: float) -> None:
        self.readings = (monotonic, wall)

    def monotonic(self) -> float:
        return self.readings[0]

    def wall(self) -> float:
        return self.readings[1]


def test_an_instant_reads_both_clocks() -> None:
    now = Instant.now(StubClock(NOW, NOW + OFFSET))  # type: ignore[arg-type]
    assert (now.monotonic, now.wall, now.offset) == (NOW, NOW + OFFSET, OFFSET)
