"""`stop NAME`, `start NAME`, `restart NAME`: an admin takes a guest down and
brings it back, with or without a running daemon.

Each first records the admin's will as a request (`control.deliver`, as `hold`
does: saved in state.json when no daemon runs, else taken by the daemon within
a second), so that nothing recreates a guest the admin is stopping, and then
acts on the toolstack itself:

* stop: the guest becomes *stopped* (kept down, whatever its restart policy);
  then `xl shutdown NAME` and a wait until it is no longer listed, up to the
  timeout. A guest that ignores the shutdown is left running (never destroyed)
  and stays stopped: exit 1.
* start: the guest is no longer stopped and its backoff is cleared; a running
  daemon creates it at its next pass, without one the command creates it
  itself, under the state lock, from the bytes the scan checked.
* restart: our own intent "restart" is recorded for the running life (it
  comes back whatever its policy), then as stop; a running daemon creates it
  again from its file once it is gone, without one the command does.

Nothing here runs while a request could not be delivered: a daemon that does
not take a stop request in time would recreate the guest we shut down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from xenreconcile import control, planner
from xenreconcile.clock import SystemClock
from xenreconcile.config import Config
from xenreconcile.errors import EXIT_FAILURE
from xenreconcile.keeper import StateKeeper
from xenreconcile.models import Domain, GuestStatus, Memory
from xenreconcile.passinputs import PassInputs, xl_command
from xenreconcile.state import Boot, read_boot
from xenreconcile.xl import ToolstackError, XlRunner, create_checked

EXIT_OK = 0
POLL = 0.2
# How long a request may take to reach a running daemon before the command gives
# up without touching the guest (a busy Dom0 can be slow; `hold` waits 3 s).
DELIVERY_WAIT = 15.0


@dataclass
class GuestOps:
    """The guest commands of one config; `say` prints a line for the admin."""

    config: Config
    say: Callable[[str], None]
    log: object
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    boot: Callable[[], Boot] = read_boot
    inputs: PassInputs = field(init=False)
    xl: XlRunner = field(init=False)

    def __post_init__(self) -> None:
        self.inputs = PassInputs(self.config)
        self.xl = XlRunner(xl_command(self.config), list_timeout=self.config.list_timeout)

    # --- the commands ---------------------------------------------------------------------

    def stop(self, name: str, timeout: float) -> int:
        """`stop NAME`: kept down, then shut down within `timeout` seconds."""
        if self._deliver(control.Request("stop", name)) is None:
            return EXIT_FAILURE
        return self._shut_down(name, timeout)

    def start(self, name: str) -> int:
        """`start NAME`: allowed to run again and created now."""
        delivery = self._deliver(control.Request("start", name))
        if delivery is None:
            return EXIT_FAILURE
        if delivery.daemon:
            self.say(f"{name}: the running daemon creates it at its next pass")
            return EXIT_OK
        return self._create_now(name)

    def restart(self, name: str, timeout: float) -> int:
        """`restart NAME`: shut down, then created again from its current file."""
        delivery = self._deliver(control.Request("restart", name))
        if delivery is None:
            return EXIT_FAILURE
        code = self._shut_down(name, timeout)
        if code != EXIT_OK:
            return code
        if delivery.daemon:
            self.say(f"{name}: the running daemon creates it again from its file")
            return EXIT_OK
        return self._create_now(name)

    # --- the steps ------------------------------------------------------------------------

    def _deliver(self, request: control.Request) -> control.Delivery | None:
        """Deliver `request`; None (said why) when a running daemon did not take it."""
        delivery = control.deliver(
            self.config.state_dir, request, wait=DELIVERY_WAIT, warn=self.say
        )
        self.say(delivery.message)
        if not delivery.applied:
            self.say(f"{request.describe()}: not acting on the guest until the daemon takes it")
            return None
        return delivery

    def _listed(self, name: str) -> Domain | None:
        """The domain listed under `name`, or None; ToolstackError if xl list fails."""
        return next((d for d in self.xl.list() if d.name == name), None)

    def _shut_down(self, name: str, timeout: float) -> int:
        """`xl shutdown NAME`, then wait up to `timeout` until it is no longer listed."""
        try:
            domain = self._listed(name)
        except ToolstackError as exc:
            self.say(f"{name}: cannot list the domains: {exc}")
            return EXIT_FAILURE
        if domain is None:
            self.say(f"{name}: not running")
            return EXIT_OK
        asked = self.xl.lifecycle(["shutdown", name], max(timeout, 1.0))
        if not asked.ok:
            why = "timed out" if asked.timed_out else "failed"
            self.say(f"{name}: xl shutdown {why}: {asked.stderr_tail.strip() or 'no output'}")
            return EXIT_FAILURE
        return self._wait_gone(name, domain.domid, timeout)

    def _wait_gone(self, name: str, domid: int, timeout: float) -> int:
        """Poll `xl list` until domain `domid` of `name` is gone, up to `timeout`."""
        deadline = self.monotonic() + timeout
        while True:
            if self._gone(name, domid):
                self.say(f"{name}: shut down (domid {domid})")
                return EXIT_OK
            if self.monotonic() >= deadline:
                self.say(
                    f"{name}: still running {timeout:g}s after xl shutdown (domid {domid}); "
                    "left running, never destroyed by xenreconcile"
                )
                return EXIT_FAILURE
            self.sleep(POLL)

    def _gone(self, name: str, domid: int) -> bool:
        """True when a trusted listing no longer shows domain `domid` as `name`."""
        try:
            domain = self._listed(name)
        except ToolstackError:
            return False  # not known to be gone
        return domain is None or domain.domid != domid

    def _create_now(self, name: str) -> int:
        """With no daemon: one pass's plan under the state lock, and the create of
        `name` it holds run now (the other guests are left to the daemon)."""
        keeper = StateKeeper(self.config.state_dir, SystemClock(), self.log)
        if not keeper.store.try_lock():
            self.say(f"{name}: a daemon took the state meanwhile; it creates the guest")
            return EXIT_OK
        try:
            memory = keeper.load(self.inputs, self.boot)
            plan = self.inputs.plan(self.inputs.observe(), memory, (), self.monotonic())
            memory = plan.memory
            action = next((c for c in plan.creates if c.name == name), None)
            if action is None:
                keeper.save(memory)
                return self._not_created(name, plan.statuses)
            data = self.inputs.scanner.checked_bytes(action.path, action.cfg_hash)
            result = create_checked(self.inputs.runner.create_from_bytes, action, data)
            memory, _events = planner.record_create(
                memory, action, result, self.monotonic(), self.inputs.settings
            )
            keeper.save(self._seen_once_more(memory) if result.ok else memory)
        finally:
            keeper.unlock()
        if not result.ok:
            self.say(f"{name}: {result.error}")
            return EXIT_FAILURE
        self.say(f"{name}: created from {action.path}")
        return EXIT_OK

    def _seen_once_more(self, memory: Memory) -> Memory:
        """The memory after one more look at the listing (nothing started), so that
        the life just created is known by its domid and its end can be read later."""
        plan = self.inputs.plan(self.inputs.observe(), memory, (), self.monotonic())
        return replace(plan.memory, last_create_at=memory.last_create_at)

    def _not_created(self, name: str, statuses: tuple[GuestStatus, ...]) -> int:
        """Say why the plan creates no `name`; 0 when it runs already."""
        row = next((s for s in statuses if s.name == name), None)
        if row is None:
            self.say(f"{name}: no guest file carries this name")
            return EXIT_FAILURE
        self.say(f"{name}: {row.state.value}" + (f" ({row.detail})" if row.detail else ""))
        return EXIT_OK if row.state.value in ("running", "drift") else EXIT_FAILURE
