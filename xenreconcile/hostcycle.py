"""The daemon's side of a Dom0 reboot: stand down for the drain, restore at boot.

Owned by the loop's thread. At start it lifts a stand-down mark left by an
earlier boot; on every turn it answers a mark of this boot (once nothing of its
own is being created); before every pass is planned it notes which saved guests
run (their images go stale) and, unless stood down, restores the images due in
this boot, then has the pass list again, so that restores come before any cold
boot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from xenreconcile import standdown
from xenreconcile.models import Memory
from xenreconcile.passinputs import Observation, PassInputs
from xenreconcile.saves import DUE, STALE, SaveStore


@dataclass
class HostCycle:
    """Stand-down and restore for the daemon of `inputs.config`."""

    inputs: PassInputs
    log: Any
    announced: bool = False

    @property
    def state_dir(self) -> str:
        return self.inputs.config.state_dir

    def at_start(self) -> None:
        """Lift the mark of an earlier boot."""
        if standdown.clear_after_reboot(self.state_dir, self.inputs.boot):
            self.log.info("stand_down_lifted", reason="Dom0 booted again")

    def answer(self, creating: bool) -> bool:
        """Given whether creates are in flight, answer a stand-down of this boot;
        returns whether the daemon is stood down."""
        if not standdown.stood_down(self.state_dir, self.inputs.boot):
            self.announced = False
            return False
        if not creating:
            if not self.announced:
                self.log.warning("stood_down", reason=standdown.REASON)
                self.announced = True
            standdown.acknowledge(self.state_dir, os.getpid())
        return True

    def before_plan(
        self, seen: Observation, memory: Memory, now: float
    ) -> tuple[Observation, Memory]:
        """Given a pass's observation and memory, restore the images due (when the
        listing is trusted and the daemon is not stood down); returns the
        observation to plan with (listed again after restores) and the memory."""
        if seen.listing is None:
            return seen, memory
        images, boot = SaveStore(self.inputs.config), self.inputs.boot
        running = [d.name for d in seen.listing if not d.dying and not d.stale]
        images.note_running(running, seen.listed_at, boot)
        desired = [g.name for g in seen.desired.guests]
        if standdown.stood_down(self.state_dir, boot) or not any(
            i.name in desired for i in images.images(boot) if i.fate in (DUE, STALE)
        ):
            return seen, memory
        from xenreconcile.restore import Restorer  # noqa: PLC0415 - deferred: images due only

        restorer = Restorer(images, self.inputs.lifecycle_runner, self.inputs.config, self.log)
        memory = restorer.restore_due(desired, seen.listing, memory, boot, now)
        return self.inputs.observe(), memory
