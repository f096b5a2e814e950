"""One place that assembles a pass's inputs: the scanner and the xl runner built
from the config, the observation of one pass (scan plus listing), the saved
memory converted to this process's clock, and the plan made of them.

The daemon and every command (`status`, `plan`, `check`, `run --once`) go
through `PassInputs`, so they see the guests directory and `xl list` the same
way and plan with the same rules. It starts no thread and holds no state but
the scanner's fingerprint cache.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from xenreconcile import partial, planner
from xenreconcile.clock import from_epoch
from xenreconcile.config import Config
from xenreconcile.createlock import xl_lockfile
from xenreconcile.guestdir import GuestDirScanner
from xenreconcile.models import CreateResult, DesiredState, Domain, Memory, Plan, PlannerSettings
from xenreconcile.xl import ToolstackError, UnreadRow, XlListRowsError, XlRunner


class Runner(Protocol):
    """What a pass needs from the xl adapter."""

    def list(self) -> tuple[Domain, ...]: ...
    def create(self, path: str) -> CreateResult: ...
    def create_from_bytes(self, data: bytes, shown_path: str) -> CreateResult: ...


def xl_command(config: Config) -> list[str]:
    """The xl program and its fixed arguments from the config key `xl`."""
    value: Any = config.xl
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class Observation:
    """What one pass saw: the desired state and the listing (None: it failed,
    `error` says why; rows it could not read in `unread_rows`)."""

    desired: DesiredState
    listing: tuple[Domain, ...] | None
    error: str | None = None
    unread_rows: tuple[UnreadRow, ...] = ()
    suspects: Mapping[str, str] = field(default_factory=dict)

    @property
    def shown_error(self) -> str | None:
        """The toolstack problem to show in a status document, if any."""
        return self.error or (str(self.unread_rows[0]) if self.unread_rows else None)


class PassInputs:
    """The scanner and runner of one config, and the pass built from them."""

    def __init__(self, config: Config, runner: Runner | None = None) -> None:
        self.config = config
        self.scanner = GuestDirScanner(
            config.guests_dir, strict_permissions=config.strict_permissions
        )
        self.runner: Runner = runner or XlRunner(
            xl_command(config),
            list_timeout=config.list_timeout,
            create_timeout=config.xl_timeout,
            lockfile=xl_lockfile(),
        )

    @property
    def settings(self) -> PlannerSettings:
        """The planner's view of the config."""
        return self.config.planner_settings()

    def observe(self) -> Observation:
        """Scan the guests directory and list the domains."""
        desired = self.scanner.scan()
        try:
            return Observation(desired, self.runner.list())
        except XlListRowsError as exc:
            suspects = partial.suspects(desired, exc.rows)
            return Observation(desired, exc.domains, None, exc.rows, suspects)
        except ToolstackError as exc:
            return Observation(desired, None, str(exc))

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
    ) -> Plan:
        """The planner's plan for a pass that saw `seen` (`starting`: the caller
        starts its creates at once)."""
        return planner.plan(
            seen.desired,
            seen.listing,
            memory,
            in_flight,
            now,
            self.settings,
            suspects=seen.suspects,
            starting=starting,
        )
