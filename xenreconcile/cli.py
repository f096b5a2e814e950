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
    commands.add_parser("check", help="validate the config and every guest cfg")
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
    commands.add_parser(
        "accept-state",
        help="after a damaged state file: trust the holds and migrated marks it kept",
    )
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
