"""Helpers shared by the tests: one fake clock, the minimal guest cfg, a daemon
over the simulated xl."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from xenreconcile import logs
from xenreconcile.config import parse_config
from xenreconcile.daemon import Daemon
from xenreconcile.state import Boot
from xenreconcile.xl import XlRunner

# The smallest cfg the scanner accepts as a guest.
MINIMAL_CFG = 'name = "{name}"\nmemory = 128\n'


def minimal_cfg(name: str) -> str:
    """Given a guest name, return the text of the smallest valid cfg for it."""
    return MINIMAL_CFG.format(name=name)


class Happenings(Protocol):
    """A simulated world the clock lets act while the code under test waits."""

    def next_happening(self) -> float | None: ...
    def happen(self, now: float) -> None: ...


class FakeClock:
    """Time that only moves when the test moves it or the code under test waits.
    `now` is the monotonic clock (also what calling the clock returns); the wall
    clock is it plus `wall_offset`, which `step_wall` changes alone, as NTP or an
    admin's `date` would. A wait jumps to its end, or, given a `world`, through
    the world's happenings, stopping early once one of them sets the event."""

    def __init__(
        self,
        start: float = 5_000.0,
        wall_offset: float = 1_800_000_000.0,
        world: Happenings | None = None,
    ) -> None:
        self.now = start
        self.wall_offset = wall_offset
        self.world = world

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    def time(self) -> float:  # the clock interface of 0.1.0, which read only wall time
        return self.wall()

    def step_wall(self, seconds: float) -> None:
        """Set the wall clock `seconds` forward (negative: back); monotonic time stays."""
        self.wall_offset += seconds

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Advance time by up to `timeout`, letting the world act; True if `event` is set."""
        end = self.now + max(0.0, timeout)
        while not event.is_set():
            at = self.world.next_happening() if self.world is not None else None
            if at is None or at > end:
                self.now = end
                break
            self.now = max(self.now, at)
            assert self.world is not None
            self.world.happen(self.now)
        return event.is_set()


def simxl_daemon(tmp_path: Path, xl_command: Sequence[str], extra_config: str = "") -> Daemon:
    """Given a temp dir, the simulated xl's command and more config lines, return
    a daemon (not started, no watcher, boot `boot-1`) with its guests dir, state
    dir and JSON log under `tmp_path`, its logging configured."""
    guests = tmp_path / "guests"
    guests.mkdir(mode=0o755)
    config = parse_config(
        f"guests_dir: {guests}\nstate_dir: {tmp_path / 'state'}\n"
        f"log_file: {tmp_path / 'daemon.log'}\nlog_format: json\n{extra_config}",
        "test.yaml",
    )
    logs.configure(config.log_file, config.log_format, config.log_level)
    return Daemon(
        config,
        runner=XlRunner(list(xl_command)),
        read_boot=lambda: Boot("boot-1", 1000.0, 10.0),
        use_watcher=False,
    )
