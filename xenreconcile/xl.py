"""The xl adapter: `xl list` -> `tuple[Domain, ...]`, `xl create PATH` -> `CreateResult`.

Both commands run in their own session with stdin from /dev/null and their
output captured in temporary files, never pipes: a successful `xl create`
leaves a per-domain monitor process behind that may keep the inherited output
descriptors open for the life of the guest, and reading a pipe to EOF would
then hang. On a timeout the whole process group is sent SIGTERM, then SIGKILL
after a grace period, and the direct child is always reaped. After a normal
exit nothing is killed, so the monitor of a successful create survives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import IO

from xenreconcile import createlock
from xenreconcile.errors import XenreconcileError
from xenreconcile.models import (
    DOM0_NAME,
    NULL_NAME,
    CreateAction,
    CreateResult,
    Domain,
)

HEADER_WORDS = ("Name", "ID", "Mem", "VCPUs", "State", "Time(s)")
STDERR_TAIL_LINES = 20
DEFAULT_KILL_GRACE = 5.0
NOT_RUN = 127  # the exit code reported when xl was not run at all, as a shell would
# What `xl create` is given to read checked bytes from: its standard input, an
# unnamed file. Linux reopens it through /proc (/dev/stdin is a symlink that only
# udev makes, and a minimal Dom0 has none: real xl then fails "No such file"),
# FreeBSD's devfs always has /dev/fd/0 and dups descriptor 0 on open.
STDIN_PATH = "/proc/self/fd/0" if sys.platform.startswith("linux") else "/dev/fd/0"

# One table row, parsed from the right: name, ID, Mem, VCPUs, State, Time.
# xl prints the name left-aligned, padded with ASCII spaces (printf "%-40s "):
# only those are taken off, so a name may start or end with any other character
# (a no-break space, say) and still be read as it is.
# State letters by position, as xl prints them: running, blocked, paused,
# shutdown, shutdown reason (- r s c w S, or ? for an unknown reason), dying.
_ROW = re.compile(
    r"^(?P<name>.*?[^ \t])[ \t]+(?P<domid>[0-9]+)[ \t]+(?P<mem>[0-9]+)[ \t]+(?P<vcpus>[0-9]+)"
    r"[ \t]+(?P<state>[r-][b-][p-][s-][-rscwS?][d-])[ \t]+(?P<time>[0-9]+\.[0-9])$"
)
_MAX_DOMID = 0x7FF4  # DOMID_FIRST_RESERVED: ids at or above it are never guests
_QUOTE_LIMIT = 80


class ToolstackError(XenreconcileError):
    """xl could not tell us the truth: it failed, timed out, or printed something
    we do not trust. `str()` says what failed."""


class XlListError(ToolstackError):
    """The output of `xl list` cannot be parsed; `line` is the 1-based line number
    of the problem, None when it concerns the whole output."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message if line is None else f"xl list output line {line}: {message}")
        self.line = line


@dataclass(frozen=True, slots=True)
class UnreadRow:
    """A line of `xl list` output that is not a row we can read: its 1-based
    line number, its text and why."""

    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"xl list output line {self.line}: {self.reason}"


class XlListRowsError(XlListError):
    """A listing that is sound (header, Domain-0, unique rows, complete last
    line) except for some rows that cannot be read: `domains` are the rows that
    could be, `rows` the others. Raised as an XlListError, so that a caller that
    does not look further takes no action at all."""

    def __init__(self, domains: tuple[Domain, ...], rows: tuple[UnreadRow, ...]) -> None:
        more = f" (and {len(rows) - 1} more unreadable rows)" if len(rows) > 1 else ""
        super().__init__(rows[0].reason + more, rows[0].line)
        self.domains = domains
        self.rows = rows


# --- parsing -------------------------------------------------------------------------------


def parse_xl_list(text: str) -> tuple[Domain, ...]:
    """Given the stdout of `xl list`, return its rows in order.

    The header is required, every other line must be a complete row, names and
    domain ids must be unique, and a `Domain-0` row with id 0 must be present.
    Raises XlListError (and nothing else) for anything else: XlListRowsError
    when only some rows cannot be read and the output ends with a newline (a
    listing cut short cannot tell which guests it left out)."""
    lines = _significant_lines(text)
    if not lines:
        raise XlListError("empty output", None)
    if tuple(lines[0].split()) != HEADER_WORDS:
        raise XlListError(f"not the xl list header: {_quote(lines[0])}", 1)
    rows = [_parse_row(line, number) for number, line in enumerate(lines[1:], start=2)]
    numbered = [(n, row) for n, row in enumerate(rows, start=2) if isinstance(row, Domain)]
    unread = tuple(row for row in rows if isinstance(row, UnreadRow))
    _check_unique(numbered)
    domains = tuple(domain for _number, domain in numbered)
    if not any(d.name == DOM0_NAME and d.domid == 0 for d in domains):
        raise XlListError(f"no {DOM0_NAME} row in xl list output", None)
    if unread and not text.endswith("\n"):
        raise XlListError(f"output cut short; {unread[0].reason}", unread[0].line)
    if unread:
        raise XlListRowsError(domains, unread)
    return domains


def _significant_lines(text: str) -> list[str]:
    """The lines of `text` without line-end carriage returns and trailing blank lines."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _parse_row(line: str, number: int) -> Domain | UnreadRow:
    """One table row -> Domain, or an UnreadRow naming line `number` if it is not one."""
    match = _ROW.match(line.rstrip(" \t"))
    if match is None:
        return UnreadRow(number, line, f"not an xl list row: {_quote(line)}")
    domid = int(match["domid"])
    if domid >= _MAX_DOMID:
        return UnreadRow(number, line, f"domain id {domid} out of range")
    return Domain(
        name=match["name"],
        domid=domid,
        mem=int(match["mem"]),
        vcpus=int(match["vcpus"]),
        flags=match["state"],
        time=float(match["time"]),
    )


def _check_unique(rows: Sequence[tuple[int, Domain]]) -> None:
    """Raise XlListError if two rows (line number, domain) share a name or a domain id.
    `(null)`, what xl shows for domains whose name is already gone (being torn down),
    may occur many times: real xl 4.17 lists two at once after a few destroys."""
    seen_names: set[str] = set()
    seen_ids: set[int] = set()
    for number, domain in rows:
        if domain.name in seen_names and domain.name != NULL_NAME:
            raise XlListError(f"duplicate domain name {domain.name!r}", number)
        if domain.domid in seen_ids:
            raise XlListError(f"duplicate domain id {domain.domid}", number)
        seen_names.add(domain.name)
        seen_ids.add(domain.domid)


def _quote(line: str) -> str:
    """`line` as a short repr for an error message."""
    shown = line if len(line) <= _QUOTE_LIMIT else line[:_QUOTE_LIMIT] + "..."
    return repr(shown)


# --- running xl ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ProcessResult:
    """How one xl run ended: exit code (None when killed at the timeout), output, duration."""

    exit_code: int | None
    timed_out: bool
    stdout: str
    stderr: str
    duration: float


class XlRunner:
    """Runs xl. `command` is the xl program plus fixed leading arguments, for
    example ["xl"] or [sys.executable, "-m", "xenreconcile.simxl"]."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        list_timeout: float = 30.0,
        create_timeout: float = 120.0,
        kill_grace: float = DEFAULT_KILL_GRACE,
        lockfile: str | None = None,
    ) -> None:
        if not command:
            raise ValueError("xl command is empty")
        self.command = tuple(command)
        self.list_timeout = list_timeout
        self.create_timeout = create_timeout
        self.kill_grace = kill_grace
        self.lockfile = lockfile  # xl's create lock: time waiting for it is not timed

    def list(self) -> tuple[Domain, ...]:
        """Run `xl list` and return its rows; ToolstackError if it cannot be run,
        fails, times out, or prints a listing we do not trust."""
        try:
            outcome = self._run(["list"], self.list_timeout, combine=False)
        except OSError as exc:
            raise ToolstackError(f"xl list: cannot run {self.command[0]}: {exc}") from exc
        if outcome.timed_out:
            raise ToolstackError(f"xl list timed out after {self.list_timeout:g}s")
        if outcome.exit_code != 0:
            tail = _tail(outcome.stderr, 3).replace("\n", " | ") or "no error output"
            raise ToolstackError(f"xl list exited {outcome.exit_code}: {tail}")
        return parse_xl_list(outcome.stdout)

    def create(self, path: str) -> CreateResult:
        """Run `xl create PATH` (an absolute path; ValueError otherwise) and report
        how it ended, as `lifecycle` does."""
        if not os.path.isabs(path):
            raise ValueError(f"xl create needs an absolute path, got {path!r}")
        return self._create(path, subprocess.DEVNULL)

    def create_from_bytes(self, data: bytes, shown_path: str) -> CreateResult:
        """Run `xl create STDIN_PATH` with `data` in an unnamed file on its standard
        input, so that xl reads exactly `data` through a path nobody can swap, and
        report how it ended as `create` does, naming `shown_path` where xl names
        its file. xl reads its cfg once, at create: a guest's reboot reuses it."""
        with contextlib.ExitStack() as stack:
            try:
                source = stack.enter_context(_unnamed_file(data))
            except OSError as exc:
                return CreateResult(
                    ok=False,
                    exit_code=NOT_RUN,
                    stderr_tail=f"not created: cannot hold the content of {shown_path}: {exc}",
                )
            result = self._create(STDIN_PATH, source)
        return replace(result, stderr_tail=result.stderr_tail.replace(STDIN_PATH, shown_path))

    def lifecycle(
        self,
        args: Sequence[str],
        timeout: float,
        *,
        stdin: IO[bytes] | int = subprocess.DEVNULL,
        lock: str | None = None,
    ) -> CreateResult:
        """Run `xl ARGS` (create, shutdown, save, restore) with `timeout` (its process
        group killed then; time waiting for `lock` not counted) and report how it
        ended. Never raises for xl's own failures: a program that cannot be started
        is reported like a shell would, with exit code 127."""
        try:
            outcome = self._run(args, max(timeout, 0.0), combine=True, stdin=stdin, lock=lock)
        except OSError as exc:
            return CreateResult(
                ok=False, exit_code=NOT_RUN, stderr_tail=f"cannot run {self.command[0]}: {exc}"
            )
        return CreateResult(
            ok=outcome.exit_code == 0,
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            stderr_tail=_tail(outcome.stdout, STDERR_TAIL_LINES),
            duration=outcome.duration,
        )

    def _create(self, path: str, stdin: IO[bytes] | int) -> CreateResult:
        """Run `xl create PATH` with `stdin` and report how it ended."""
        return self.lifecycle(
            ["create", path], self.create_timeout, stdin=stdin, lock=self.lockfile
        )

    def _run(
        self,
        args: Sequence[str],
        timeout: float,
        *,
        combine: bool,
        stdin: IO[bytes] | int = subprocess.DEVNULL,
        lock: str | None = None,
    ) -> _ProcessResult:
        """Run the xl command with `args` in its own session, input from `stdin`,
        output in temp files (stderr into stdout's file if `combine`); kill its
        group at `timeout`, not counting the time another process holds the
        lock file `lock` (xl's create lock) if one is given."""
        started = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [*self.command, *args],
                stdin=stdin,
                stdout=out,
                stderr=out if combine else err,
                start_new_session=True,
            )
            waiting = None if lock is None else partial(createlock.waits_for_lock, lock, proc.pid)
            timed_out = _wait_or_kill(proc, timeout, self.kill_grace, waiting)
            exit_code = None if timed_out else proc.returncode
            return _ProcessResult(
                exit_code=exit_code,
                timed_out=timed_out,
                stdout=_read(out),
                stderr=_read(err),
                duration=time.monotonic() - started,
            )


# --- handing xl the checked bytes ------------------------------------------------------------


def create_checked(
    create_from_bytes: Callable[[bytes, str], CreateResult],
    action: CreateAction,
    data: bytes | None,
) -> CreateResult:
    """Run `create_from_bytes` (`XlRunner.create_from_bytes`) on `data`, the bytes
    the scan checked for `action`'s file, so that xl never opens the guests
    directory's path, which could have been swapped since the check. Refuses (xl
    not run) when `data` is missing or does not hash to the `cfg_hash` the
    planner decided on."""
    if data is None or hashlib.sha256(data).hexdigest() != action.cfg_hash:
        return CreateResult(
            ok=False,
            exit_code=NOT_RUN,
            stderr_tail=f"{action.path}: not created: the content checked by the scan is not "
            "at hand (the file changed); the next pass decides",
        )
    return create_from_bytes(data, action.path)


@contextlib.contextmanager
def _unnamed_file(data: bytes) -> Iterator[IO[bytes]]:
    """A regular file with no name holding `data`, positioned at its start, for
    the block: a memfd where the system has one (no disk needed), else a
    temporary file removed as soon as it is made."""
    fd = _memfd()
    with open(fd, "wb+", buffering=0) if fd is not None else tempfile.TemporaryFile() as file:
        file.write(data)
        file.seek(0)
        yield file


def _memfd() -> int | None:
    """A new memfd, or None where there is none."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None:  # pragma: no cover - Linux has it
        return None
    try:
        return int(memfd_create("xenreconcile-cfg"))
    except OSError:
        return None


def _wait_or_kill(
    proc: subprocess.Popen[bytes],
    timeout: float,
    grace: float,
    waiting: Callable[[], bool] | None = None,
) -> bool:
    """Wait for `proc` to exit and reap it; at `timeout` seconds, not counting
    those `waiting()` said it only waited for xl's lock, kill its process group
    (see `_kill_group`). Returns True when it was killed.

    The wait blocks in waitid() and so returns the moment xl exits (Popen.wait
    with a timeout polls, adding up to 50 ms to every xl call); a timer thread
    does the killing."""
    if not hasattr(os, "waitid"):  # pragma: no cover - every supported OS has it
        try:
            proc.wait(timeout=timeout)
            return False
        except subprocess.TimeoutExpired:
            _kill_group(proc, grace)
            return True
    lock = threading.Lock()
    state = {"exited": False, "killed": False}

    stop = threading.Event()

    def on_timeout() -> None:
        if not createlock.budget_spent(timeout, stop, waiting):
            return
        with lock:
            if state["exited"]:
                return
            state["killed"] = True
        _signal_group(proc.pid, signal.SIGTERM)
        _wait_without_reaping(proc, grace)
        _signal_group(proc.pid, signal.SIGKILL)

    timer = threading.Thread(target=on_timeout, name=f"xl-timeout-{proc.pid}", daemon=True)
    timer.start()
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    with lock:
        state["exited"] = True
    stop.set()
    timer.join()  # a kill under way finishes its SIGKILL before the pid is reaped
    proc.wait()
    return state["killed"]


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group led by `proc`, SIGKILL the group after `grace`
    seconds or as soon as `proc` has exited, then reap `proc`. `proc` is reaped
    only after the last signal: until then its pid, and so the group id, cannot
    be reused, and the signals cannot reach anyone else's processes."""
    _signal_group(proc.pid, signal.SIGTERM)
    _wait_without_reaping(proc, grace)
    # Members other than the leader may ignore SIGTERM or outlive it.
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_without_reaping(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait up to `timeout` seconds for `proc` to exit, leaving it unreaped."""
    if not hasattr(os, "waitid"):  # pragma: no cover - every supported OS has it
        time.sleep(timeout)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flags = os.WEXITED | os.WNOWAIT | os.WNOHANG
        try:
            if os.waitid(os.P_PID, proc.pid, flags) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.02)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    """Send `signum` to process group `pgid`; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _read(file: IO[bytes]) -> str:
    """The whole content of a temp file, decoded leniently."""
    file.seek(0)
    return file.read().decode("utf-8", errors="replace")


def _tail(text: str, lines: int) -> str:
    """The last `lines` non-blank lines of `text`."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
