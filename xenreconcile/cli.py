"""The `xenreconcile` command line: parse the arguments, then run the command.

Only argparse is imported here, so `--version` and `--help` answer at once; the
commands themselves live in `commands`. Exit codes: 0 fine, 1 a problem found
(invalid files, guests not running) or a failure at run time, 2 usage or config
error only.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from xenreconcile import __version__

DEFAULT_STOP_TIMEOUT = 60.0  # seconds `stop` and `restart` wait for a guest to shut down


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="xenreconcile",
        description="Keep the running Xen guests equal to a directory of xl.cfg files.",
    )
    parser.add_argument("--version", action="version", version=f"xenreconcile {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help="config file (default: $XENRECONCILE_CONFIG or /usr/local/etc/xenreconcile.yaml)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser("run", help="run the daemon in the foreground")
    run.add_argument(
        "--once",
        action="store_true",
        help="converge (every create possible now, all order groups), exit 0 if all run",
    )
    status = commands.add_parser("status", help="every guest: state, file, attempts, next retry")
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    status.add_argument(
        "--brief", action="store_true", help="one line: guests running / desired, the problems"
    )
    commands.add_parser(
        "check", help="validate the config and every guest cfg; list missing disks and bridges"
    )
    commands.add_parser("doctor", help="check this Dom0 as the Handbook sets it up, with fixes")
    plan = commands.add_parser("plan", help="what the next pass would do, doing nothing")
    plan.add_argument("--json", action="store_true", help="print the plan document as JSON")
    hold = commands.add_parser("hold", help="never create NAME until released")
    hold.add_argument("name", metavar="NAME")
    hold.add_argument("--reason", metavar="TEXT", help="why (shown by status)")
    for op, text in (
        ("release", "undo hold, and forget that NAME migrated away"),
        ("retry", "forget NAME's failures and try it at once"),
    ):
        commands.add_parser(op, help=text).add_argument("name", metavar="NAME")
    for op, text in (
        ("stop", "shut NAME down cleanly and keep it down (stopped)"),
        ("restart", "shut NAME down, then create it again from its file"),
    ):
        guest_op = commands.add_parser(op, help=text)
        guest_op.add_argument("name", metavar="NAME")
        guest_op.add_argument(
            "--timeout",
            metavar="S",
            type=float,
            default=DEFAULT_STOP_TIMEOUT,
            help=f"seconds to wait for the shutdown (default {DEFAULT_STOP_TIMEOUT:g})",
        )
    commands.add_parser(
        "start", help="let a stopped NAME run again, and create it now"
    ).add_argument("name", metavar="NAME")
    commands.add_parser(
        "accept-state",
        help="after a damaged state file: trust the holds and migrated marks it kept",
    )
    drain = commands.add_parser(
        "shutdown-guests",
        help="the host goes down: stand the daemon down, shut down or save every guest",
    )
    drain.add_argument("--dry-run", action="store_true", help="print the drain, do nothing")
    pool = commands.add_parser("pool", help="pool mode: hosts and claims, takeover")
    pool_commands = pool.add_subparsers(dest="pool_command", metavar="POOL_COMMAND", required=True)
    pool_status = pool_commands.add_parser("status", help="hosts (alive or not) and claims")
    pool_status.add_argument("--json", action="store_true", help="print it as JSON")
    takeover = pool_commands.add_parser(
        "takeover", help="free the claims of HOST, which is down, so other hosts start its guests"
    )
    takeover.add_argument("host", metavar="HOST")
    takeover.add_argument("--yes", action="store_true", help="confirm that HOST is down")
    demo = commands.add_parser(
        "demo", help="the real daemon on a simulated xl: a Dom0 reboot and the recovery"
    )
    demo.add_argument("--keep", action="store_true", help="keep the demo's temp directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in `argv` (default: sys.argv); returns the exit code."""
    args = build_parser().parse_args(argv)
    commands = importlib.import_module("xenreconcile.commands")
    code: int = commands.dispatch(args)
    return code
