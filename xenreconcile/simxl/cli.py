"""`python -m xenreconcile.simxl [--state DIR] SUBCOMMAND ...`: the simulated xl.

Output, error texts and exit codes follow xl 4.17 (see the samples in the
tests). Every invocation is logged to calls.jsonl in the state directory.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xenreconcile.simxl import ends, lifecycle, monitor, store, xllock

HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
DEFAULT_LIST_ERROR = (
    "xencall: error: Could not obtain handle on privileged command interface: "
    "No such file or directory\n"
    "libxl: error: libxl.c:102:libxl_ctx_alloc: cannot open libxc handle: "
    "No such file or directory\n"
    "cannot init xl context\n"
)
GARBAGE_LISTING = "Name ID Mem\nDomain-0 0 1024 2 r----- ?\n<truncated>\n"

_NAME = re.compile(r"""^[ \t]*name[ \t]*=[ \t]*(?:"([^"\n]*)"|'([^'\n]*)')""", re.MULTILINE)
_KERNEL = re.compile(r"""^[ \t]*kernel[ \t]*=[ \t]*(?:"([^"\n]*)"|'([^'\n]*)')""", re.MULTILINE)
_INT_KEY = r"^[ \t]*{key}[ \t]*=[ \t]*([0-9]+)"
_SETTING = re.compile(r"^[ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]*\+?=")
_COMMENT_OR_BLANK = re.compile(r"^[ \t]*(#.*)?$")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one simulated xl command; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        state_dir = _take_state_dir(args)
    except store.StateDirError as exc:
        print(exc, file=sys.stderr)
        return 2
    store.ensure_state_dir(state_dir)
    command = _Invocation(state_dir, args)
    return command.run()


def _take_state_dir(args: list[str]) -> Path:
    """Remove a leading `--state DIR` from `args`; else the env's state dir."""
    if len(args) >= 2 and args[0] == "--state":
        state_dir = Path(args[1])
        del args[:2]
        return state_dir
    return store.state_dir_from_env()


class _Invocation:
    """One run of the simulated xl with its arguments, logged start and end."""

    def __init__(self, state_dir: Path, args: list[str]) -> None:
        self.state_dir = state_dir
        self.args = args
        self.faults = store.read_faults(state_dir)

    def run(self) -> int:
        """Dispatch to the subcommand, logging the call around it."""
        start: dict[str, Any] = {"event": "start", "argv": self.args, "pid": os.getpid()}
        start["time"] = time.time()
        name = _cfg_name_of_create(self.args)
        if name is not None:
            start["name"] = name
        store.log_call(self.state_dir, start)
        rc = self._dispatch()
        store.log_call(self.state_dir, {"event": "end", "pid": os.getpid(), "rc": rc} | _now())
        return rc

    def _dispatch(self) -> int:
        """Run the subcommand named by the first argument."""
        sub, rest = (self.args[0], self.args[1:]) if self.args else ("", [])
        handlers: dict[str, Callable[[list[str]], int]] = {
            "list": self.cmd_list,
            "create": self.cmd_create,
            "destroy": self.cmd_destroy,
            "domid": self.cmd_domid,
            "shutdown": self.cmd_shutdown,
            "sysrq": self.cmd_sysrq,
            "save": lambda rest: lifecycle.cmd_save(self.state_dir, self.faults, rest),
            "restore": lambda rest: lifecycle.cmd_restore(self.state_dir, self.faults, rest),
        }
        handler = handlers.get(sub)
        if handler is None:
            _err("command not implemented")
            return 1
        return handler(rest)

    # --- list ----------------------------------------------------------------------------

    def cmd_list(self, _args: list[str]) -> int:
        """Print the domain table, or the injected list fault."""
        if self.faults.get("list_hang"):
            _hang(self.faults)
        error = self.faults.get("list_fail")
        if error:
            _err(DEFAULT_LIST_ERROR if error is True else str(error), end="")
            return 1
        if self.faults.get("list_garbage"):
            sys.stdout.write(GARBAGE_LISTING)
            return 0
        sys.stdout.write(format_listing(self.state_dir))
        return 0

    # --- create --------------------------------------------------------------------------

    def cmd_create(self, args: list[str]) -> int:
        """Create a domain from a cfg file, as `xl create [-q] FILE [KEY=VALUE...]`."""
        quiet = "-q" in args
        positional = [a for a in args if not a.startswith("-")]
        if not positional:
            _err("Config file not specified")
            return 2
        path, extra = positional[0], positional[1:]
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            _err(f"Failed to read config file: {path}: {os.strerror(exc.errno or 0)}")
            return 3
        if not quiet:
            _err(f"Parsing config from {path}")
        text = text + "\n" + "\n".join(extra)
        bad = _syntax_error(path, text)
        if bad is not None:
            _err(bad, end="")
            return 1
        name = cfg_name(text)
        if name is None:
            _err("Domain name must be specified.")
            return 1
        self._phase(name, "parse_delay", hang_at="parse")
        failure = self._failure_kind(name, self._count_create())
        if failure == "parse":
            _err(failure_text(failure, path, 0, _kernel_of(text)), end="")
            return 1
        lockfile = xllock.lockfile_path(self.state_dir)
        self._log_event("lock_wait")
        try:
            with xllock.held(lockfile):
                dom = self._build_locked(text, name)
        except xllock.LockError as exc:
            _err(str(exc))
            return 0  # xl 4.17 jumps to error_out with ret still 0: rc 0, no domain
        if dom is None:
            return 3
        return self._finish(path, text, dom, failure)

    def _fault_for(self, name: str | None, knob: str) -> Any:
        """The value of fault `knob` for guest `name`."""
        return store.for_guest(self.faults, knob, name)

    def _phase(self, name: str, knob: str, hang_at: str) -> None:
        """Spend the `knob` seconds of one phase of a create; hang here for good if
        the guest's `create_hang` names this phase ("build", "daemonize"; any other
        true value means "parse")."""
        hang = self._fault_for(name, "create_hang")
        if hang and (hang if hang in ("build", "daemonize") else "parse") == hang_at:
            _hang(self.faults)
        seconds = self._fault_for(name, knob)
        if seconds:
            time.sleep(float(seconds))

    def _count_create(self) -> int:
        """Count this create (the seeded failure draw uses the count); returns it."""
        with store.transaction(self.state_dir) as state:
            state["create_count"] += 1
            return int(state["create_count"])

    def _log_event(self, event: str) -> None:
        """Log a step of this invocation (see store.read_calls)."""
        store.log_call(self.state_dir, {"event": event, "pid": os.getpid()} | _now())

    def _build_locked(self, text: str, name: str) -> dict[str, Any] | None:
        """The build, run holding xl's lock: make the domain, listed paused (`--p---`)
        for `create_delay` seconds; returns its record, or None if the name is taken."""
        # Logged inside the lock's span, so the logged builds of two creates never overlap.
        self._log_event("locked")
        try:
            with store.transaction(self.state_dir) as state:
                domid = state["next_domid"]
                state["next_domid"] = domid + 1
                if store.find(state, name) is not None:
                    _err(already_exists_text(name, domid), end="")
                    return None
                dom = self._new_domain(name, domid, text)
                dom["state"] = store.BUILDING_STATE
                state["domains"].append(dom)
            self._phase(name, "create_delay", hang_at="build")
            return dom
        finally:
            self._log_event("unlocked")

    def _finish(self, path: str, text: str, dom: dict[str, Any], failure: str | None) -> int:
        """After the lock: destroy the domain again on a fault (or if it was destroyed
        meanwhile), else unpause it, spend `daemonize_delay` and leave a monitor behind."""
        name, domid = dom["name"], dom["domid"]
        with store.transaction(self.state_dir) as state:
            built = [d for d in state["domains"] if d["uuid"] == dom["uuid"]]
            state["domains"] = [d for d in state["domains"] if d["uuid"] != dom["uuid"]]
            if failure is not None or not built:
                _err(failure_text(failure or "gone", path, domid, _kernel_of(text)), end="")
                return 3
            built[0].update({**self._new_domain(name, domid, text), "uuid": dom["uuid"]})
            state["domains"].append(built[0])
            state["domains"].sort(key=lambda d: d["domid"])
        self._phase(name, "daemonize_delay", hang_at="daemonize")
        pid = monitor.spawn(self.state_dir, dom["uuid"], name, self.faults)
        with store.transaction(self.state_dir) as state:
            for listed in state["domains"]:
                if listed["uuid"] == dom["uuid"]:
                    listed["monitor_pid"] = pid
        return 0

    def _failure_kind(self, name: str, count: int) -> str | None:
        """The injected failure for this create: per guest, or by seeded chance."""
        kind = self._fault_for(name, "create_fail")
        if kind:
            return "kernel" if kind is True else str(kind)
        chance = float(self.faults.get("create_fail_probability") or 0.0)
        if chance > 0.0:
            rng = random.Random(f"{self.faults.get('seed', 0)}:{count}")
            if rng.random() < chance:
                return str(self.faults.get("create_fail_kind") or "kernel")
        return None

    def _new_domain(self, name: str, domid: int, text: str) -> dict[str, Any]:
        """A fresh running domain record for `name`, with its death scheduled if asked."""
        now = time.time()
        die_after = self._fault_for(name, "die_after")
        return {
            "uuid": str(uuid.uuid4()),
            "name": name,
            "domid": domid,
            "mem": _int_key(text, "memory", 128),
            "vcpus": _int_key(text, "vcpus", 1),
            "hvm": _is_hvm(text),
            "boots": 1,
            "state": store.RUNNING_STATE,
            "created": now,
            "die_at": None if die_after is None else now + float(die_after),
            "die_mode": self._fault_for(name, "die_mode") or "vanish",
            "dying_for": float(self._fault_for(name, "dying_for") or 0.0),
            "gone_at": None,
            "monitor_pid": None,
            "actions": ends.actions_of(text),
        }

    # --- destroy, domid ------------------------------------------------------------------

    def cmd_destroy(self, args: list[str]) -> int:
        """Destroy a domain by name or id, with xl's error texts."""
        if not args:
            _err("'xl destroy' requires at least 1 argument.")
            return 2
        target = args[-1]
        with store.transaction(self.state_dir) as state:
            dom, error = _resolve(state, target)
            if error is not None:
                _err(error, end="")
                return 1
            if dom is None:
                _err("Cannot destroy privileged domain 0.\n")
                return 1
            dying_for = float(self._fault_for(dom["name"], "dying_for") or 0.0)
            if dying_for > 0:
                store.start_dying(dom, time.time(), dying_for)
                ends.remember_destroy(state, dom)
            else:
                ends.schedule(dom, None, time.time())
        return 0

    # --- shutdown, sysrq -----------------------------------------------------------------

    def cmd_shutdown(self, args: list[str]) -> int:
        """`xl shutdown [-w] [-F] NAME|ID`: the guest powers off (reason 0) after
        its `shutdown_delay` (per guest, default 0.3 s), unless `ignore_shutdown`
        (per guest: a guest without PV drivers or /sbin/poweroff) is set; with -w,
        wait for it as xl does."""
        targets = [a for a in args if not a.startswith("-")]
        if not targets:
            _err("'xl shutdown' requires at least 1 argument.")
            return 2
        with store.transaction(self.state_dir) as state:
            dom, error = _resolve(state, targets[-1])
            if error is not None:
                _err(error, end="")
                return 1
            if dom is None:
                _err("Cannot shut down privileged domain 0.")
                return 1
            name, domid = dom["name"], dom["domid"]
            if dom.get("hvm") and self._fault_for(name, "no_pv_drivers") and "-F" not in args:
                _err(lifecycle.NO_PV_CONTROL_TEXT)
                return 1
            _err(f"Shutting down domain {domid}")
            if not self._fault_for(name, "ignore_shutdown"):
                delay = float(self._fault_for(name, "shutdown_delay") or 0.3)
                ends.schedule(dom, 0, time.time() + delay)
        if "-w" in args:
            _err("Waiting for 1 domains")
            while any(d["domid"] == domid for d in store.read_state(self.state_dir)["domains"]):
                time.sleep(0.05)
            _err(f"Domain {domid} has been shut down, reason code 0")
        return 0

    def cmd_sysrq(self, args: list[str]) -> int:
        """`xl sysrq NAME|ID KEY`: `o` powers the guest off from inside, `b` reboots
        it, `c` crashes it (the guest kernel's sysrq enabled); other keys do nothing."""
        if len(args) != 2:
            _err("'xl sysrq' requires at least 2 arguments.")
            return 2
        with store.transaction(self.state_dir) as state:
            dom, error = _resolve(state, args[0])
            if error is not None:
                _err(error, end="")
                return 1
            code = ends.SYSRQ_CODES.get(args[1])
            if dom is not None and code is not None:
                ends.schedule(dom, code, time.time())
        return 0

    def cmd_domid(self, args: list[str]) -> int:
        """Print the id of the named domain."""
        name = args[0] if args else ""
        if name == store.DOM0_ROW["name"]:
            print(0)
            return 0
        dom = store.find(store.read_state(self.state_dir), name)
        if dom is None:
            _err(f"Can't get domid of domain name '{name}', maybe this domain does not exist.")
            return 1
        print(dom["domid"])
        return 0


# --- texts ---------------------------------------------------------------------------------


def format_listing(state_dir: Path) -> str:
    """The `xl list` table for the current state, byte for byte as xl prints it."""
    now = time.time()
    state = store.read_state(state_dir)
    dom0 = dict(store.DOM0_ROW, time=max(now - store.boot_time(state_dir), 0.0))
    rows = [dom0]
    for dom in sorted(state["domains"], key=lambda d: d["domid"]):
        cpu = max(now - dom["created"], 0.0) * 0.05
        rows.append(dict(dom, mem=0 if dom["state"] == store.DYING_STATE else dom["mem"], time=cpu))
    lines = [HEADER] + [format_row(**_row_fields(r)) for r in rows]
    return "\n".join(lines) + "\n"


def _row_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The fields of a table row from a domain record."""
    keys = ("name", "domid", "mem", "vcpus", "state", "time")
    return {k: row[k] for k in keys}


def format_row(name: str, domid: int, mem: int, vcpus: int, *, state: str, time: float) -> str:
    """One `xl list` row, as xl's printf("%-40s %5d %5lu %5d     %s  %8.1f") prints it."""
    return f"{name:<40} {domid:5d} {mem:5d} {vcpus:5d}     {state}  {time:8.1f}"


def already_exists_text(name: str, domid: int) -> str:
    """xl's stderr when a domain called `name` already exists."""
    return (
        f'libxl: error: libxl_domain.c:81:libxl__domain_rename: Domain {domid}:Domain with name "{name}" already exists.\n'  # noqa: E501
        f"libxl: error: libxl_create.c:1296:initiate_domain_create: Domain {domid}:cannot make domain: -6\n"  # noqa: E501
        + _destroy_failed_lines(domid)
    )


def _destroy_failed_lines(domid: int) -> str:
    """The three lines libxl prints when cleaning up a domain that is not there."""
    return (
        f"libxl: error: libxl_domain.c:1183:libxl__destroy_domid: Domain {domid}:Non-existant domain\n"  # noqa: E501
        f"libxl: error: libxl_domain.c:1137:domain_destroy_callback: Domain {domid}:Unable to destroy guest\n"  # noqa: E501
        f"libxl: error: libxl_domain.c:1064:domain_destroy_cb: Domain {domid}:Destruction of domain failed\n"  # noqa: E501
    )


def failure_text(kind: str, path: str, domid: int, kernel: str) -> str:
    """xl's stderr for an injected create failure of `kind` ("kernel", "parse" or
    "console": xenconsoled too slow to set up the console, seen on a loaded Dom0)."""
    if kind == "gone":
        return _destroy_failed_lines(domid)
    if kind == "console":
        return (
            "libxl: error: libxl_create.c:1976:console_xswait_callback: "
            f"domain {domid} console tty: timed out\n" + _destroy_failed_lines(domid)
        )
    if kind == "parse":
        return (
            f"{path}:1: config parsing error near `is': syntax error, "
            "unexpected IDENT, expecting += or '='\nFailed to parse config: Invalid argument\n"
        )
    return (
        f"xc: error: panic: xg_dom_core.c:205: failed to open file '{kernel}': "
        "No such file or directory: Internal error\n"
        "libxl: error: libxl_dom.c:646:libxl__build_pv: xc_dom_kernel_file failed: "
        "No such file or directory\n"
        f"libxl: error: libxl_create.c:1640:domcreate_rebuild_done: Domain {domid}:"
        "cannot (re-)build domain: -3\n" + _destroy_failed_lines(domid)
    )


def _syntax_error(path: str, text: str) -> str | None:
    """xl's parse error text for the first line that is not a setting, a comment,
    a blank line or the continuation of an open list; None if all are fine."""
    open_brackets = 0
    for number, line in enumerate(text.split("\n"), start=1):
        code = line.split("#", 1)[0]
        if open_brackets == 0 and not _COMMENT_OR_BLANK.match(line) and not _SETTING.match(line):
            words = code.split()
            near = words[1] if len(words) > 1 else (words[0] if words else line)
            return (
                f"{path}:{number}: config parsing error near `{near}': syntax error, "
                "unexpected IDENT, expecting += or '='\nFailed to parse config: Invalid argument\n"
            )
        open_brackets = max(open_brackets + code.count("[") - code.count("]"), 0)
    return None


def cfg_name(text: str) -> str | None:
    """The last `name = "..."` in a cfg text (later settings win, as in xl)."""
    names = [a or b for a, b in _NAME.findall(text)]
    return names[-1] if names else None


def _cfg_name_of_create(args: list[str]) -> str | None:
    """The guest name a `create` invocation is about, if its file can be read."""
    if not args or args[0] != "create":
        return None
    positional = [a for a in args[1:] if not a.startswith("-")]
    if not positional:
        return None
    try:
        text = Path(positional[0]).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return cfg_name(text + "\n" + "\n".join(positional[1:]))


def _kernel_of(text: str) -> str:
    """The cfg's kernel path, or a plausible one."""
    found = [a or b for a, b in _KERNEL.findall(text)]
    return found[-1] if found else "/boot/vmlinuz"


def _is_hvm(text: str) -> bool:
    """True when the cfg asks for an HVM guest (`type` or the older `builder`)."""
    return bool(re.search(r"""^[ \t]*(type|builder)[ \t]*=[ \t]*["']hvm["']""", text, re.M))


def _int_key(text: str, key: str, default: int) -> int:
    """The integer value of `key` in a cfg text, or `default`."""
    found = re.findall(_INT_KEY.format(key=key), text, re.MULTILINE)
    return int(found[-1]) if found else default


def _resolve(state: store.State, target: str) -> tuple[dict[str, Any] | None, str | None]:
    """(domain, None) for a guest, (None, None) for Domain-0, (None, error text) if absent."""
    if target.isdigit():
        domid = int(target)
        if domid == 0:
            return None, None
        dom = next((d for d in state["domains"] if d["domid"] == domid), None)
        if dom is None:
            return None, _destroy_failed_lines(domid) + "destroy failed (rc=-21)\n"
        return dom, None
    if target == store.DOM0_ROW["name"]:
        return None, None
    dom = store.find(state, target)
    if dom is None:
        return None, f"{target} is an invalid domain identifier (rc=-6)\n"
    return dom, None


def _hang(faults: dict[str, Any]) -> None:
    """Sleep until killed (SIGTERM ignored if the `ignore_sigterm` knob is set)."""
    if faults.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(3600)


def _err(text: str, end: str = "\n") -> None:
    """Write `text` to stderr at once."""
    sys.stderr.write(text + end)
    sys.stderr.flush()


def _now() -> dict[str, float]:
    """{"time": now} for a log record."""
    return {"time": time.time()}
