"""hold / release / retry / stop / start / restart / accept-state: from the
command line to the state, with or without a daemon.

When no daemon holds the state lock, the command changes `state.json`
itself. When a daemon runs, the command drops a request file into
`state_dir/requests/`; the daemon looks there every half second, applies the
request to its memory once, saves its state, then deletes the file, which
tells the command it arrived. While saving fails the file stays and is not
applied again; a kill -9 between the save and the delete only applies it again
at the next start (every request is idempotent).

Requests are trusted only from a requests directory and files that are owned
by root (or the daemon's uid), are not writable by group or others and are not
symlinks; a request with a field of the wrong type is refused when read.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from xenreconcile import planner
from xenreconcile.errors import SetupError, XenreconcileError
from xenreconcile.models import Memory
from xenreconcile.state import (
    StateReadOnlyError,
    StateStore,
    read_private,
    trusted_uids,
    unsafe_path_problem,
)

REQUESTS_DIR = "requests"
ACCEPT_STATE = "accept-state"
NAMED_OPS = ("hold", "release", "retry", "stop", "start", "restart")
OPS = (*NAMED_OPS, ACCEPT_STATE)
FIELDS = frozenset({"op", "name", "reason"})
MAX_REASON = 1024
MAX_REQUEST_BYTES = 64 * 1024
POLL = 0.05


class RequestError(SetupError):
    """A request that cannot be used; the message says why (and names the file)."""


class RequestDirError(XenreconcileError, OSError):
    """The requests directory is not one only root controls."""


@dataclass(frozen=True, slots=True)
class Request:
    """One admin request: `op` (one of NAMED_OPS) on guest `name`, or
    "accept-state" (no name). Raises RequestError when a field does not fit."""

    op: str
    name: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        problem = request_problem(self.op, self.name, self.reason)
        if problem is not None:
            raise RequestError(problem)

    def describe(self) -> str:
        """`op NAME`, or the op alone for accept-state."""
        return self.op if self.name is None else f"{self.op} {self.name}"


def request_problem(op: object, name: object, reason: object) -> str | None:
    """Why these request fields cannot be used, or None when they can."""
    if op not in OPS:
        return f"op {op!r} is not one of {', '.join(OPS)}"
    if op == ACCEPT_STATE:
        if name is not None or reason is not None:
            return f"{ACCEPT_STATE} takes no name and no reason"
        return None
    if not isinstance(name, str):
        return f"name must be a string, not {_kind(name)}"
    if not name or not name.isprintable() or name != name.strip():
        return f"name {name!r} is not a guest name (empty, control characters or spaces around)"
    if reason is None:
        return None
    if not isinstance(reason, str):
        return f"reason must be a string, not {_kind(reason)}"
    if len(reason) > MAX_REASON or not reason.isprintable():
        return f"reason must be printable text of at most {MAX_REASON} characters"
    return None


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def apply(memory: Memory, request: Request, now: float) -> Memory:
    """`memory` with `request` applied."""
    if request.op == ACCEPT_STATE:
        return planner.accept_state(memory)
    assert request.name is not None  # every other op is checked to carry one
    if request.op == "hold":
        return planner.hold(memory, request.name, request.reason, now)
    if request.op == "release":
        return planner.release(memory, request.name)
    if request.op == "stop":
        return planner.stop(memory, request.name)
    if request.op == "start":
        return planner.start(memory, request.name)
    if request.op == "restart":
        return planner.intend(memory, request.name, "restart")
    return planner.retry(memory, request.name)


def requests_dir(state_dir: str) -> str:
    """The directory a running daemon takes requests from."""
    return os.path.join(state_dir, REQUESTS_DIR)


def checked_requests_dir(state_dir: str, uids: Collection[int]) -> str:
    """The requests directory, after checking that it and every directory on
    the way are safe; raises RequestDirError naming the one that is not."""
    directory = requests_dir(state_dir)
    problem = unsafe_path_problem(directory, uids)
    if problem is not None:
        raise RequestDirError(f"requests directory {directory} is unsafe: {problem}")
    return directory


def write_request(state_dir: str, request: Request) -> str:
    """Atomically drop `request` into the requests directory; returns its path."""
    directory = checked_requests_dir(state_dir, trusted_uids())
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    directory = checked_requests_dir(state_dir, trusted_uids())
    final = os.path.join(directory, f"{time.time_ns():020d}-{os.getpid()}.json")
    body = json.dumps({"op": request.op, "name": request.name, "reason": request.reason})
    fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return final


def read_requests(state_dir: str) -> list[tuple[str, Request | RequestError]]:
    """Pending request files in arrival order, each with its request or the error
    that makes it unusable (the daemon logs and deletes those). Raises
    RequestDirError when the requests directory is unsafe (nothing is taken)."""
    uids = trusted_uids()
    directory = checked_requests_dir(state_dir, uids)
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    found: list[tuple[str, Request | RequestError]] = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            found.append((path, _read_request(path, uids)))
        except FileNotFoundError:
            continue
        except (OSError, RequestError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            found.append((path, RequestError(f"{path}: unusable request: {message}")))
    return found


def _read_request(path: str, uids: Collection[int]) -> Request:
    """The request in the file `path`; raises RequestError or OSError."""
    data = read_private(path, uids, MAX_REQUEST_BYTES)
    try:
        raw: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RequestError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise RequestError("not a JSON object")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}")
    op: Any = raw.get("op")  # Request checks every field's type
    return Request(op=op, name=raw.get("name"), reason=raw.get("reason"))


def submit(
    state_dir: str,
    request: Request,
    *,
    wait: float = 3.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    warn: Callable[[str], None] = lambda _message: None,
) -> str:
    """Apply `request` directly when no daemon runs, else hand it to the daemon
    and wait up to `wait` seconds for it to be taken. Returns a sentence for the
    admin; `warn` is given what is wrong with the state file, if anything.
    Raises OSError when the state cannot be written (StateReadOnlyError when it
    is of a newer format, StateDirError when state_dir is unsafe)."""
    return deliver(state_dir, request, wait=wait, clock=clock, sleep=sleep, warn=warn).message


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a request arrived: its sentence for the admin, whether a daemon runs,
    and whether it is applied (saved by us, or taken by the daemon) or only queued."""

    message: str
    daemon: bool
    applied: bool


def deliver(
    state_dir: str,
    request: Request,
    *,
    wait: float = 3.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    warn: Callable[[str], None] = lambda _message: None,
) -> Delivery:
    """`submit`, telling whether a daemon runs and whether the request is applied."""
    store = StateStore(state_dir)
    if store.try_lock():
        try:
            memory, warning = store.load()
            if store.read_only is not None:
                raise StateReadOnlyError(store.read_only)
            if warning is not None:
                warn(warning)
            store.save(apply(memory, request, time.time()))
        finally:
            store.unlock()
        return Delivery(f"{request.describe()}: saved (no daemon running)", False, True)
    store.load(repair=False)
    if store.read_only is not None:
        raise StateReadOnlyError(store.read_only)
    path = write_request(state_dir, request)
    deadline = clock() + wait
    while clock() < deadline:
        if not os.path.exists(path):
            return Delivery(f"{request.describe()}: applied by the running daemon", True, True)
        sleep(POLL)
    message = (
        f"{request.describe()}: queued; the daemon has not taken it within {wait:.0f}s "
        "and will apply it as soon as it can save its state"
    )
    return Delivery(message, True, False)
