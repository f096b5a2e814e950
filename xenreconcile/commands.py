"""The bodies of the `xenreconcile` commands: each is given the loaded config and
the parsed arguments and returns the exit code (0 fine, 1 a problem found or the
command failed at run time, 2 usage or config error). `cli` imports this module
only after argparse has handled `--version` and `--help`, which so stay as fast
as the interpreter's start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from xenreconcile import control, logs, saves
from xenreconcile.clock import Instant
from xenreconcile.config import Config, ConfigError, load_config
from xenreconcile.daemon import STATUS_FILE, Daemon
from xenreconcile.errors import EXIT_FAILURE, EXIT_SETUP, XenreconcileError
from xenreconcile.models import DesiredGuest, Memory, Plan
from xenreconcile.passinputs import PassInputs
from xenreconcile.poolmode import dry_gate, pool_line
from xenreconcile.state import (
    StateStore,
    read_boot,
    read_private,
    trusted_uids,
    unsafe_path_problem,
)

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, EXIT_FAILURE, EXIT_SETUP
MAX_STATUS_BYTES = 64 * 1024 * 1024


def dispatch(args: argparse.Namespace) -> int:
    """Load the config and run the command `args` names; returns its exit code."""
    if args.command == "demo":
        from xenreconcile.demo import run_demo  # noqa: PLC0415 - deferred: the demo only

        return run_demo(keep=args.keep)
    try:
        config = load_config(args.config)
        return COMMANDS[args.command](config, args)
    except XenreconcileError as exc:
        # 2 for a set-up error (a bad config, an unsafe state_dir) the admin must
        # mend, 1 for a failure at run time: the service manager restarts a
        # daemon that exits 1, and never one that exits 2. A config's errors are
        # all shown, one a line.
        for problem in exc.errors if isinstance(exc, ConfigError) else (exc,):
            print(f"xenreconcile: {problem}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"xenreconcile: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return EXIT_PROBLEM


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    """`run [--once]`: the daemon in the foreground. A failure that ends it is
    logged as `daemon_failed` and raised on to `dispatch`."""
    # structlog is loaded once the first pass started the boot's creates (logs.complete)
    logs.configure(config.log_file, config.log_format, config.log_level, defer=True)
    daemon = Daemon(config, config_path=args.config)
    try:
        if args.once:
            return daemon.run_once()
        daemon.install_signals()
        return daemon.run()
    except (XenreconcileError, OSError) as exc:
        logs.get_logger().error("daemon_failed", error=str(exc))
        raise
    finally:
        logs.complete()


def daemon_pid(config: Config) -> int | None:
    """The pid of the daemon that holds the state lock, or None if none runs."""
    if not os.path.isdir(config.state_dir):
        return None
    return StateStore(config.state_dir).lock_holder()


def read_status_file(config: Config) -> dict[str, Any] | None:
    """The status document the running daemon wrote, or None."""
    path = os.path.join(config.state_dir, STATUS_FILE)
    try:
        doc: Any = json.loads(read_private(path, trusted_uids(), MAX_STATUS_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def compute_plan(config: Config, in_flight: set[str], now: Instant) -> tuple[Plan, str | None]:
    """Plan a pass at `now` from the files, `xl list` and the saved state (read
    as the daemon reads it at start), doing nothing. Returns the plan and the
    toolstack error, if any."""
    inputs = PassInputs(config)
    seen = inputs.observe()
    memory = inputs.loaded_memory(load_memory(config), now.offset, now.monotonic)
    gate = dry_gate(config, seen.desired)
    return inputs.plan(seen, memory, in_flight, now.monotonic, pool=gate), seen.shown_error


def load_memory(config: Config) -> Memory:
    """The saved state as the daemon would see it (what a damaged file still
    holds, with its doubts), changing nothing on disk; empty when there is none."""
    memory, _warning = StateStore(config.state_dir).load(repair=False)
    return memory


def refresh_next_retry(doc: dict[str, Any], wall_now: float) -> dict[str, Any]:
    """`doc` with each guest's `next_retry_in` counted down by the time passed
    since the document was generated. A wall clock set back since then counts
    as no time passed, so it cannot make a retry look further away."""
    passed = max(0.0, wall_now - float(doc.get("generated_at") or wall_now))
    for guest in doc["guests"]:
        left = guest.get("next_retry_in")
        guest["next_retry_in"] = None if left is None else max(0.0, round(left - passed, 1))
    return doc


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    """`status [--json | --brief]`: every guest's state, and whether the daemon's
    loop still passes (exit 1 when it has not for 3 x interval)."""
    from xenreconcile import liveness, report  # noqa: PLC0415 - deferred: not on `run`'s way

    pid = daemon_pid(config)
    doc = read_status_file(config) if pid is not None else None
    now = Instant.now()
    if doc is None:
        plan, error = compute_plan(config, set(), now)
        doc = report.status_document(
            plan, now=now.monotonic, wall_now=now.wall, daemon_pid=None, toolstack_error=error
        )
    doc = refresh_next_retry(doc, now.wall)
    doc["save_images"] = saved_images(config)
    text = status_text(doc, args, now.wall, config.interval)
    print(text if args.json or getattr(args, "brief", False) else with_images(text, doc))
    if not args.json and (line := pool_line(doc)) is not None:
        print(line)
    settled = {s.value for s in report.SETTLED_STATES}
    ok = doc["toolstack"]["ok"] and all(g["state"] in settled for g in doc["guests"])
    alive = not liveness.stalled(doc, now.wall, config.interval)
    return EXIT_OK if ok and alive else EXIT_PROBLEM


def status_text(
    doc: dict[str, Any], args: argparse.Namespace, wall_now: float, interval: float
) -> str:
    """What `status` prints for `doc`: JSON, the one-line summary, or the table
    followed by the loop's liveness."""
    from xenreconcile import liveness, report  # noqa: PLC0415 - deferred: not on `run`'s way

    if args.json:
        return json.dumps(doc, indent=2)
    if getattr(args, "brief", False):
        return liveness.summary_line(doc, wall_now, interval)
    alive = liveness.liveness_line(doc, wall_now, interval)
    return report.status_table(doc) + (f"\n{alive}" if alive else "")


def saved_images(config: Config) -> list[dict[str, object]]:
    """The save images and what becomes of each (docs/json.md, `save_images`)."""
    return saves.images_document(saves.SaveStore(config).images(read_boot()))


def with_images(text: str, doc: dict[str, Any]) -> str:
    """A status or plan text followed by its save images, if any."""
    extra = saves.images_text(doc["save_images"])
    return f"{text}\n{extra}" if extra else text


def in_flight_names(doc: dict[str, Any]) -> set[str]:
    """The names of the creates in flight a status document lists (docs/json.md)."""
    names = doc.get("in_flight")
    return {str(name) for name in names} if isinstance(names, list) else set()


def cmd_plan(config: Config, args: argparse.Namespace) -> int:
    """`plan [--json]`: what the next pass would do."""
    from xenreconcile import report  # noqa: PLC0415 - deferred: not on `run`'s way

    in_flight: set[str] = set()
    if daemon_pid(config) is not None:
        in_flight = in_flight_names(read_status_file(config) or {})
    now = Instant.now()
    plan, error = compute_plan(config, in_flight, now)
    out = report.plan_document(plan, now=now.monotonic, wall_now=now.wall, toolstack_error=error)
    out["save_images"] = saved_images(config)
    print(json.dumps(out, indent=2) if args.json else with_images(report.plan_text(out), out))
    return EXIT_OK if plan.trusted else EXIT_PROBLEM


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    """`check`: the config is valid (or we would not be here); validate every cfg,
    and name what each guest would wait for (not a problem: the daemon waits)."""
    inputs = PassInputs(config)
    desired = inputs.scanner.scan()
    unmet = inputs.preflight.unmet(desired)
    problems = 0
    state_problem = unsafe_path_problem(config.state_dir, trusted_uids())
    if state_problem is not None:
        print(f"state_dir {config.state_dir} is unsafe: {state_problem}")
        return EXIT_USAGE
    if desired.error:
        print(f"{config.guests_dir}: {desired.error}")
        problems += 1
    for bad in desired.invalid:
        where = "".join(f":{n}" for n in (bad.line, bad.column) if n is not None)
        print(f"{bad.path}{where}: {bad.reason}")
        problems += 1
    for name, paths in sorted(desired.duplicates.items()):
        print(f"duplicate guest name {name!r} in: {', '.join(paths)}")
        problems += 1
    for guest in desired.guests:
        waits = unmet.get(guest.name)
        if waits:
            print(f"wait  {guest.name}  {guest.path}: waiting for {', '.join(waits)}")
        else:
            print(f"ok  {guest.name}  {guest.path}")
    for message in drain_warnings(config, desired.guests):
        warn(message)
    if problems:
        print(f"{problems} problem(s) found", file=sys.stderr)
        return EXIT_PROBLEM
    print(f"config and {len(desired.guests)} guest file(s) OK")
    return EXIT_OK


def drain_warnings(config: Config, guests: Sequence[DesiredGuest]) -> list[str]:
    """`check`'s warnings about the host's drain (see `budget`)."""
    from xenreconcile import budget, hostshutdown  # noqa: PLC0415 - deferred: `check` only

    memory = {g.name: hostshutdown.cfg_memory_mib(g.path) for g in guests}
    found = budget.warnings(config, memory, budget.host_budget())
    if budget.guest_unit_missing():
        found.append(
            f"{budget.GUESTS_UNIT} is not installed: nothing shuts the guests down "
            "when this host goes down (see the README's Linux quickstart)"
        )
    return found


def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    """`doctor`: this Dom0's checklist, OK / WARN / FAIL per line with the fix;
    0 when nothing FAILs."""
    from xenreconcile import doctor  # noqa: PLC0415 - deferred: `doctor` only

    inputs = PassInputs(config)
    needs = inputs.preflight.needs(inputs.scanner.scan())
    bridges = {name: need.bridges for name, need in needs.items()}
    findings = doctor.host_findings(bridges, config.host_shutdown_timeout)
    print(doctor.render(findings))
    return doctor.exit_code(findings)


def cmd_request(config: Config, args: argparse.Namespace) -> int:
    """`hold` / `release` / `retry NAME`, `accept-state`."""
    try:
        request = control.Request(
            op=args.command, name=getattr(args, "name", None), reason=getattr(args, "reason", None)
        )
    except control.RequestError as exc:
        print(f"xenreconcile: {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(control.submit(config.state_dir, request, warn=warn))
    return EXIT_OK


def cmd_guest_op(config: Config, args: argparse.Namespace) -> int:
    """`stop NAME [--timeout S]`, `start NAME`, `restart NAME [--timeout S]`."""
    try:
        control.Request(op=args.command, name=args.name)
    except control.RequestError as exc:
        print(f"xenreconcile: {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command != "start" and not args.timeout > 0:
        print(f"xenreconcile: {args.command}: --timeout must be above 0", file=sys.stderr)
        return EXIT_USAGE
    from xenreconcile.guestops import GuestOps  # noqa: PLC0415 - deferred: these commands only

    logs.configure(config.log_file, config.log_format, config.log_level)
    ops = GuestOps(config, say=print, log=logs.get_logger())
    if args.command == "stop":
        return ops.stop(args.name, args.timeout)
    if args.command == "restart":
        return ops.restart(args.name, args.timeout)
    return ops.start(args.name)


def cmd_shutdown_guests(config: Config, args: argparse.Namespace) -> int:
    """`shutdown-guests [--dry-run]`: drain the host (see `hostshutdown`)."""
    from xenreconcile import hostshutdown  # noqa: PLC0415 - deferred: the host's drain only

    logs.configure(config.log_file, config.log_format, config.log_level)
    return hostshutdown.shutdown_guests(config, dry_run=args.dry_run, out=sys.stdout)


def warn(message: str) -> None:
    """Print a warning for the admin on stderr."""
    print(f"xenreconcile: warning: {message}", file=sys.stderr)


def cmd_pool(config: Config, args: argparse.Namespace) -> int:
    """`pool status [--json]` and `pool takeover HOST --yes` (docs/pool.md)."""
    if not config.pool.enabled:
        print(f"xenreconcile: no `pool` in {config.source or 'the config'}", file=sys.stderr)
        return EXIT_USAGE
    from xenreconcile.pool import cli as pool_cli  # noqa: PLC0415 - pool mode only

    if args.pool_command == "takeover":
        return pool_cli.cmd_takeover(config, args.host, args.yes)
    return pool_cli.cmd_status(config, args.json)


COMMANDS = {
    "run": cmd_run,
    "status": cmd_status,
    "plan": cmd_plan,
    "check": cmd_check,
    "doctor": cmd_doctor,
    "hold": cmd_request,
    "release": cmd_request,
    "retry": cmd_request,
    "stop": cmd_guest_op,
    "start": cmd_guest_op,
    "restart": cmd_guest_op,
    control.ACCEPT_STATE: cmd_request,
    "shutdown-guests": cmd_shutdown_guests,
    "pool": cmd_pool,
}
