"""The event sink: what the loop learned, as log lines and notifications.

Given planner events, create results and what a pass observed, it logs each
one (the table `EVENT_LOG` says at which level and under which name) and runs
`notify_command` for those an admin must hear of. Problems that last (a bad
file, an unusable directory, a failing toolstack, unreadable `xl list` rows)
are reported once per change, not once per pass. Used by the loop's thread only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xenreconcile.models import (
    CreateAction,
    CreateResult,
    DesiredState,
    Event,
    EventKind,
    Memory,
)
from xenreconcile.notify import notify_async
from xenreconcile.state import uncertain_names
from xenreconcile.xl import UnreadRow

UNCERTAIN_EVENT = "state_uncertain"  # XR_EVENT of the notification about lost holds
EVERY_GUEST = "*"  # XR_GUEST when every name is uncertain
NOTIFY_EVENTS = {
    EventKind.GAVE_UP,
    EventKind.FAILING,
    EventKind.RECOVERED,
    EventKind.LEFTOVER,
    EventKind.STOPPED,
    EventKind.WAITING_TOO_LONG,
}
UNREADABLE_ROWS_EVENT = "xl_list_rows_unreadable"  # logged and notified once per change
EVENT_LOG: dict[EventKind, tuple[str, str]] = {
    EventKind.VANISHED: ("info", "guest_vanished"),
    EventKind.DIED_EARLY: ("warning", "guest_died_early"),
    EventKind.RECOVERED: ("info", "guest_recovered"),
    EventKind.GAVE_UP: ("error", "gave_up"),
    EventKind.FAILING: ("warning", "guest_failing"),
    EventKind.FILE_CHANGED: ("info", "file_changed"),
    EventKind.MIGRATED: ("info", "guest_migrated"),
    EventKind.RETURNED: ("info", "guest_returned"),
    EventKind.LEFTOVER: ("error", "create_leftover"),
    EventKind.EXITED: ("info", "guest_exited"),
    EventKind.STOPPED: ("warning", "guest_stopped"),
    EventKind.WAITING: ("info", "guest_waiting"),
    EventKind.WAITING_TOO_LONG: ("error", "precondition_timeout"),
}


def xl_log_path(name: str) -> str:
    """Where xl itself logs the domain's creation."""
    return f"/var/log/xen/xl-{name}.log"


class EventSink:
    """Logs and notifies; remembers what it reported so lasting problems are
    reported once per change."""

    def __init__(self, log: Any, notify_command: Sequence[str] = ()) -> None:
        self.log = log
        self.notify_command: Sequence[str] = notify_command
        self._unread: tuple[int, frozenset[str]] | None = None
        self._invalid: dict[str, str] = {}
        self._dir_error: str | None = None
        self._toolstack_error: str | None = None

    def _notify(self, guest: str, event: str, error: str | None, reason: str | None = None) -> None:
        notify_async(self.notify_command, guest, event, error, self.log, reason=reason)

    def event(self, event: Event, memory: Memory, now: float) -> None:
        """Log a planner event (with the retry it scheduled) and notify those in
        `NOTIFY_EVENTS`; `memory` is the memory after the event."""
        level, name = EVENT_LOG[event.kind]
        extra = {} if event.error is None else {"error": event.error}
        if event.reason is not None:
            extra["reason"] = event.reason
        getattr(self.log, level)(name, guest=event.name, **extra)
        if event.kind == EventKind.DIED_EARLY:
            self.retry(event.name, memory, now)
        if event.kind in NOTIFY_EVENTS:
            reason = event.reason or memory.guest(event.name).exit_reason
            self._notify(event.name, event.kind.value, event.error, reason)

    def create_started(self, action: CreateAction) -> None:
        """Log the start of a create."""
        self.log.info("create_started", guest=action.name, file=action.path)

    def create_result(
        self, action: CreateAction, result: CreateResult, memory: Memory, now: float
    ) -> None:
        """Log how a create ended; `memory` has its result folded in."""
        if result.ok:
            self.log.info(
                "create_ok", guest=action.name, file=action.path, seconds=round(result.duration, 2)
            )
            return
        from xenreconcile import hints  # noqa: PLC0415 - deferred: a failure's remedy only

        hint = hints.remedy(result.stderr_tail)
        self.log.error(
            "create_failed",
            guest=action.name,
            file=action.path,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            stderr=result.stderr_tail.strip(),
            xl_log=xl_log_path(action.name),
            **({} if hint is None else {"hint": hint}),
        )
        self.retry(action.name, memory, now)

    def retry(self, name: str, memory: Memory, now: float) -> None:
        """Log the retry `memory` schedules for `name`, if any."""
        gm = memory.guest(name)
        if gm.next_retry is not None:
            self.log.info(
                "retry_scheduled",
                guest=name,
                attempts=gm.attempts,
                delay=round(gm.next_retry - now, 1),
            )

    def uncertain(self, memory: Memory) -> None:
        """Log and notify every name whose hold or migrated mark may have been
        lost (a damaged state file, now or before this start)."""
        if memory.uncertain is not None:
            doubts = [(EVERY_GUEST, memory.uncertain)]
        else:
            doubts = [(n, memory.guest(n).uncertain or "") for n in uncertain_names(memory)]
        for guest, reason in doubts:
            self.log.error(
                UNCERTAIN_EVENT,
                guest=guest,
                error=reason,
                fix="xenreconcile hold NAME or release NAME decides; accept-state trusts all",
            )
            self._notify(guest, UNCERTAIN_EVENT, reason)

    def unread_rows(self, rows: Sequence[UnreadRow], suspected: Sequence[str]) -> None:
        """Log, and notify, unreadable rows of the listing once per change."""
        key = (len(rows), frozenset(suspected)) if rows else None
        if key == self._unread:
            return
        self._unread = key
        if key is None:
            self.log.info("xl_list_rows_readable")
            return
        error = str(rows[0])
        guests = sorted(suspected)
        self.log.warning(
            UNREADABLE_ROWS_EVENT,
            error=error,
            rows=[f"line {row.line}: {row.text!r}" for row in rows],
            not_acted_on=guests,
        )
        self._notify(",".join(guests), UNREADABLE_ROWS_EVENT, error)

    def toolstack(self, error: str | None, failures: int) -> None:
        """Log a failed listing (a new error as a warning, a repeated one at debug
        level) and the first good one after failures."""
        if error is None:
            if self._toolstack_error is not None:
                self.log.info("toolstack_ready", after_failures=failures)
        elif error != self._toolstack_error:
            self.log.warning("toolstack_error", error=error, failures=failures)
        else:
            self.log.debug("toolstack_error", error=error, failures=failures)
        self._toolstack_error = error

    def scan(self, desired: DesiredState, guests_dir: str) -> None:
        """Log a directory problem, and each invalid or duplicate file, once per change."""
        if desired.error != self._dir_error:
            if desired.error:
                self.log.error("guests_dir_unusable", error=desired.error)
            else:
                self.log.info("guests_dir_ok", guests_dir=guests_dir)
            self._dir_error = desired.error
        current: dict[str, str] = {}
        for bad in desired.invalid:
            current[bad.path] = bad.reason
            if self._invalid.get(bad.path) != bad.reason:
                self.log.error(
                    "invalid_file", guest=bad.name, file=bad.path, line=bad.line, error=bad.reason
                )
        for name, paths in desired.duplicates.items():
            for path in paths:
                reason = f"duplicate name {name!r}: " + ", ".join(paths)
                current[path] = reason
                if self._invalid.get(path) != reason:
                    self.log.error("duplicate_name", guest=name, file=path, files=list(paths))
        self._invalid = current
