"""The daemon's clock, and its times at the persistence boundary.

Inside the process every time is a reading of the monotonic clock: passes,
retries, grace periods and `stable_after` are waits, and a step of the wall
clock (NTP at boot, a bad RTC, an admin's `date`) must neither stop nor
stretch them. Files keep epoch seconds, since a monotonic reading means
nothing to another process after a restart. `to_epoch` and `from_epoch` convert
between the two with one offset (wall minus monotonic) taken at that moment;
`from_epoch` also clamps each deadline to what its setting allows, because the
wall clock may have been wrong when the file was written. The fields converted
are those registered in `models.GUEST_TIME_FIELDS` and `models.MEMORY_TIME_FIELDS`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from xenreconcile.models import (
    GUEST_TIME_FIELDS,
    MEMORY_TIME_FIELDS,
    GuestMemory,
    Memory,
    PlannerSettings,
    TimeBounds,
)

EPOCH_DIGITS = 3  # epoch times are written to the millisecond

T = TypeVar("T", GuestMemory, Memory)
# Given a time and the bounds registered for its field, the converted time.
_Converter = Callable[[float, TimeBounds], float]


class Clock(Protocol):
    """Monotonic time for every wait, wall time for what is shown or persisted;
    injectable so that tests need no sleeps and can step either one."""

    def monotonic(self) -> float: ...
    def wall(self) -> float: ...
    def wait(self, event: threading.Event, timeout: float) -> bool: ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        """Seconds of the monotonic clock (unaffected by steps of the wall clock)."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Block until `event` is set or `timeout` seconds pass; True if set.
        (threading waits run on the monotonic clock.)"""
        return event.wait(max(0.0, timeout))


def epoch_offset(clock: Clock) -> float:
    """What to add to a monotonic reading of `clock` to get epoch seconds, now."""
    return clock.wall() - clock.monotonic()


@dataclass(frozen=True, slots=True)
class Instant:
    """One moment as both clocks read it."""

    monotonic: float
    wall: float

    @classmethod
    def now(cls, clock: Clock | None = None) -> Instant:
        """This moment on `clock` (default: the system's)."""
        clock = clock or SystemClock()
        return cls(clock.monotonic(), clock.wall())

    @property
    def offset(self) -> float:
        """What to add to a monotonic time to get epoch seconds."""
        return self.wall - self.monotonic


def to_epoch(memory: Memory, offset: float) -> Memory:
    """Given memory in monotonic seconds and the offset of this moment, return
    it with every registered time field in epoch seconds."""

    def convert(value: float, _bounds: TimeBounds) -> float:
        return round(value + offset, EPOCH_DIGITS)

    return _map_times(memory, convert)


def from_epoch(memory: Memory, offset: float, now: float, settings: PlannerSettings) -> Memory:
    """Given memory read from disk (epoch seconds), the offset and the monotonic
    `now` of this moment and the settings, return it in monotonic seconds with
    each time field clamped to its bounds around `now`."""

    def convert(value: float, bounds: TimeBounds) -> float:
        before, after = bounds(settings)
        earliest = -math.inf if before is None else now - before
        latest = math.inf if after is None else now + after
        return min(max(value - offset, earliest), latest)

    return _map_times(memory, convert)


def _map_times(memory: Memory, convert: _Converter) -> Memory:
    """The memory with `convert` applied to every registered time field that is
    set, in the memory itself and in each guest's."""
    guests = {
        name: _map_fields(gm, GUEST_TIME_FIELDS, convert) for name, gm in memory.guests.items()
    }
    return replace(_map_fields(memory, MEMORY_TIME_FIELDS, convert), guests=guests)


def _map_fields(obj: T, fields: Mapping[str, TimeBounds], convert: _Converter) -> T:
    """`obj` with `convert` applied to each field of `fields` that is not None."""
    changes: dict[str, Any] = {
        name: convert(value, bounds)
        for name, bounds in fields.items()
        if (value := getattr(obj, name)) is not None
    }
    return replace(obj, **changes) if changes else obj
