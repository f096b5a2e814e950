"""The keeper of the daemon's memory on disk: the state lock, the load at start
(with Dom0 reboot detection) and the saves, converted between this process's
monotonic clock and the epoch seconds of state.json. Used by the loop's thread
only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from xenreconcile import planner
from xenreconcile.clock import Clock, epoch_offset, to_epoch
from xenreconcile.errors import XenreconcileError
from xenreconcile.models import Memory
from xenreconcile.passinputs import PassInputs
from xenreconcile.state import Boot, StateStore, same_boot, saved_boot

LOCK_WAIT = 5.0  # how long start-up waits for a CLI command holding the state lock


class DaemonError(XenreconcileError):
    """The daemon cannot start (state directory locked or unusable)."""


class StateKeeper:
    """The lock and the state.json of one `state_dir`."""

    def __init__(self, state_dir: str, clock: Clock, log: Any) -> None:
        self.state_dir = state_dir
        self.store = StateStore(state_dir)
        self.clock = clock
        self.log = log
        self.boot = Boot()
        self.boot_read_at = 0.0
        self.persisted: Memory | None = None  # the memory state.json holds, if known
        self.save_failed = False

    @property
    def read_only(self) -> str | None:
        """Why the state file must not be written, or None."""
        return self.store.read_only

    def lock(self) -> None:
        """Take the state lock, waiting up to LOCK_WAIT for a CLI command holding
        it; raises DaemonError when another daemon holds it."""
        deadline = time.monotonic() + LOCK_WAIT
        while not self.store.try_lock():
            if time.monotonic() >= deadline:
                raise DaemonError(
                    f"{self.state_dir} is locked: another xenreconcile daemon is running"
                )
            time.sleep(0.1)

    def load(self, inputs: PassInputs, read_boot: Callable[[], Boot]) -> Memory:
        """Load state.json as the memory of the running boot (runtime facts
        forgotten), logging a newer or damaged file and a Dom0 reboot."""
        on_disk, warning = self.store.load()
        if self.store.read_only is not None:
            self.log.error("state_newer", error=self.store.read_only)
        elif warning:
            self.log.error("state_corrupt", error=warning)
        now = self.clock.monotonic()
        memory = inputs.loaded_memory(on_disk, epoch_offset(self.clock), now)
        self.boot, self.boot_read_at = read_boot(), now
        return planner.forget_runtime(self._adopt_boot(memory))

    def _adopt_boot(self, memory: Memory) -> Memory:
        """Given the loaded memory, return it as the memory of the running boot:
        that of a new boot (counters cleared, holds kept) when Dom0 rebooted since
        it was saved or it has no boot yet, else unchanged; stamped with this boot."""
        if not self.boot.known:
            return memory  # nothing to compare with: keep what is remembered
        saved = saved_boot(memory)
        same = same_boot(saved, self.boot)
        if same is False:
            self.log.info(
                "dom0_rebooted",
                boot_id=self.boot.boot_id,
                boot_time=self.boot.boot_time,
                previous_boot_id=saved.boot_id,
                previous_boot_time=saved.boot_time,
            )
        if not same:
            memory = planner.new_boot(memory, self.boot.boot_time)
        return replace(memory, boot_id=self.boot.boot_id, boot_time=self.boot.boot_time)

    def save(self, memory: Memory, *, force: bool = False) -> bool:
        """Persist memory (in epoch seconds) when it changed since the last save, or
        when `force`d; True when the state on disk is current. A state file of a
        newer format is never written (False)."""
        if self.store.read_only is not None:
            return False
        if memory == self.persisted and not force:
            return True
        on_disk = replace(to_epoch(memory, epoch_offset(self.clock)), saved_uptime=self._uptime())
        try:
            self.store.save(on_disk)
        except OSError as exc:
            if not self.save_failed:
                self.log.error("state_save_failed", state_dir=self.state_dir, error=str(exc))
            self.save_failed = True
            return False
        if self.save_failed:
            self.log.info("state_saved", state_dir=self.state_dir)
        self.save_failed = False
        self.persisted = memory
        return True

    def _uptime(self) -> float | None:
        """The Dom0's uptime now: as read at start, plus the time passed since."""
        if self.boot.uptime is None:
            return None
        return self.boot.uptime + (self.clock.monotonic() - self.boot_read_at)

    def unlock(self) -> None:
        """Release the state lock."""
        self.store.unlock()
