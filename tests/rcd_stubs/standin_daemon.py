"""A stand-in for `xenreconcile`, for testing rc.d/xenreconcile before the real
daemon can run in the test: only the behaviour the rc.d script relies on.

    xenreconcile -c CONFIG [FLAGS ...] run | check | status --brief | shutdown-guests

Files next to CONFIG record what happened: `events` (one line per event:
"started ARGS...", "hup", "term", "exit"), `monitors` (their pids, one a line).

run: leaves a detached "monitor" grandchild as `xl create` does (its own
session, orphaned, with none of our descriptors; here a `sleep`), then waits for
signals.  SIGHUP is recorded.  SIGUSR1 makes it crash: an uncaught exception,
whose traceback Python prints on stderr before exiting 1.
SIGTERM is recorded, then the stand-in finishes like the daemon waiting for
creates in flight: it exits 0 only once a file `release` exists next to CONFIG
(or after 60 s), so a test decides how long "finishing" takes.

check: exit 2 with a message on stderr when CONFIG contains "broken", else 0.

status --brief: prints BRIEF_STATUS, the summary line of a daemon with no guests.
shutdown-guests: records "drain" (and whether a daemon was running then: "drain
daemon-up" when the pidfile next to CONFIG's run directory names a live
process), exit 0.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

FINISH_LIMIT = 60.0
BRIEF_STATUS = "guests: 0/0 running; problems: none"


def record(directory: Path, event: str) -> None:
    """Append one event line to the events file in directory."""
    with open(directory / "events", "a", encoding="utf-8") as handle:
        handle.write(event + "\n")


def leave_monitor(directory: Path) -> None:
    """Double-fork a detached process in its own session that outlives us."""
    first = os.fork()
    if first == 0:
        os.setsid()
        monitor = os.fork()
        if monitor == 0:
            # As the real daemon's xl: stdio of its own, not our stdout/stderr.
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execv("/bin/sleep", ["sleep", "600"])
        with open(directory / "monitors", "a", encoding="ascii") as handle:
            handle.write(f"{monitor}\n")
        os._exit(0)
    os.waitpid(first, 0)


def finish(directory: Path) -> None:
    """Wait until the test releases us (or the limit passes), then exit 0."""
    deadline = time.monotonic() + FINISH_LIMIT
    while not (directory / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    record(directory, "exit")
    sys.exit(0)


class Crash(RuntimeError):
    """What the stand-in raises, uncaught, on SIGUSR1."""


def run(directory: Path, argv: list[str]) -> int:
    """Act as the long-running daemon until SIGTERM (or SIGUSR1: crash)."""
    terminate = crash = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal terminate
        terminate = True

    def on_usr1(_signum: int, _frame: object) -> None:
        nonlocal crash
        crash = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGHUP, lambda _n, _f: record(directory, "hup"))
    leave_monitor(directory)
    record(directory, "started " + " ".join(argv))
    while not terminate:
        if crash:
            record(directory, "crash")
            raise Crash(f"stand-in daemon {os.getpid()} crashed on SIGUSR1")
        time.sleep(0.05)
    record(directory, "term")
    finish(directory)
    return 0


def check(config: Path) -> int:
    """Exit 2 for a config marked broken, else 0."""
    if "broken" in config.read_text(encoding="utf-8"):
        print(f"{config}: line 1: broken: unknown key", file=sys.stderr)
        return 2
    print(f"{config}: ok")
    return 0


def main(argv: list[str]) -> int:
    """Dispatch on the last arguments (`run`, `check`, `status --brief` or `shutdown-guests`)."""
    if len(argv) < 3 or argv[0] != "-c":
        print("usage: xenreconcile -c CONFIG [FLAGS ...] run|check", file=sys.stderr)
        return 2
    config = Path(argv[1])
    if argv[-1] == "run":
        return run(config.parent, argv)
    if argv[-1] == "check":
        return check(config)
    if argv[-2:] == ["status", "--brief"]:
        print(BRIEF_STATUS)
        return 0
    if argv[-1] == "shutdown-guests":
        record(config.parent, "drain" + (" daemon-up" if daemon_up(config.parent) else ""))
        return 0
    return 2


def daemon_up(directory: Path) -> bool:
    """True when the daemon's pidfile (run/xenreconcile.pid) names a live process."""
    try:
        pid = int((directory / "run" / "xenreconcile.pid").read_text(encoding="ascii").split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
