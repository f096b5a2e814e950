"""The long-running loop: scan, list, plan, start creates, remember, repeat.

The loop in the spirit of a controller-runtime controller. Its thread (the
main thread) owns all state: the memory, the creates in flight, the timers and
every part below. Other threads only post to its one door, `LoopQueue`: the
watcher's thread (`sources.WatchSource`) and the `@releaseDomain` watch's
(`releasewatch.ReleaseWatchSource`) post `Hint.CHANGED`, signal handlers
post `Hint.STOP` / `Hint.RELOAD`, and each create worker's thread
(`creates.CreateWorkers`) posts its `Finished` result. The loop polls the
request inbox (`inbox`) every REQUEST_POLL seconds and runs a pass every
`interval`, soon after a hint, a result or a request, and at the time the
planner asked to be woken (`Plan.wake_at`). A pass's inputs come from
`passinputs.PassInputs`; what it learns goes to the event sink (`eventsink`),
its memory to `keeper.StateKeeper`, its status to `statusfile.StatusFile`.
Every wait and deadline is on the injectable clock's monotonic time.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from xenreconcile import __version__, logs, planner
from xenreconcile.backoff import toolstack_delay
from xenreconcile.clock import Clock, SystemClock, epoch_offset
from xenreconcile.config import Config, ConfigError, load_config
from xenreconcile.creates import CreateStarter, CreateWorkers, Joinable
from xenreconcile.eventsink import EventSink
from xenreconcile.guestdir import GuestDirScanner
from xenreconcile.hostcycle import HostCycle
from xenreconcile.inbox import RequestInbox
from xenreconcile.keeper import DaemonError, StateKeeper
from xenreconcile.loopqueue import Finished, Hint, LoopQueue
from xenreconcile.models import GuestStatus, Memory, Plan, PoolGate
from xenreconcile.passinputs import Observation, PassInputs, Runner, xl_command
from xenreconcile.poolmode import pool_agent, pool_gate, pool_summary, preferred_hosts
from xenreconcile.releasewatch import ReleaseWatchSource
from xenreconcile.sdnotify import Notifier
from xenreconcile.sources import WatchSource
from xenreconcile.state import Boot, StateStore, read_boot
from xenreconcile.statusfile import STATUS_FILE, StatusFile

if TYPE_CHECKING:
    from xenreconcile.metrics import MetricsSink

__all__ = ["STATUS_FILE", "Daemon", "DaemonError", "Joinable", "toolstack_delay", "xl_command"]

REQUEST_POLL = 0.5  # how often the loop looks for hold/release/retry requests


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
    notifier: Notifier = field(default_factory=Notifier.from_env)

    def __post_init__(self) -> None:
        self.log = logs.get_logger()
        self.door = LoopQueue()
        self.inputs = PassInputs(self.config, self.runner, self.read_boot)
        self.host = HostCycle(self.inputs, self.log)
        self.keeper = StateKeeper(self.config.state_dir, self.clock, self.log)
        self.sink = EventSink(self.log, self.config.notify_command or ())
        self.inbox = RequestInbox(self.config.state_dir, self.log)
        self.status_file = StatusFile(self.config.state_dir, self.log)
        self.workers = CreateWorkers(self.door, self.create_starter)
        self.memory = Memory()
        self.stopping = False
        self.pass_due = True
        self.next_pass_at = 0.0
        self.wake_at: float | None = None
        self.last_plan: Plan | None = None
        self.toolstack_failures = 0
        self.source: WatchSource | None = None
        self.release_source: ReleaseWatchSource | None = None
        self.metrics = open_metrics(self.config, self.log)
        self.passes = 0
        self.pool = pool_agent(self.config, self.clock.monotonic, self.log)

    @property
    def store(self) -> StateStore:
        """The state store the keeper locks and saves to."""
        return self.keeper.store

    @property
    def scanner(self) -> GuestDirScanner:
        """The scanner of the current config."""
        return self.inputs.scanner

    @property
    def in_flight(self) -> dict[str, Joinable]:
        """The creates in flight, by guest name."""
        return self.workers.in_flight

    # --- sources: safe from any thread and from signal handlers ---------------------------

    def stop(self) -> None:
        """Ask the loop to stop."""
        self.door.post(Hint.STOP)

    def hint(self) -> None:
        """Something may have changed: run a pass as soon as the loop wakes."""
        self.door.post(Hint.CHANGED)

    def reload(self) -> None:
        """Ask the loop to reload its config."""
        self.door.post(Hint.RELOAD)

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.reload())

    # --- start and stop ----------------------------------------------------------------

    def start(self) -> None:
        """Lock and load the state, notice a Dom0 reboot, take pending requests.
        Raises DaemonError when another daemon holds the state."""
        self.keeper.lock()
        self.memory = self.keeper.load(self.inputs, self.read_boot)
        self.log.info(
            "started",
            version=__version__,
            pid=os.getpid(),
            guests_dir=self.config.guests_dir,
            xl=" ".join(xl_command(self.config)),
            state_dir=self.config.state_dir,
        )
        self.sink.uncertain(self.memory)
        self.host.at_start()
        self._take_requests()
        self.keeper.save(self.memory)

    def shutdown(self) -> None:
        """Wait up to `stop_timeout` for creates in flight, fold in their results,
        save, unlock. Creates still running are left to finish on their own."""
        self.notifier.stopping()
        if self.in_flight:
            self.log.info("stopping", in_flight=sorted(self.in_flight))
        deadline = time.monotonic() + self.config.stop_timeout
        self.workers.join(lambda: max(0.0, deadline - time.monotonic()))
        self._take_messages()
        if self.in_flight:
            self.log.warning("left_running", guests=sorted(self.in_flight))
        self._close_source()
        if self.release_source is not None:
            self.release_source.close()
        if self.metrics is not None:
            self.metrics.close()
        self.keeper.save(self.memory, force=True)  # also records this boot's uptime
        self.status_file.remove()
        self.keeper.unlock()
        self.log.info("stopped")
        logs.complete()

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code (0)."""
        self.start()
        try:
            # The first pass (a boot's creates) waits for nothing the sources need to
            # start (pyinotify's import, xenstore-watch); the pass asked for once they
            # are up sees whatever changed meanwhile.
            self.step(wait=False)
            self._open_source()
            if self.use_watcher:
                self.release_source = ReleaseWatchSource(self.door, self.log)
            self.hint()
            while not self.stopping:
                self.step()
        finally:
            self.shutdown()
        return 0

    def step(self, *, wait: bool = True) -> None:
        """One turn of the loop: take messages and requests, pass when due, then
        (if `wait`) wait for the next message or the next pass."""
        self.notifier.tick(self.clock.monotonic())
        self._take_messages()
        self._take_requests()
        self.host.answer(creating=bool(self.in_flight))
        now = self.clock.monotonic()
        timer_due = now >= self.next_pass_at or (self.wake_at is not None and now >= self.wake_at)
        if self.pass_due or timer_due:
            self.run_pass(now)
            now = self.clock.monotonic()
        deadline = min(self.next_pass_at, now + REQUEST_POLL)
        if self.wake_at is not None:
            deadline = min(deadline, self.wake_at)
        if wait and not self.stopping:
            self.door.wait(self.clock, deadline - now)

    def run_once(self) -> int:
        """Converge (see `converge_once`), then 0 if every desired guest runs, else 1."""
        self.start()
        try:
            self.converge_once()
            seen = self._observe()
            gate = pool_gate(self.pool, seen.desired, seen.listing)
            final = self.inputs.plan(seen, self.memory, (), self.clock.monotonic(), pool=gate)
            self.last_plan = final
            bad = problems(final)
            for status in bad:
                self.log.warning("not_running", guest=status.name, state=status.state.value)
            return 1 if bad or seen.listing is None or seen.desired.error else 0
        finally:
            self.keeper.save(self.memory)
            self.keeper.unlock()

    def converge_once(self) -> None:
        """Pass after pass, every create that can be done now, order groups
        included, waiting for each, until nothing more can happen without waiting
        for a backoff (or a stop is asked)."""
        from xenreconcile import converge  # noqa: PLC0415 - deferred: run --once only

        while not self.stopping:
            plan = self.run_pass(self.clock.monotonic())
            if self.in_flight:
                self._wait_for_a_result()
                continue
            delay = converge.wait_before_next_pass(plan, self.clock.monotonic())
            if delay is None:
                return
            self.door.wait(self.clock, delay)
            self._take_messages()

    def _wait_for_a_result(self) -> None:
        """Block until a create in flight ends (or a stop is asked): the next
        pass has nothing new to see before."""
        while self.in_flight and not self.pass_due and not self.stopping:
            self.door.wait(self.clock, REQUEST_POLL)
            self._take_messages()

    def run_pass(self, now: float) -> Plan:
        """Scan, list, plan, start the planned creates, save. Returns the plan."""
        self.pass_due = False
        seen, self.memory = self.host.before_plan(self._observe(), self.memory, now)
        gate = pool_gate(self.pool, seen.desired, seen.listing)
        plan = self.inputs.plan(
            seen, self.memory, set(self.in_flight), now, starting=True, pool=gate
        )
        self.memory, self.last_plan = plan.memory, plan
        for event in plan.events:
            self.sink.event(event, self.memory, now)
        for action in plan.creates:
            self.sink.create_started(action)
            self.workers.start(action, self.inputs)
        failing = toolstack_delay(self.toolstack_failures, self.config.interval)
        self.next_pass_at = now + (failing if seen.listing is None else self.config.interval)
        if self.pool is not None:  # the lease is renewed in passes
            self.next_pass_at = min(self.next_pass_at, now + self.pool.renew_every)
        self.wake_at = plan.wake_at
        self.keeper.save(self.memory)
        wall_now = now + epoch_offset(self.clock)
        self._write_status(plan, seen, now, wall_now, gate)
        if self.metrics is not None:
            from xenreconcile.metrics import pass_view  # noqa: PLC0415 - metrics only when set

            self.metrics.pass_done(pass_view(plan, now, wall_now, gate))
        self.passes += 1
        if self.passes == 1:
            logs.complete()  # the boot's creates are started: now structlog (cmd_run defers it)
            self.notifier.ready(f"first pass done: {len(plan.statuses)} guest(s)")
        return plan

    def _observe(self) -> Observation:
        """Observe once, reporting what lasts (bad files, failing xl) once per change."""
        seen = self.inputs.observe()
        self.sink.scan(seen.desired, self.config.guests_dir)
        self.toolstack_failures = 0 if seen.error is None else self.toolstack_failures + 1
        self.sink.toolstack(seen.error, self.toolstack_failures)
        if seen.listing is not None:
            self.sink.unread_rows(seen.unread_rows, list(seen.suspects))
        return seen

    # --- messages and requests -----------------------------------------------------------

    def _take_messages(self) -> None:
        """Fold in every message the door holds."""
        for message in self.door.take_all():
            if message is Hint.STOP:
                self.stopping = True
            elif message is Hint.RELOAD:
                self._reload()
            elif message is Hint.CHANGED:
                self.pass_due = True
            elif isinstance(message, Finished):
                self._finished(message)

    def _finished(self, done: Finished) -> None:
        """Fold a create's result into memory; a pass follows."""
        self.workers.finished(done.action.name)
        now = self.clock.monotonic()
        self.memory, events = planner.record_create(
            self.memory, done.action, done.result, now, self.inputs.settings
        )
        self.sink.create_result(done.action, done.result, self.memory, now)
        if self.metrics is not None:
            self.metrics.create_done(done.action, done.result)
        for event in events:
            self.sink.event(event, self.memory, now)
        self.pass_due = True
        self.keeper.save(self.memory)

    def _take_requests(self) -> None:
        """Apply new request files; delete them once the state holding them is saved."""
        now = self.clock.monotonic()
        self.memory, changed = self.inbox.take(self.memory, now, self.keeper.read_only)
        self.pass_due = self.pass_due or changed
        if self.inbox.applied and self.keeper.save(self.memory):
            self.inbox.settle()

    def _write_status(
        self,
        plan: Plan,
        seen: Observation,
        now: float,
        wall_now: float,
        gate: PoolGate | None = None,
    ) -> None:
        """Write the status document for `xenreconcile status`: every pass, since
        it says when the last pass was (`daemon.last_pass`, the loop's liveness)."""
        # deferred: the first status is written after the first pass started its creates
        from xenreconcile import report  # noqa: PLC0415

        doc = report.status_document(
            plan,
            now=now,
            wall_now=wall_now,
            daemon_pid=os.getpid(),
            toolstack_error=seen.shown_error,
            watcher=self.source.name if self.source else None,
            in_flight=self.in_flight,
        )
        doc["daemon"]["last_pass"] = doc["generated_at"]
        summary = pool_summary(self.pool, gate)
        if summary is not None:
            doc["pool"] = summary
        self.status_file.write(doc)

    # --- watcher and reload --------------------------------------------------------------

    def _open_source(self) -> None:
        if self.use_watcher:
            self.source = WatchSource(self.config, self.door, self.log)

    def _close_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def _reload(self) -> None:
        """Reload the config file; a bad one is logged and the old one kept."""
        self.pass_due = True
        new = reloaded_config(self.config, self.config_path, self.log)
        if new is None:
            return
        old, self.config = self.config, new
        self.inputs = PassInputs(new, self.runner, self.read_boot)
        self.host = HostCycle(self.inputs, self.log)
        self.sink.notify_command = new.notify_command or ()
        if self.pool is not None:
            self.pool.preferred = preferred_hosts(new)
        if (new.watch, new.guests_dir) != (old.watch, old.guests_dir) and self.source:
            self._close_source()
            self._open_source()
        if (new.metrics_listen, new.metrics_textfile) != (old.metrics_listen, old.metrics_textfile):
            if self.metrics is not None:
                self.metrics.close()
            self.metrics = open_metrics(new, self.log)
        self.log.info("config_reloaded", config=self.config_path)


def problems(plan: Plan) -> list[GuestStatus]:
    """Given a plan, the statuses `run --once` counts as not done."""
    from xenreconcile import report  # noqa: PLC0415 - deferred: needed once the creates are done

    return [status for status in plan.statuses if report.is_problem(status)]


def open_metrics(config: Config, log: Any) -> MetricsSink | None:
    """The metrics exporter `config` asks for, or None when it asks for none (the
    metrics module is then never imported)."""
    if config.metrics_listen is None and config.metrics_textfile is None:
        return None
    from xenreconcile import metrics  # noqa: PLC0415 - metrics only when set

    return metrics.open_sink(config.metrics_listen, config.metrics_textfile, log)


def reloaded_config(old: Config, path: str | None, log: Any) -> Config | None:
    """Given the running config and its file, reopen the log and load the file
    again; returns the new config (its state_dir the old one: changing it takes a
    restart), or None (logged) when the file is bad."""
    logs.reopen()
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("config_reload_failed", error=str(exc), kept="previous config")
        return None
    if new.state_dir != old.state_dir:
        log.warning("state_dir_unchanged", error="a new state_dir takes a restart")
        new = replace(new, state_dir=old.state_dir)
    if new.pool != old.pool:  # pool mode on, off or elsewhere while guests run: never live
        log.warning("pool_unchanged", error="a change of `pool` takes a restart")
        new = replace(new, pool=old.pool)
    logging_keys = (new.log_file, new.log_format, new.log_level)
    if logging_keys != (old.log_file, old.log_format, old.log_level):
        try:
            logs.configure(new.log_file, new.log_format, new.log_level)
        except OSError as exc:
            log.error("log_reopen_failed", error=str(exc))
    return new
