"""The simulated toolstack's state: domains, faults, boot time and the call log.

Everything lives in one state directory so that many concurrent `simxl`
processes (and the test's own `SimXl` object) share it:

    domains.json   the domains and id counter, replaced atomically (temp + rename)
    lock           flock()ed for every read-modify-write of domains.json
    xl.conf        optional, the simulated /etc/xen/xl.conf: only `lockfile` is read
    xl.lock        xl's create lock (real xl: /var/lock/xl), unless xl.conf names another
    faults.json    fault knobs, read on every invocation (see the package docstring)
    calls.jsonl    one JSON line when an invocation starts, one when it ends, and
                   one at each step of a create around the create lock
    boot           the simulated Dom0 boot: `boot_id ID` and `btime EPOCH` lines, the
                   format of xenreconcile's XENRECONCILE_BOOT_FILE
    xl-NAME.log    the monitor's log of each life (rotated to .1 ... .10 by a create), as
                   /var/log/xen/xl-NAME.log; with the `monitor_fds` knob "log" also
                   its stdout/stderr

Timed changes (a guest that vanishes N s after its create, a migration domain
that goes away) are stored as deadlines and applied by `settle` whenever the
state is read, so no background process is needed to make time pass.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xenreconcile.errors import XenreconcileError
from xenreconcile.simxl import ends

STATE_ENV = "SIMXL_STATE"
DOM0_ROW = {"name": "Domain-0", "domid": 0, "mem": 1024, "vcpus": 2, "state": "r-----"}
RUNNING_STATE = "-b----"
BUILDING_STATE = "--p---"  # listed paused while xl builds it
CRASHED_STATE = "---sc-"
DYING_STATE = "-----d"

BOOT_FILE = "boot"
# The simulated Dom0 came up this long before its state dir was made, and a
# reboot moves the boot time by at least this much, as on real hardware
# (firmware, Xen, the kernel, rc take tens of seconds): nothing that compares
# boot times may depend on how fast the tests run.
UPTIME_AT_START = 600.0
REBOOT_SECONDS = 45.0

State = dict[str, Any]


class StateDirError(XenreconcileError):
    """The state directory is not given or cannot be used."""


def state_dir_from_env() -> Path:
    """The state directory named by $SIMXL_STATE; StateDirError if unset."""
    value = os.environ.get(STATE_ENV)
    if not value:
        raise StateDirError(f"simxl: {STATE_ENV} is not set (the simulated toolstack's state dir)")
    return Path(value)


def ensure_state_dir(state_dir: Path) -> None:
    """Create the state directory and its boot file if missing."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if not (state_dir / BOOT_FILE).exists():
        write_boot(state_dir, new_boot_id(), time.time() - UPTIME_AT_START)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` through a temp file and rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_boot(state_dir: Path) -> tuple[str, float]:
    """The simulated Dom0's boot id and boot time (epoch seconds)."""
    ensure_state_dir(state_dir)
    text = (state_dir / BOOT_FILE).read_text(encoding="utf-8")
    fields = dict(line.split(None, 1) for line in text.splitlines() if line.strip())
    return fields["boot_id"].strip(), float(fields["btime"])


def write_boot(state_dir: Path, boot_id: str, boot_time: float) -> None:
    """Replace the boot file with this boot id and boot time."""
    write_atomic(state_dir / BOOT_FILE, f"boot_id {boot_id}\nbtime {boot_time:.3f}\n")


def new_boot_id() -> str:
    """A boot id as Linux makes one: a random UUID."""
    return str(uuid.uuid4())


def boot_time(state_dir: Path) -> float:
    """The simulated Dom0 boot time (epoch seconds)."""
    return read_boot(state_dir)[1]


def fresh_state() -> State:
    """A toolstack with only Domain-0 running."""
    return {"next_domid": 1, "create_count": 0, "domains": []}


def read_state(state_dir: Path) -> State:
    """A settled snapshot of the state, read without the lock (writes are atomic)."""
    try:
        state: State = json.loads((state_dir / "domains.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        state = fresh_state()
    settle(state, time.time())
    return state


@contextlib.contextmanager
def transaction(state_dir: Path) -> Iterator[State]:
    """Yield the settled state under the lock; write it back if it changed."""
    ensure_state_dir(state_dir)
    with open(state_dir / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = state_dir / "domains.json"
        try:
            before = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            before = ""
        state = json.loads(before) if before else fresh_state()
        settle(state, time.time())
        yield state
        after = json.dumps(state, indent=1, sort_keys=True)
        if after != before:
            write_atomic(path, after)


def settle(state: State, now: float) -> None:
    """Apply every timed change whose deadline has passed (in place)."""
    kept = []
    for listed in state["domains"]:
        dom = ends.settle_end(state, listed, now)
        if dom is None:
            continue
        _settle_death(dom, now)
        gone_at = dom.get("gone_at")
        if gone_at is not None and gone_at <= now:
            become = dom.pop("become", None)
            if become is None:
                continue
            dom["name"], dom["gone_at"] = become, None
        kept.append(dom)
    state["domains"] = kept


def _settle_death(dom: dict[str, Any], now: float) -> None:
    """A guest past its `die_at` crashes (preserved) or starts to vanish."""
    die_at = dom.get("die_at")
    if die_at is None or die_at > now:
        return
    dom["die_at"] = None
    if dom.get("die_mode") == "crash":
        dom["state"] = CRASHED_STATE
    else:
        start_dying(dom, die_at, float(dom.get("dying_for") or 0.0))


def start_dying(dom: dict[str, Any], now: float, dying_for: float) -> None:
    """Mark `dom` dying for `dying_for` seconds from `now`, then gone."""
    dom["state"] = DYING_STATE
    dom["gone_at"] = now + dying_for
    dom.pop("become", None)


def find(state: State, name: str) -> dict[str, Any] | None:
    """The domain called `name`, or None."""
    return next((d for d in state["domains"] if d["name"] == name), None)


def read_faults(state_dir: Path) -> dict[str, Any]:
    """The current fault knobs; an absent or unreadable file means none."""
    try:
        faults = json.loads((state_dir / "faults.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return faults if isinstance(faults, dict) else {}


def write_faults(state_dir: Path, faults: dict[str, Any]) -> None:
    """Replace the fault knobs."""
    ensure_state_dir(state_dir)
    write_atomic(state_dir / "faults.json", json.dumps(faults, indent=1, sort_keys=True))


def for_guest(faults: dict[str, Any], knob: str, name: str | None) -> Any:
    """The value of `knob` for guest `name`: a plain value applies to every
    guest, a dict maps guest names (and "*" for the rest) to values."""
    value = faults.get(knob)
    if isinstance(value, dict):
        return value.get(name or "", value.get("*"))
    return value


def log_call(state_dir: Path, record: dict[str, Any]) -> None:
    """Append one record to calls.jsonl (a single write, so lines never interleave)."""
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(state_dir / "calls.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


# The steps of a create around xl's lock, and the field of the call that records each.
LOCK_STEPS = {"lock_wait": "lock_requested", "locked": "lock_acquired", "unlocked": "lock_released"}


def read_calls(state_dir: Path) -> list[dict[str, Any]]:
    """Every invocation, merged from its records, in start order: time, argv, pid,
    name, rc and end (None while running or if killed), and for a create the
    times of LOCK_STEPS it reached."""
    calls: dict[int, dict[str, Any]] = {}
    order: list[dict[str, Any]] = []
    try:
        text = (state_dir / "calls.jsonl").read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        record = json.loads(line)
        event = record.get("event")
        if event == "start":
            call = {k: v for k, v in record.items() if k != "event"} | {"rc": None}
            calls[record["pid"]] = call
            order.append(call)
        elif record.get("pid") not in calls:
            continue
        elif event == "end":
            call = calls[record["pid"]]
            call["rc"] = record.get("rc")
            call["end"] = record.get("time")
        elif event in LOCK_STEPS:
            calls[record["pid"]][LOCK_STEPS[event]] = record.get("time")
    return order
