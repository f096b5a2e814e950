"""`SimXl`: set up and inspect a simulated toolstack from Python, no subprocess needed."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import xenreconcile
from xenreconcile.createlock import LOCKFILE_ENV
from xenreconcile.simxl import store, xllock
from xenreconcile.state import BOOT_FILE_ENV

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SimDomain:
    """One simulated domain as `xl list` would show it, plus its monitor's pid."""

    name: str
    domid: int
    mem: int
    vcpus: int
    state: str
    monitor_pid: int | None = None


class SimXl:
    """A simulated xl 4.17 whose state lives in `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).absolute()
        store.ensure_state_dir(self.state_dir)
        self.command: list[str] = [
            sys.executable,
            "-m",
            "xenreconcile.simxl",
            "--state",
            str(self.state_dir),
        ]

    # --- running it -----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment additions for running the simulated xl by hand, and
        xenreconcile against it (XENRECONCILE_BOOT_FILE: the simulated Dom0's boot,
        XENRECONCILE_XL_LOCKFILE: its xl's create lock)."""
        source_root = str(Path(xenreconcile.__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        return {
            store.STATE_ENV: str(self.state_dir),
            "PYTHONPATH": source_root if not path else f"{source_root}{os.pathsep}{path}",
            BOOT_FILE_ENV: str(self.state_dir / store.BOOT_FILE),
            LOCKFILE_ENV: str(self.lockfile()),
        }

    def write_wrapper(self, path: Path, module: str = "xenreconcile.simxl") -> Path:
        """Write an executable shell script running this simulated xl (or, with
        `module` "xenreconcile.simxl.xswatch", its `xenstore-watch`); returns `path`."""
        env = self.env()
        script = (
            "#!/bin/sh\n"
            f"# Simulated toolstack ({module}); no Xen needed.\n"
            f"SIMXL_STATE={shlex.quote(env[store.STATE_ENV])}\n"
            f"PYTHONPATH={shlex.quote(env['PYTHONPATH'])}\n"
            "export SIMXL_STATE PYTHONPATH\n"
            f'exec {shlex.quote(sys.executable)} -m {module} "$@"\n'
        )
        path = Path(path)
        path.write_text(script, encoding="utf-8")
        path.chmod(0o755)
        return path

    # --- the domains ----------------------------------------------------------------------

    def domains(self) -> list[SimDomain]:
        """Every domain, Domain-0 first, then by id (as `xl list` orders them)."""
        state = store.read_state(self.state_dir)
        guests = sorted(state["domains"], key=lambda d: d["domid"])
        dom0 = SimDomain(name="Domain-0", domid=0, mem=1024, vcpus=2, state="r-----")
        return [dom0] + [
            SimDomain(
                name=d["name"],
                domid=d["domid"],
                mem=d["mem"],
                vcpus=d["vcpus"],
                state=d["state"],
                monitor_pid=d.get("monitor_pid"),
            )
            for d in guests
        ]

    def names(self) -> list[str]:
        """The names of the guests (not Domain-0), by id."""
        return [d.name for d in self.domains()[1:]]

    def add_domain(self, name: str, state: str = store.RUNNING_STATE, **timers: float) -> int:
        """Make `name` exist (no create logged, no monitor); returns its id.
        `gone_after=N` makes it disappear N seconds from now."""
        with self._transaction() as st:
            if store.find(st, name) is not None:
                raise ValueError(f"domain {name!r} already exists")
            domid = st["next_domid"]
            st["next_domid"] = domid + 1
            gone_after = timers.get("gone_after")
            st["domains"].append(
                {
                    "uuid": str(uuid.uuid4()),
                    "name": name,
                    "domid": domid,
                    "mem": 128,
                    "vcpus": 1,
                    "state": state,
                    "created": time.time(),
                    "gone_at": None if gone_after is None else time.time() + gone_after,
                    "monitor_pid": None,
                }
            )
        return int(domid)

    def destroy(self, name: str) -> None:
        """Make `name` disappear at once (its monitor exits soon after)."""
        with self._transaction() as st:
            st["domains"] = [d for d in st["domains"] if d["name"] != name]

    def crash(self, name: str) -> None:
        """Make `name` crashed and preserved (state ---sc-)."""
        with self._transaction() as st:
            self._require(st, name)["state"] = store.CRASHED_STATE

    def set_state(self, name: str, state: str) -> None:
        """Set the 6-letter state of `name`, e.g. "-----d" for dying."""
        with self._transaction() as st:
            self._require(st, name)["state"] = state

    def reboot(self) -> None:
        """A Dom0 reboot: every guest gone, domain ids restart at 1, a new boot id,
        and a boot time at least `store.REBOOT_SECONDS` after the last one (a second
        reboot right after the first puts it a little in the future)."""
        with self._transaction() as st:
            st.clear()
            st.update(store.fresh_state())
            boot = max(time.time(), self.boot_time() + store.REBOOT_SECONDS)
            store.write_boot(self.state_dir, store.new_boot_id(), boot)

    def step_clock(self, seconds: float) -> None:
        """The Dom0's wall clock is stepped by `seconds` (NTP, a bad RTC): as the
        kernel's, the boot time moves with it and the boot id stays. (Only the
        boot file changes: the processes' own clocks cannot be stepped here.)"""
        boot_id, boot = store.read_boot(self.state_dir)
        store.write_boot(self.state_dir, boot_id, boot + seconds)

    def boot_time(self) -> float:
        """The simulated Dom0 boot time (epoch seconds), in `state_dir/boot`."""
        return store.boot_time(self.state_dir)

    def boot_id(self) -> str:
        """The simulated Dom0's boot id, in `state_dir/boot`."""
        return store.read_boot(self.state_dir)[0]

    # --- migrations -----------------------------------------------------------------------

    def migrate_away(self, name: str, seconds: float = 1.0) -> None:
        """`xl migrate` to another host: `name` becomes `name--migratedaway`,
        gone `seconds` later."""
        with self._transaction() as st:
            dom = self._require(st, name)
            dom["name"] = f"{name}--migratedaway"
            dom["gone_at"] = time.time() + seconds

    def migrate_in(self, name: str, seconds: float = 1.0) -> None:
        """An incoming migration: `name--incoming` exists, renamed to `name` after `seconds`."""
        self.add_domain(f"{name}--incoming", state="--p---")
        with self._transaction() as st:
            dom = self._require(st, f"{name}--incoming")
            dom["gone_at"] = time.time() + seconds
            dom["become"] = name

    def failed_localhost_migration(self, name: str, seconds: float = 1.0) -> None:
        """The failed `xl migrate NAME localhost` of the samples: `name` stays, and
        `name--incoming` exists for `seconds`, then is gone."""
        self._require(store.read_state(self.state_dir), name)
        self.add_domain(f"{name}--incoming", state="--p---", gone_after=seconds)

    # --- faults and the call log ----------------------------------------------------------

    def set_faults(self, **faults: Any) -> None:
        """Merge fault knobs into faults.json (a value of None removes a knob)."""
        current = store.read_faults(self.state_dir)
        current.update(faults)
        store.write_faults(self.state_dir, {k: v for k, v in current.items() if v is not None})

    def clear_faults(self) -> None:
        """Remove every fault knob."""
        store.write_faults(self.state_dir, {})

    def faults(self) -> dict[str, Any]:
        """The current fault knobs."""
        return store.read_faults(self.state_dir)

    def calls(self) -> list[dict[str, Any]]:
        """Every invocation: time, argv, pid, rc and end (None while running or if
        killed), name; a create also has lock_requested, lock_acquired and
        lock_released, the times it reached each step around xl's lock."""
        return store.read_calls(self.state_dir)

    def creates(self, name: str | None = None) -> list[dict[str, Any]]:
        """The `create` invocations, optionally only those for guest `name`."""
        return [
            c
            for c in self.calls()
            if c["argv"][:1] == ["create"] and (name is None or c.get("name") == name)
        ]

    # --- xl's create lock -----------------------------------------------------------------

    def lockfile(self) -> Path:
        """The file simulated creates lock around their build (see simxl.xllock)."""
        return xllock.lockfile_path(self.state_dir)

    def hold_create_lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold xl's create lock in this process, as a create building a domain would:
        simulated creates wait for it before their build."""
        return xllock.held(self.lockfile())

    # --- cleanup --------------------------------------------------------------------------

    def kill_monitors(self) -> list[int]:
        """SIGKILL the monitor processes of the listed domains; returns their pids."""
        killed = []
        for dom in self.domains():
            if dom.monitor_pid and _is_simxl_process(dom.monitor_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(dom.monitor_pid, signal.SIGKILL)
                    killed.append(dom.monitor_pid)
        return killed

    # --- helpers --------------------------------------------------------------------------

    def _transaction(self) -> contextlib.AbstractContextManager[store.State]:
        """The locked state (see store.transaction)."""
        return store.transaction(self.state_dir)

    @staticmethod
    def _require(state: store.State, name: str) -> dict[str, Any]:
        """The domain called `name`; KeyError if absent."""
        dom = store.find(state, name)
        if dom is None:
            raise KeyError(f"no domain {name!r}")
        return dom


def write_cfg(path: Path, name: str, **keys: str | int) -> Path:
    """Write a minimal PV guest cfg called `name` (plus `keys`) to `path`; returns `path`."""
    settings: dict[str, str | int] = {
        "name": name,
        "type": "pv",
        "kernel": "/boot/vmlinuz",
        "memory": 128,
        "vcpus": 1,
    }
    settings.update(keys)
    lines = [f"{k} = {v if isinstance(v, int) else _quoted(v)}" for k, v in settings.items()]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _quoted(value: str) -> str:
    """An xl.cfg string literal for `value`."""
    return f'"{value}"' if '"' not in value else f"'{value}'"


def process_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until(predicate: Callable[[], T], timeout: float, what: str, step: float = 0.02) -> T:
    """Poll `predicate` until it returns something truthy, and return that; raise
    TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; True if it became true."""
    try:
        return bool(wait_until(predicate, timeout, "a condition", step=0.05))
    except TimeoutError:
        return False


def _is_simxl_process(pid: int) -> bool:
    """True if `pid` runs the simulated xl (checked via /proc where there is one)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self").exists():
        return True
    try:
        return b"xenreconcile.simxl" in cmdline.read_bytes()
    except OSError:
        return False
