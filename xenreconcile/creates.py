"""Create workers: each planned create runs `xl create` in a thread of its own
on the very bytes the scan checked, and hands its result to the loop's queue
(`loopqueue.Finished`). The workers own nothing else; the table of creates in
flight is the loop's and changed by its thread only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from xenreconcile.loopqueue import Finished, LoopQueue
from xenreconcile.models import CreateAction, CreateResult
from xenreconcile.passinputs import PassInputs
from xenreconcile.xl import create_checked


class Joinable(Protocol):
    """A create in flight that can be waited for."""

    def join(self, timeout: float | None = None) -> None: ...


# Given a create and the callback to hand its result to, start it; returns a
# handle to wait for. The default runs the xl adapter in a thread; tests and the
# chaos soak pass one driven by a simulated world and a fake clock.
CreateStarter = Callable[[CreateAction, Callable[[CreateResult], None]], Joinable]


class CreateWorkers:
    """The creates in flight, by guest name."""

    def __init__(self, door: LoopQueue, starter: CreateStarter | None = None) -> None:
        self.door = door
        self.starter = starter
        self.in_flight: dict[str, Joinable] = {}

    def start(self, action: CreateAction, inputs: PassInputs) -> None:
        """Start `action` with the scanner and runner of `inputs`."""

        def done(result: CreateResult) -> None:
            self.door.post(Finished(action, result))

        if self.starter is not None:
            self.in_flight[action.name] = self.starter(action, done)
        else:
            self.in_flight[action.name] = _create_in_thread(action, inputs, done)

    def finished(self, name: str) -> None:
        """Forget the create of `name` (its result was taken)."""
        self.in_flight.pop(name, None)

    def join(self, timeout: Callable[[], float | None]) -> None:
        """Wait for each create in flight; `timeout()` says how long, each time."""
        for handle in list(self.in_flight.values()):
            handle.join(timeout())


def _create_in_thread(
    action: CreateAction, inputs: PassInputs, done: Callable[[CreateResult], None]
) -> threading.Thread:
    """Run `xl create` for `action` in a daemon thread on the bytes the scan
    checked (read here, in the loop's thread); `done` gets the result."""
    runner = inputs.runner
    data = inputs.scanner.checked_bytes(action.path, action.cfg_hash)

    def work() -> None:
        try:
            result = create_checked(runner.create_from_bytes, action, data)
        except Exception as exc:  # a bug in the adapter must not kill the loop
            result = CreateResult(ok=False, exit_code=None, stderr_tail=f"internal error: {exc!r}")
        done(result)

    thread = threading.Thread(target=work, name=f"create-{action.name}", daemon=True)
    thread.start()
    return thread
