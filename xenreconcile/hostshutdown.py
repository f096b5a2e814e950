"""`xenreconcile shutdown-guests [--dry-run]`: drain the host before Dom0 goes down.

In turn: stand the daemon down (the mark first, then up to STAND_DOWN_WAIT for a
running daemon's answer; a daemon that does not answer does not stop the drain),
list the managed running guests, plan the drain (`drain.plan_drain`) and run it
(`drain.Drain`) by `host_shutdown_timeout`, counted from the command's start.
Prints a summary; exit 0 when every guest was shut down, saved or left by its
policy in time, 1 otherwise. `--dry-run` prints the plan and changes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from xenreconcile import logs, standdown
from xenreconcile.config import Config
from xenreconcile.drain import SAVE, Drain, DrainPlan, DrainResult, Target, plan_drain
from xenreconcile.models import DesiredGuest, Domain
from xenreconcile.passinputs import PassInputs
from xenreconcile.saves import SaveStore
from xenreconcile.state import StateStore, trusted_uids, unsafe_path_problem
from xenreconcile.xlcfg import parse_cfg

STAND_DOWN_WAIT = 10.0  # at most this (and a quarter of the budget) for the daemon's answer
EXIT_OK, EXIT_PROBLEM = 0, 1
XL_DEFAULT_MEMORY = 128


def shutdown_guests(
    config: Config,
    *,
    dry_run: bool,
    out: TextIO,
    inputs: PassInputs | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Drain the host as `config` says; returns the exit code."""
    started = monotonic()
    deadline = started + config.host_shutdown_timeout
    inputs = inputs or PassInputs(config)
    log = logs.get_logger()
    if not dry_run:
        _stand_down(config, inputs, log, monotonic, sleep)
    seen = inputs.observe()
    if seen.listing is None:
        log.error("drain_no_listing", error=seen.error)
        print(f"shutdown-guests: cannot list the guests: {seen.error}", file=out)
        return EXIT_PROBLEM
    images = SaveStore(config)
    targets = drain_targets(config, seen.desired.guests, seen.listing)
    wants_save = any(t.action == SAVE for t in targets)
    problem = images.prepare(create=not dry_run) if wants_save else None
    free = images.free_bytes() if wants_save and problem is None else 0
    plan = plan_drain(targets, free, problem)
    if dry_run:
        print(plan_text(plan, config.host_shutdown_timeout), file=out, end="")
        return EXIT_OK
    log.info(
        "drain_started",
        guests=[t.name for g in plan.groups for t in g],
        left=[t.name for t in plan.left],
        timeout=config.host_shutdown_timeout,
    )
    drain = Drain(
        inputs.lifecycle_runner,
        inputs.runner.list,
        images,
        inputs.boot,
        log,
        timeout=max(0.0, deadline - monotonic()),
        monotonic=monotonic,
        sleep=sleep,
    )
    result = drain.run(plan)
    log.info(
        "drain_finished",
        ok=result.ok,
        saved=result.saved,
        shut_down=result.shut_down,
        left=result.left,
        failed=sorted(result.failed),
        still_running=result.still_running,
        seconds=round(result.seconds, 2),
    )
    print(summary_text(result), file=out, end="")
    return EXIT_OK if result.ok else EXIT_PROBLEM


def _stand_down(
    config: Config,
    inputs: PassInputs,
    log: Any,
    monotonic: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """Write the mark; wait a little for a running daemon to answer it."""
    os.makedirs(config.state_dir, 0o700, exist_ok=True)
    problem = unsafe_path_problem(config.state_dir, trusted_uids())
    if problem is not None:
        log.error("stand_down_failed", error=f"state_dir {config.state_dir}: {problem}")
        return
    standdown.stand_down(config.state_dir, inputs.boot, time.time())
    if not StateStore(config.state_dir).daemon_running():
        log.info("stood_down", daemon="not running")
        return
    wait_until = monotonic() + min(STAND_DOWN_WAIT, config.host_shutdown_timeout / 4)
    while not standdown.acknowledged(config.state_dir):
        if monotonic() >= wait_until:
            log.warning("daemon_not_answering", error="drain goes on; the mark stays")
            return
        sleep(0.1)
    log.info("stood_down", daemon="answered")


def drain_targets(
    config: Config, guests: Sequence[DesiredGuest], listing: Sequence[Domain]
) -> list[Target]:
    """The managed guests listed running (not dying, not preserved), each with its action."""
    listed = {d.name: d for d in listing if not d.dying and not d.stale}
    settings = config.planner_settings()
    return [
        Target(
            name=g.name,
            order=settings.override(g.name).order,
            action=config.host_shutdown_action(g.name),
            domid=listed[g.name].domid,
            mem_mib=listed[g.name].mem,
            hvm=is_hvm(g.path),
        )
        for g in guests
        if g.name in listed
    ]


def _cfg_settings(path: str) -> dict[str, Any]:
    """The settings of the cfg at `path`; {} when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return dict(parse_cfg(f.read(), path).settings)
    except (OSError, ValueError):
        return {}


def is_hvm(path: str) -> bool:
    """True when the cfg at `path` asks for an HVM guest (`type` or `builder`)."""
    settings = _cfg_settings(path)
    return "hvm" in (settings.get("type"), settings.get("builder"))


def cfg_memory_mib(path: str) -> int:
    """The `memory` (MiB) the cfg at `path` gives its guest (xl's default: 128)."""
    value = _cfg_settings(path).get("memory")
    return int(value) if isinstance(value, str) and value.isdigit() else XL_DEFAULT_MEMORY


def plan_text(plan: DrainPlan, timeout: float) -> str:
    """The plan as `--dry-run` prints it."""
    lines = [f"drain by {timeout:g}s, groups in reverse order, each group in parallel:"]
    for group in plan.groups:
        names = ", ".join(f"{t.name} ({t.action}{' -F' if t.hvm else ''})" for t in group)
        lines.append(f"  order {group[0].order}: {names}")
    lines += [f"  {t.name}: left running (on_host_shutdown: leave)" for t in plan.left]
    lines += [f"  {name}: shut down, not saved: {why}" for name, why in plan.fallbacks.items()]
    if not plan.groups and not plan.left:
        lines.append("  no managed guest is running")
    return "\n".join(lines) + "\n"


def summary_text(result: DrainResult) -> str:
    """The summary printed after the drain."""
    rows = [
        ("saved", result.saved),
        ("shut down", result.shut_down),
        ("left running", result.left),
        ("failed", [f"{n} ({why})" for n, why in sorted(result.failed.items())]),
        ("still running at the deadline", result.still_running),
    ]
    lines = [f"{label}: {', '.join(sorted(names))}" for label, names in rows if names]
    verdict = "done" if result.ok else "NOT done"
    lines.append(f"drain {verdict} in {result.seconds:.1f}s")
    return "\n".join(lines) + "\n"
