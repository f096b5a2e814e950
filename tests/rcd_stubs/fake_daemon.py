"""A stand-in for FreeBSD's daemon(8), for testing rc.d/xenreconcile on Linux.

    fake_daemon.py [-f] [-H] [-r] [-R secs] [-o output_file] [-P supervisor_pidfile]
                   [-p child_pidfile] [-t title] command [args ...]

Like daemon(8) it detaches (fork, the parent exits 0, setsid, chdir /), writes
the supervisor's pid to -P, runs the command as its child with the child's pid
in -p, and with -r restarts the child `-R` seconds (default 1) after it exits.
The supervisor shows in ps(1) as "daemon: ..." as the real one does, so that
rc.subr's check_pidfile matches it.

With -o the child's stdout and stderr are a pipe that the supervisor copies to
output_file (opened for appending, created 0600; the file is opened before
detaching, so an error is reported to the caller). With -H as well, SIGHUP
makes the supervisor reopen output_file (newsyslog's rotation) instead of what
is described below.

The release it behaves like comes from FAKE_DAEMON_RELEASE (default 13):

- 13 (and 12): SIGTERM is forwarded to the child and the supervisor exits at
  once, removing both pidfiles while the child may still be finishing (and
  closing the -o pipe); SIGHUP without -H kills the supervisor (the default
  action).
- 14: SIGTERM is forwarded and the supervisor waits for the child (copying
  its last output) before it removes the pidfiles and exits; SIGHUP without -H
  is ignored.
"""

from __future__ import annotations

import contextlib
import getopt
import os
import signal
import sys
import time
from dataclasses import dataclass, field

SUPERVISE = "--supervise"


@dataclass
class Options:
    """The parsed command line of daemon(8)."""

    command: list[str]
    to_dev_null: bool = False
    reopen_on_hup: bool = False
    output_file: str | None = None
    restart: bool = False
    restart_delay: float = 1.0
    supervisor_pidfile: str | None = None
    child_pidfile: str | None = None
    title: str | None = None


@dataclass
class Supervisor:
    """The state of the supervising process: its options and current child."""

    options: Options
    release: int
    child: int | None = None
    terminating: bool = False
    output: int | None = None
    pidfiles: list[str] = field(default_factory=list)


def parse(argv: list[str]) -> Options:
    """Given daemon(8)'s arguments, return its options (options stop at the command)."""
    pairs, command = getopt.getopt(argv, "fHrR:o:P:p:t:")
    options = Options(command=command)
    for flag, value in pairs:
        if flag == "-f":
            options.to_dev_null = True
        elif flag == "-H":
            options.reopen_on_hup = True
        elif flag == "-o":
            options.output_file = value
        elif flag == "-r":
            options.restart = True
        elif flag == "-R":
            options.restart = True
            options.restart_delay = float(value)
        elif flag == "-P":
            options.supervisor_pidfile = value
        elif flag == "-p":
            options.child_pidfile = value
        elif flag == "-t":
            options.title = value
    if not command:
        sys.exit("usage: daemon [-fHr] [-o file] [-P pidfile] [-p pidfile] [-t title] command ...")
    return options


def open_output(path: str) -> int:
    """Open the -o file for appending (created 0600) and return its descriptor."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def detach(argv: list[str], options: Options) -> None:
    """Fork into the background and re-execute as the supervisor; the parent exits 0."""
    if options.output_file:
        try:
            os.close(open_output(options.output_file))
        except OSError as exc:
            sys.exit(f"daemon: open({options.output_file}): {exc.strerror}")
    if os.fork() != 0:
        os._exit(0)
    os.setsid()
    os.chdir("/")
    if options.to_dev_null:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    # argv[0] "daemon:" makes ps(1) show "daemon: ...", as setproctitle(3) does.
    os.execv(sys.executable, ["daemon:", os.path.abspath(__file__), SUPERVISE, *argv])


def write_pidfile(path: str | None, pid: int) -> None:
    """Write pid to path, if a path is given."""
    if path:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(f"{pid}\n")


def remove_pidfiles(supervisor: Supervisor) -> None:
    """Remove the pidfiles this supervisor wrote."""
    for path in supervisor.pidfiles:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def spawn(options: Options, output: int | None) -> int:
    """Start the command as a child that writes its own pid to the child pidfile;
    its stdout and stderr are the descriptor `output` when one is given."""
    pid = os.fork()
    if pid == 0:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        if output is not None:
            os.dup2(output, 1)
            os.dup2(output, 2)
        write_pidfile(options.child_pidfile, os.getpid())
        try:
            os.execv(options.command[0], options.command)
        finally:
            os._exit(127)
    return pid


def on_terminate(supervisor: Supervisor, signum: int) -> None:
    """Forward the signal to the child; a 13 supervisor then exits at once."""
    if supervisor.child is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor.child, signum)
    if supervisor.release <= 13:
        remove_pidfiles(supervisor)
        os._exit(0)
    supervisor.terminating = True


def reopen_output(supervisor: Supervisor) -> None:
    """Reopen the -o file (SIGHUP with -H), keeping its descriptor number."""
    if supervisor.output is not None and supervisor.options.output_file:
        fresh = open_output(supervisor.options.output_file)
        os.dup2(fresh, supervisor.output, inheritable=False)
        os.close(fresh)


def run_child(supervisor: Supervisor) -> None:
    """Run the child once; with -o copy its output to the file until it closes it."""
    if supervisor.output is None:
        supervisor.child = spawn(supervisor.options, None)
    else:
        reader, writer = os.pipe()
        supervisor.child = spawn(supervisor.options, writer)
        os.close(writer)
        while chunk := os.read(reader, 65536):
            os.write(supervisor.output, chunk)
        os.close(reader)
    os.waitpid(supervisor.child, 0)
    supervisor.child = None


def handle_signals(supervisor: Supervisor) -> None:
    """Install the supervisor's signal handling for its release and options."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda num, _frame: on_terminate(supervisor, num))
    if supervisor.options.reopen_on_hup and supervisor.output is not None:
        signal.signal(signal.SIGHUP, lambda _num, _frame: reopen_output(supervisor))
    elif supervisor.release >= 14:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def supervise(options: Options, release: int) -> None:
    """Run the child, restarting it with -r, until told to terminate."""
    supervisor = Supervisor(options=options, release=release)
    supervisor.pidfiles = [p for p in (options.supervisor_pidfile, options.child_pidfile) if p]
    if options.output_file:
        supervisor.output = open_output(options.output_file)
    write_pidfile(options.supervisor_pidfile, os.getpid())
    handle_signals(supervisor)
    while True:
        run_child(supervisor)
        if supervisor.terminating or not options.restart:
            break
        time.sleep(options.restart_delay)
        if supervisor.terminating:
            break
    remove_pidfiles(supervisor)


def main(argv: list[str]) -> int:
    """Detach, or (re-executed) supervise; return the exit status."""
    release = int(os.environ.get("FAKE_DAEMON_RELEASE", "13"))
    if argv and argv[0] == SUPERVISE:
        supervise(parse(argv[1:]), release)
        return 0
    detach(argv, parse(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
