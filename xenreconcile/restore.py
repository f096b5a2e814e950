"""Restore at boot: the images due in this boot, before any cold boot.

Given a trusted listing, the desired guests and the memory, `Restorer.restore_due` runs
`xl restore` for every image `saves` says is due, lowest `order` first (as
creates go), one at a time (xl builds domains one at a time under its lock
anyway). A guest already listed is not restored: its image is stale and moved
aside. A restore that succeeds consumes the image; one that fails moves it aside
(`NAME.save.failed-TIME`) and, with `on_restore_failure: hold`, holds the guest
with the reason; either way the admin is notified. Returns the new memory; the
caller lists again before it plans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xenreconcile import planner
from xenreconcile.config import Config
from xenreconcile.models import Domain, Memory
from xenreconcile.notify import notify_async
from xenreconcile.passinputs import LifecycleRunner
from xenreconcile.saves import STALE, Image, SaveStore
from xenreconcile.state import Boot

RESTORE_FAILED = "restore_failed"  # XR_EVENT of a failed restore
IMAGE_STALE = "save_image_stale"  # XR_EVENT of an image never restored


@dataclass
class Restorer:
    """Restores the due images of `images` with `runner`, as `config` says."""

    images: SaveStore
    runner: LifecycleRunner
    config: Config
    log: Any

    def restore_due(
        self,
        desired: Sequence[str],
        listing: Sequence[Domain],
        memory: Memory,
        boot: Boot,
        now: float,
    ) -> Memory:
        """Restore every due image of a desired guest; move stale ones aside;
        returns the memory (with the holds of failed restores)."""
        listed = {d.name for d in listing}
        wanted = set(desired)
        settings = self.config.planner_settings()
        found = [i for i in self.images.images(boot) if i.name in wanted]
        found.sort(key=lambda i: (settings.override(i.name).order, i.name))
        for image in found:
            if image.fate == STALE or (image.due and image.name in listed):
                self._stale(image)
            elif image.due:
                memory = self._restore(image, memory, now)
        return memory

    def _stale(self, image: Image) -> None:
        """The guest ran after its save: its image is out of date; moved aside, reported."""
        aside = self.images.move_aside(image.name, "stale")
        error = f"{image.name} ran after its save; the image is out of date, moved to {aside}"
        self.log.warning(IMAGE_STALE, guest=image.name, error=error)
        self._notify(image.name, IMAGE_STALE, error)

    def _restore(self, image: Image, memory: Memory, now: float) -> Memory:
        """`xl restore` one image; consumed on success, moved aside on failure."""
        self.log.info("restore_started", guest=image.name, image=image.path)
        result = self.runner.lifecycle(["restore", image.path], self.config.xl_timeout)
        if result.ok:
            self.images.consume(image.name)
            self.log.info("guest_restored", guest=image.name, seconds=round(result.duration, 2))
            return memory
        cause = "timed out" if result.timed_out else f"exited {result.exit_code}: {result.cause}"
        aside = self.images.move_aside(image.name, "failed")
        error = f"restore failed: xl restore {cause}; image moved to {aside}"
        held = self.config.on_restore_failure == "hold"
        then = "held" if held else "booted fresh"
        self.log.error(RESTORE_FAILED, guest=image.name, error=error, then=then)
        self._notify(image.name, RESTORE_FAILED, error)
        return planner.hold(memory, image.name, error, now) if held else memory

    def _notify(self, name: str, event: str, error: str) -> None:
        notify_async(self.config.notify_command or (), name, event, error, self.log)
