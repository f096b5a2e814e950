"""The long-running loop: scan, list, plan, start creates, remember, repeat.

One main thread owns all state. Create workers and the directory watcher run
in threads of their own and only hand results back through a queue and a wake
event. A pass runs every `interval`, soon after a watcher hint, after a create
finished, after an admin request, after SIGHUP, and at the time the planner
asked to be woken (`Plan.wake_at`). Time comes from an injectable clock: every
wait and deadline is monotonic; state.json and status.json get epoch seconds,
converted when they are written and (clamped) when state.json is read.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from xenreconcile import __version__, control, logs, partial, planner, report
from xenreconcile.backoff import toolstack_delay
from xenreconcile.clock import Clock, SystemClock, epoch_offset, from_epoch, to_epoch
from xenreconcile.config import Config, ConfigError, load_config
from xenreconcile.errors import XenreconcileError
from xenreconcile.guestdir import GuestDirScanner
from xenreconcile.models import (
    CreateAction,
    CreateResult,
    DesiredState,
    Domain,
    Event,
    EventKind,
    GuestState,
    Memory,
    Plan,
    PlannerSettings,
)
from xenreconcile.notify import notify_async
from xenreconcile.state import (
    Boot,
    StateStore,
    read_boot,
    same_boot,
    saved_boot,
    uncertain_names,
    write_atomically,
)
from xenreconcile.watch import Watcher, WatchUnavailable, make_watcher
from xenreconcile.xl import (
    ToolstackError,
    UnreadRow,
    XlListRowsError,
    XlRunner,
    create_checked,
)

POLL_INTERVAL = 0.5  # the poll watcher's period: a change is seen within 1 s
REQUEST_POLL = 0.5  # how often the loop looks for hold/release/retry requests
LOCK_WAIT = 5.0  # how long start-up waits for a CLI command holding the state lock
STATUS_FILE = "status.json"
UNCERTAIN_EVENT = "state_uncertain"  # XR_EVENT of the notification about lost holds
EVERY_GUEST = "*"  # XR_GUEST when every name is uncertain
NOTIFY_EVENTS = {EventKind.GAVE_UP, EventKind.FAILING, EventKind.RECOVERED, EventKind.LEFTOVER}
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
}


class Runner(Protocol):
    """What the loop needs from the xl adapter."""

    def list(self) -> tuple[Domain, ...]: ...
    def create(self, path: str) -> CreateResult: ...
    def create_from_bytes(self, data: bytes, shown_path: str) -> CreateResult: ...


class Joinable(Protocol):
    """A create in flight that can be waited for."""

    def join(self, timeout: float | None = None) -> None: ...


# Given a create and the callback to hand its result to, start it; returns a
# handle to wait for. The default runs the xl adapter in a thread; tests and the
# chaos soak pass one driven by a simulated world and a fake clock.
CreateStarter = Callable[[CreateAction, Callable[[CreateResult], None]], Joinable]


class DaemonError(XenreconcileError):
    """The daemon cannot start (state directory locked or unusable)."""


def xl_command(config: Config) -> list[str]:
    """The xl program and its fixed arguments from the config key `xl`."""
    value: Any = config.xl
    return [value] if isinstance(value, str) else list(value)


def xl_log_path(name: str) -> str:
    """Where xl itself logs the domain's creation."""
    return f"/var/log/xen/xl-{name}.log"


@dataclass
class Daemon:
    """The reconciliation loop for one config."""

    config: Config
    config_path: str | None = None
    clock: Clock = field(default_factory=SystemClock)
    runner: Runner | None = None
    read_boot: Callable[[], Boot] = read_boot
    use_watcher: bool = True
    create_starter: CreateStarter | None = None

    def __post_init__(self) -> None:
        self.log = logs.get_logger()
        self.store = StateStore(self.config.state_dir)
        self.memory = Memory()
        self.persisted: Memory | None = None  # the memory state.json holds, if known
        self.boot = Boot()
        self.boot_read_at = 0.0
        self.scanner = self._make_scanner()
        if self.runner is None:
            self.runner = self._make_runner()
        self.in_flight: dict[str, Joinable] = {}
        self.results: queue.SimpleQueue[tuple[CreateAction, CreateResult]] = queue.SimpleQueue()
        self.wake = threading.Event()
        self.stopping = False
        self.reload_wanted = False
        self.pass_due = True
        self.next_pass_at = 0.0
        self.wake_at: float | None = None
        self.last_plan: Plan | None = None
        self.toolstack_failures = 0
        self.toolstack_error: str | None = None
        self.unread_rows: tuple[UnreadRow, ...] = ()
        self.reported_unread: tuple[int, frozenset[str]] | None = None
        self.reported_invalid: dict[str, str] = {}
        self.reported_dir_error: str | None = None
        self.save_failed = False
        # Request files applied to memory but not yet deleted (their save is pending).
        self.applied_requests: set[str] = set()
        self.reported_requests_error: str | None = None
        self.last_status: str | None = None
        self.watcher: Watcher | None = None
        self.watch_generation = 0

    # --- construction helpers -----------------------------------------------------------

    def _make_scanner(self) -> GuestDirScanner:
        return GuestDirScanner(
            self.config.guests_dir, strict_permissions=self.config.strict_permissions
        )

    def _make_runner(self) -> Runner:
        return XlRunner(
            xl_command(self.config),
            list_timeout=self.config.list_timeout,
            create_timeout=self.config.xl_timeout,
        )

    @property
    def settings(self) -> PlannerSettings:
        """The planner's view of the current config."""
        return self.config.planner_settings()

    # --- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        """Lock and load the state, notice a Dom0 reboot, take pending requests.
        Raises DaemonError when another daemon holds the state."""
        deadline = time.monotonic() + LOCK_WAIT
        while not self.store.try_lock():
            if time.monotonic() >= deadline:
                raise DaemonError(
                    f"{self.config.state_dir} is locked: another xenreconcile daemon is running"
                )
            time.sleep(0.1)
        on_disk, warning = self.store.load()
        if self.store.read_only is not None:
            self.log.error("state_newer", error=self.store.read_only)
        elif warning:
            self.log.error("state_corrupt", error=warning)
        now = self.clock.monotonic()
        memory = from_epoch(on_disk, epoch_offset(self.clock), now, self.settings)
        self.boot, self.boot_read_at = self.read_boot(), now
        self.memory = planner.forget_runtime(self._adopt_boot(memory))
        self.log.info(
            "started",
            version=__version__,
            pid=os.getpid(),
            guests_dir=self.config.guests_dir,
            xl=" ".join(xl_command(self.config)),
            state_dir=self.config.state_dir,
        )
        self._report_uncertain()
        self._take_requests()
        self._save()

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

    def stop(self) -> None:
        """Ask the loop to stop (safe from a signal handler)."""
        self.stopping = True
        self.wake.set()

    def hint(self) -> None:
        """Something may have changed (a watcher saw the guests directory change):
        run a pass as soon as the loop wakes (safe from any thread)."""
        self.pass_due = True
        self.wake.set()

    def reload(self) -> None:
        """Ask the loop to reload its config (safe from a signal handler)."""
        self.reload_wanted = True
        self.wake.set()

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.reload())

    def shutdown(self) -> None:
        """Wait up to `stop_timeout` for creates in flight, fold in their results,
        save, unlock. Creates still running are left to finish on their own."""
        if self.in_flight:
            self.log.info("stopping", in_flight=sorted(self.in_flight))
        deadline = time.monotonic() + self.config.stop_timeout
        for thread in list(self.in_flight.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._drain_results()
        if self.in_flight:
            self.log.warning("left_running", guests=sorted(self.in_flight))
        self._close_watcher()
        self._save(force=True)  # also records the uptime at which this boot was last seen
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.config.state_dir, STATUS_FILE))
        self.store.unlock()
        self.log.info("stopped")

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code (0)."""
        self.start()
        try:
            self._start_watcher()
            while not self.stopping:
                self.step()
        finally:
            self.shutdown()
        return 0

    def step(self) -> None:
        """One turn of the loop: fold in results and requests, pass when due, wait."""
        self._drain_results()
        self._take_requests()
        if self.reload_wanted:
            self._reload()
        now = self.clock.monotonic()
        if (
            self.pass_due
            or now >= self.next_pass_at
            or (self.wake_at is not None and now >= self.wake_at)
        ):
            self.run_pass(now)
            now = self.clock.monotonic()
        deadline = min(self.next_pass_at, now + REQUEST_POLL)
        if self.wake_at is not None:
            deadline = min(deadline, self.wake_at)
        if not self.stopping and self.results.empty():
            self.clock.wait(self.wake, deadline - now)
        self.wake.clear()

    def run_once(self) -> int:
        """One pass, wait for its creates, then 0 if every desired guest runs, else 1."""
        self.start()
        try:
            self.run_pass(self.clock.monotonic())
            for thread in list(self.in_flight.values()):
                thread.join()
            self._drain_results()
            listing = self._list()
            desired = self.scanner.scan()
            final = self._plan(desired, listing, set(), self.clock.monotonic())
            self.last_plan = final
            bad = [s for s in final.statuses if report.is_problem(s)]
            for status in bad:
                self.log.warning("not_running", guest=status.name, state=status.state.value)
            return 1 if bad or listing is None or desired.error else 0
        finally:
            self._save()
            self.store.unlock()

    def run_pass(self, now: float) -> Plan:
        """Scan, list, plan, start the planned creates, save. Returns the plan."""
        self.pass_due = False
        desired = self.scanner.scan()
        self._report_scan(desired)
        listing = self._list()
        plan = self._plan(desired, listing, set(self.in_flight), now)
        self.memory = plan.memory
        self.last_plan = plan
        for event in plan.events:
            self._on_event(event)
        for action in plan.creates:
            self._start_create(action)
        if listing is None:
            delay = toolstack_delay(self.toolstack_failures, self.config.interval)
            self.next_pass_at = now + delay
        else:
            self.next_pass_at = now + self.config.interval
        self.wake_at = plan.wake_at
        self._save()
        self._write_status(now)
        return plan

    # --- adapters ------------------------------------------------------------------------------

    def _plan(
        self,
        desired: DesiredState,
        listing: tuple[Domain, ...] | None,
        in_flight: set[str],
        now: float,
    ) -> Plan:
        """The planner's plan for this pass, deciding nothing about the guests an
        unreadable row of the listing could be (see `partial`)."""
        plan = planner.plan(desired, listing, self.memory, in_flight, now, self.settings)
        if listing is None:
            return plan
        suspected = partial.suspects(desired, self.unread_rows)
        self._report_unread(suspected)
        return partial.restrict(plan, self.memory, suspected)

    def _report_unread(self, suspected: dict[str, str]) -> None:
        """Log, and notify, unreadable rows of the listing once per change."""
        key = (len(self.unread_rows), frozenset(suspected)) if self.unread_rows else None
        if key == self.reported_unread:
            return
        self.reported_unread = key
        if key is None:
            self.log.info("xl_list_rows_readable")
            return
        error = str(self.unread_rows[0])
        guests = sorted(suspected)
        self.log.warning(
            UNREADABLE_ROWS_EVENT,
            error=error,
            rows=[f"line {row.line}: {row.text!r}" for row in self.unread_rows],
            not_acted_on=guests,
        )
        notify_async(
            self.config.notify_command or (),
            ",".join(guests),
            UNREADABLE_ROWS_EVENT,
            error,
            self.log,
        )

    def _list(self) -> tuple[Domain, ...] | None:
        assert self.runner is not None
        self.unread_rows = ()
        try:
            domains = self.runner.list()
        except XlListRowsError as exc:
            self.unread_rows = exc.rows
            domains = exc.domains
        except ToolstackError as exc:
            self.toolstack_failures += 1
            error = str(exc)
            if error != self.toolstack_error:
                self.log.warning("toolstack_error", error=error, failures=self.toolstack_failures)
            else:
                self.log.debug("toolstack_error", error=error, failures=self.toolstack_failures)
            self.toolstack_error = error
            return None
        if self.toolstack_failures:
            self.log.info("toolstack_ready", after_failures=self.toolstack_failures)
        self.toolstack_failures = 0
        self.toolstack_error = None
        return domains

    def _report_scan(self, desired: DesiredState) -> None:
        """Log a directory problem, and each invalid or duplicate file, once per change."""
        if desired.error != self.reported_dir_error:
            if desired.error:
                self.log.error("guests_dir_unusable", error=desired.error)
            else:
                self.log.info("guests_dir_ok", guests_dir=self.config.guests_dir)
            self.reported_dir_error = desired.error
        current: dict[str, str] = {}
        for bad in desired.invalid:
            current[bad.path] = bad.reason
            if self.reported_invalid.get(bad.path) != bad.reason:
                self.log.error(
                    "invalid_file", guest=bad.name, file=bad.path, line=bad.line, error=bad.reason
                )
        for name, paths in desired.duplicates.items():
            for path in paths:
                reason = f"duplicate name {name!r}: " + ", ".join(paths)
                current[path] = reason
                if self.reported_invalid.get(path) != reason:
                    self.log.error("duplicate_name", guest=name, file=path, files=list(paths))
        self.reported_invalid = current

    def _start_create(self, action: CreateAction) -> None:
        self.log.info("create_started", guest=action.name, file=action.path)

        def done(result: CreateResult) -> None:
            self.results.put((action, result))
            self.wake.set()

        starter = self.create_starter or self._create_in_thread
        self.in_flight[action.name] = starter(action, done)

    def _create_in_thread(
        self, action: CreateAction, done: Callable[[CreateResult], None]
    ) -> threading.Thread:
        """Run `xl create` for `action` in a daemon thread on the very bytes the
        scan checked; `done` gets the result."""
        runner = self.runner
        assert runner is not None
        data = self.scanner.checked_bytes(action.path, action.cfg_hash)

        def work() -> None:
            try:
                result = create_checked(runner.create_from_bytes, action, data)
            except Exception as exc:  # a bug in the adapter must not kill the loop
                result = CreateResult(
                    ok=False, exit_code=None, stderr_tail=f"internal error: {exc!r}"
                )
            done(result)

        thread = threading.Thread(target=work, name=f"create-{action.name}", daemon=True)
        thread.start()
        return thread

    def _drain_results(self) -> None:
        while True:
            try:
                action, result = self.results.get_nowait()
            except queue.Empty:
                return
            self.in_flight.pop(action.name, None)
            now = self.clock.monotonic()
            self.memory, events = planner.record_create(
                self.memory, action, result, now, self.settings
            )
            if result.ok:
                self.log.info(
                    "create_ok",
                    guest=action.name,
                    file=action.path,
                    seconds=round(result.duration, 2),
                )
            else:
                self.log.error(
                    "create_failed",
                    guest=action.name,
                    file=action.path,
                    exit_code=result.exit_code,
                    timed_out=result.timed_out,
                    stderr=result.stderr_tail.strip(),
                    xl_log=xl_log_path(action.name),
                )
                self._log_retry(action.name, now)
            for event in events:
                self._on_event(event)
            self.pass_due = True
            self._save()

    def _log_retry(self, name: str, now: float) -> None:
        memory = self.memory.guest(name)
        if memory.next_retry is not None:
            self.log.info(
                "retry_scheduled",
                guest=name,
                attempts=memory.attempts,
                delay=round(memory.next_retry - now, 1),
            )

    def _on_event(self, event: Event) -> None:
        level, name = EVENT_LOG[event.kind]
        extra = {} if event.error is None else {"error": event.error}
        getattr(self.log, level)(name, guest=event.name, **extra)
        if event.kind == EventKind.DIED_EARLY:
            self._log_retry(event.name, self.clock.monotonic())
        if event.kind in NOTIFY_EVENTS:
            notify_async(
                self.config.notify_command or (),
                event.name,
                event.kind.value,
                event.error,
                self.log,
            )

    def _report_uncertain(self) -> None:
        """Log and notify every name whose hold or migrated mark may have been lost
        (a damaged state file, now or before this start): none is created until
        an admin decides."""
        if self.memory.uncertain is not None:
            doubts = [(EVERY_GUEST, self.memory.uncertain)]
        else:
            doubts = [
                (n, self.memory.guest(n).uncertain or "") for n in uncertain_names(self.memory)
            ]
        for guest, reason in doubts:
            self.log.error(
                UNCERTAIN_EVENT,
                guest=guest,
                error=reason,
                fix="xenreconcile hold NAME or release NAME decides; accept-state trusts all",
            )
            notify_async(self.config.notify_command or (), guest, UNCERTAIN_EVENT, reason, self.log)

    def _take_requests(self) -> None:
        """Apply each new request file to memory once, and delete the files once
        the state that holds them is saved (until then they are not applied again)."""
        try:
            found = control.read_requests(self.config.state_dir)
        except control.RequestDirError as exc:
            if str(exc) != self.reported_requests_error:
                self.log.error("requests_dir_unsafe", error=str(exc))
            self.reported_requests_error = str(exc)
            return
        self.reported_requests_error = None
        self.applied_requests &= {path.name for path, _request in found}
        for path, request in found:
            if isinstance(request, control.RequestError):
                self.log.error("bad_request", error=str(request))
                self._remove_request(path)
            elif self.store.read_only is not None:
                self.log.error("request_refused", guest=request.name, error=self.store.read_only)
                self._remove_request(path)
            elif path.name not in self.applied_requests:
                self.memory = control.apply(self.memory, request, self.clock.monotonic())
                self.log.info(request.op, guest=request.name, reason=request.reason)
                self.applied_requests.add(path.name)
                self.pass_due = True
        if self.applied_requests and self._save():
            directory = control.requests_dir(self.config.state_dir)
            for name in sorted(self.applied_requests):
                if self._remove_request(directory / name):
                    self.applied_requests.discard(name)

    def _remove_request(self, path: Path) -> bool:
        """Delete a request file; True when it is gone."""
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            self.log.debug("request_remove_failed", file=str(path), error=str(exc))
            return False
        return True

    def _save(self, *, force: bool = False) -> bool:
        """Persist memory (in epoch seconds) when it changed since the last save, or
        when `force`d; True when the state on disk is current. A state file of a
        newer format is never written (False)."""
        if self.store.read_only is not None:
            return False
        if self.memory == self.persisted and not force:
            return True
        on_disk = replace(
            to_epoch(self.memory, epoch_offset(self.clock)), saved_uptime=self._uptime()
        )
        try:
            self.store.save(on_disk)
        except OSError as exc:
            if not self.save_failed:
                self.log.error("state_save_failed", state_dir=self.config.state_dir, error=str(exc))
            self.save_failed = True
            return False
        if self.save_failed:
            self.log.info("state_saved", state_dir=self.config.state_dir)
        self.save_failed = False
        self.persisted = self.memory
        return True

    def _uptime(self) -> float | None:
        """The Dom0's uptime now: as read at start, plus the time passed since."""
        if self.boot.uptime is None:
            return None
        return self.boot.uptime + (self.clock.monotonic() - self.boot_read_at)

    def _write_status(self, now: float) -> None:
        """Write the status document for `xenreconcile status` when it changed."""
        if self.last_plan is None:
            return
        plan = self.last_plan
        if self.in_flight:  # creates started by this very pass show as creating
            plan = replace(
                plan,
                statuses=tuple(
                    replace(st, state=GuestState.CREATING)
                    if st.name in self.in_flight and st.state == GuestState.PENDING
                    else st
                    for st in plan.statuses
                ),
            )
        doc = report.status_document(
            plan,
            now=now,
            wall_now=now + epoch_offset(self.clock),
            daemon_pid=os.getpid(),
            toolstack_error=self.toolstack_error
            or (str(self.unread_rows[0]) if self.unread_rows else None),
            watcher=self.watcher.name if self.watcher else None,
        )
        body = json.dumps({k: v for k, v in doc.items() if k != "generated_at"}, sort_keys=True)
        if body == self.last_status:
            return
        try:
            text = json.dumps(doc, indent=1)
            write_atomically(self.config.state_dir, STATUS_FILE, text, durable=False)
        except OSError as exc:
            self.log.debug("status_write_failed", error=str(exc))
            return
        self.last_status = body

    # --- watcher and reload -------------------------------------------------------------

    def _start_watcher(self) -> None:
        if not self.use_watcher:
            return
        try:
            self.watcher = make_watcher(
                self.config.watch,
                self.config.guests_dir,
                poll_interval=POLL_INTERVAL,
                log=self._watch_log,
            )
        except WatchUnavailable as exc:
            self.log.warning("watch_unavailable", watch=self.config.watch, error=str(exc))
            self.watcher = make_watcher(
                "poll", self.config.guests_dir, poll_interval=POLL_INTERVAL, log=self._watch_log
            )
        self.log.info("watching", watcher=self.watcher.name, guests_dir=self.config.guests_dir)
        self.watch_generation += 1
        generation, watcher = self.watch_generation, self.watcher

        def watch() -> None:
            while not self.stopping and generation == self.watch_generation:
                if watcher.wait(1.0) and generation == self.watch_generation:
                    self.hint()

        threading.Thread(target=watch, name="watcher", daemon=True).start()

    def _watch_log(self, event: str, fields: dict[str, Any]) -> None:
        self.log.info(event, **fields)

    def _close_watcher(self) -> None:
        self.watch_generation += 1
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None

    def _reload(self) -> None:
        """Reload the config file; a bad one is logged and the old one kept."""
        self.reload_wanted = False
        self.pass_due = True
        logs.reopen()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self.log.error("config_reload_failed", error=str(exc), kept="previous config")
            return
        old, self.config = self.config, new
        if new.state_dir != old.state_dir:
            self.log.warning("state_dir_unchanged", error="a new state_dir takes a restart")
            self.config = replace(new, state_dir=old.state_dir)
        if (new.log_file, new.log_format, new.log_level) != (
            old.log_file,
            old.log_format,
            old.log_level,
        ):
            try:
                logs.configure(new.log_file, new.log_format, new.log_level)
            except OSError as exc:
                self.log.error("log_reopen_failed", error=str(exc))
        self.scanner = self._make_scanner()
        self.runner = self._make_runner()
        if (new.watch, new.guests_dir) != (old.watch, old.guests_dir) and self.watcher:
            self._close_watcher()
            self._start_watcher()
        self.log.info("config_reloaded", config=self.config_path)
