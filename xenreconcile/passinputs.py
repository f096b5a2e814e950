"""One place that assembles a pass's inputs: the scanner and the xl runner built
from the config, the observation of one pass (scan plus listing), the saved
memory converted to this process's clock, and the plan made of them.

The daemon and every command (`status`, `plan`, `check`, `run --once`) go
through `PassInputs`, so they see the guests directory and `xl list` the same
way and plan with the same rules. It starts no thread and holds no state but
the scanner's fingerprint cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from xenreconcile import bootgate, exits, partial, planner
from xenreconcile.clock import from_epoch
from xenreconcile.config import Config
from xenreconcile.createlock import xl_lockfile
from xenreconcile.guestdir import GuestDirScanner
from xenreconcile.models import (
    CreateResult,
    DesiredState,
    Domain,
    Memory,
    Plan,
    PlannerSettings,
    PoolGate,
)
from xenreconcile.preflight import Preflight
from xenreconcile.state import Boot, read_boot
from xenreconcile.xl import ToolstackError, UnreadRow, XlListRowsError, XlRunner


class Runner(Protocol):
    """What a pass needs from the xl adapter."""

    def list(self) -> tuple[Domain, ...]: ...
    def create(self, path: str) -> CreateResult: ...
    def create_from_bytes(self, data: bytes, shown_path: str) -> CreateResult: ...


@runtime_checkable
class LifecycleRunner(Protocol):
    """What a restore or the drain needs from the xl adapter: xl shutdown, save
    and restore."""

    def lifecycle(self, args: Sequence[str], timeout: float) -> CreateResult: ...


def xl_command(config: Config) -> list[str]:
    """The xl program and its fixed arguments from the config key `xl`."""
    value: Any = config.xl
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class Observation:
    """What one pass saw: the desired state and the listing (None: it failed,
    `error` says why; rows it could not read in `unread_rows`), and what each
    guest still waits for (`unmet`, see `preflight`)."""

    desired: DesiredState
    listing: tuple[Domain, ...] | None
    error: str | None = None
    unread_rows: tuple[UnreadRow, ...] = ()
    suspects: Mapping[str, str] = field(default_factory=dict)
    listed_at: float = 0.0  # epoch seconds just before the listing was asked for
    unmet: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def shown_error(self) -> str | None:
        """The toolstack problem to show in a status document, if any."""
        return self.error or (str(self.unread_rows[0]) if self.unread_rows else None)


class PassInputs:
    """The scanner and runner of one config, and the pass built from them."""

    def __init__(
        self,
        config: Config,
        runner: Runner | None = None,
        boot_reader: Callable[[], Boot] = read_boot,
        preflight: Preflight | None = None,
    ) -> None:
        self.config = config
        self.boot_reader = boot_reader
        self._boot: Boot | None = None
        self.scanner = GuestDirScanner(
            config.guests_dir, strict_permissions=config.strict_permissions
        )
        self.preflight = preflight or Preflight(self.scanner.checked_bytes)
        self.runner: Runner = runner or XlRunner(
            xl_command(config),
            list_timeout=config.list_timeout,
            create_timeout=config.xl_timeout,
            lockfile=xl_lockfile(),
        )

    @property
    def lifecycle_runner(self) -> LifecycleRunner:
        """The runner for xl shutdown, save and restore: the pass's own runner
        when it has them, else an `XlRunner` of the config's xl."""
        if isinstance(self.runner, LifecycleRunner):
            return self.runner
        return XlRunner(xl_command(self.config), create_timeout=self.config.xl_timeout)

    @property
    def boot(self) -> Boot:
        """The running Dom0 boot (read once)."""
        if self._boot is None:
            self._boot = self.boot_reader()
        return self._boot

    @property
    def settings(self) -> PlannerSettings:
        """The planner's view of the config."""
        return self.config.planner_settings()

    def observe(self) -> Observation:
        """Scan the guests directory, look for the guests' needs, list the domains."""
        desired = self.scanner.scan()
        unmet = self.preflight.unmet(desired)
        listed_at = time.time()
        try:
            return Observation(desired, self.runner.list(), listed_at=listed_at, unmet=unmet)
        except XlListRowsError as exc:
            suspects = partial.suspects(desired, exc.rows)
            return Observation(
                desired, exc.domains, None, exc.rows, suspects, listed_at=listed_at, unmet=unmet
            )
        except ToolstackError as exc:
            return Observation(desired, None, str(exc), unmet=unmet)

    def loaded_memory(self, on_disk: Memory, offset: float, now: float) -> Memory:
        """Given memory as saved (epoch seconds), the offset of the wall clock to
        the monotonic one and the monotonic time, return it in monotonic seconds
        (times clamped as `clock.from_epoch` says)."""
        return from_epoch(on_disk, offset, now, self.settings)

    def plan(
        self,
        seen: Observation,
        memory: Memory,
        in_flight: Collection[str],
        now: float,
        *,
        starting: bool = False,
        pool: PoolGate | None = None,
    ) -> Plan:
        """The planner's plan for a pass that saw `seen` (`starting`: the caller
        starts its creates at once; `pool`: pool mode's gate of this pass)."""
        wanted = exits.lives_to_read(memory, seen.listing)
        return planner.plan(
            seen.desired,
            seen.listing,
            memory,
            in_flight,
            now,
            self.settings,
            suspects=seen.suspects,
            lives=exits.read_lives(exits.log_dir(), wanted),
            withheld=bootgate.withheld(self.config, seen.desired, self.boot),
            unmet=seen.unmet,
            starting=starting,
            pool=pool,
        )
