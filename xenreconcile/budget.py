"""Does the drain fit the host's shutdown budget? What `check` warns about.

The drain's worst case: it ends by `host_shutdown_timeout`, but its first
listing may take up to `list_timeout` before that deadline is even looked at, and
saving every guest whose policy is `save` takes about its memory at
SAVE_MIB_PER_SECOND (a slow disk; the lab measured 75 MiB/s under emulation), in
turn, since parallel saves share one disk. The budget is what the host's
shutdown gives the drain: FreeBSD's `rcshutdown_timeout` (for every rc.d script
together, default 90 s), or the `TimeoutStopSec` of the installed
xenreconcile-guests.service on Linux. Pure, but for the two readers at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from xenreconcile.config import Config
from xenreconcile.drain import SAVE

SAVE_MIB_PER_SECOND = 50.0
START_SECONDS = 2.0  # the interpreter's start and the stand-down's answer, typically
FREEBSD_DEFAULT_RCSHUTDOWN = 90.0
GUESTS_UNIT = "/etc/systemd/system/xenreconcile-guests.service"


@dataclass(frozen=True, slots=True)
class Budget:
    """Seconds the host gives the drain, where that number comes from, and how to raise it."""

    seconds: float
    source: str
    how_to_raise: str


def save_seconds(config: Config, memory_mib: Mapping[str, int]) -> float:
    """Given the memory of each desired guest, the seconds saving the `save` ones takes."""
    saved = [mib for name, mib in memory_mib.items() if config.host_shutdown_action(name) == SAVE]
    return sum(saved) / SAVE_MIB_PER_SECOND


def worst_case(config: Config) -> float:
    """The longest the drain can take, start to end."""
    return START_SECONDS + max(config.host_shutdown_timeout, config.list_timeout)


def warnings(config: Config, memory_mib: Mapping[str, int], budget: Budget | None) -> list[str]:
    """What `check` warns about the drain: a worst case over the budget, saves that
    cannot finish by host_shutdown_timeout."""
    found = []
    worst = worst_case(config)
    if budget is not None and worst > budget.seconds:
        found.append(
            f"shutdown-guests may take {worst:g}s (host_shutdown_timeout "
            f"{config.host_shutdown_timeout:g}s, list_timeout {config.list_timeout:g}s), "
            f"more than {budget.source} gives it ({budget.seconds:g}s): the host would cut "
            f"the drain short; lower host_shutdown_timeout or {budget.how_to_raise}"
        )
    seconds = save_seconds(config, memory_mib)
    if seconds > config.host_shutdown_timeout:
        found.append(
            f"saving the on_host_shutdown: save guests may take {seconds:.0f}s at "
            f"{SAVE_MIB_PER_SECOND:g} MiB/s, more than host_shutdown_timeout "
            f"({config.host_shutdown_timeout:g}s): guests not saved by then keep running "
            "until the host takes them down"
        )
    return found


def freebsd_budget(rcshutdown_timeout: str | None) -> Budget:
    """The budget on FreeBSD, given `sysrc -n rcshutdown_timeout` (None: unreadable)."""
    try:
        seconds = float(rcshutdown_timeout or FREEBSD_DEFAULT_RCSHUTDOWN)
    except ValueError:
        seconds = FREEBSD_DEFAULT_RCSHUTDOWN
    return Budget(
        seconds,
        "FreeBSD's rcshutdown_timeout",
        "raise it (sysrc rcshutdown_timeout=SECONDS; kern.init_shutdown_timeout, 120 s, "
        "must stay above it)",
    )


def unit_budget(unit_text: str) -> Budget | None:
    """The budget the guests unit gives (its TimeoutStopSec in seconds, or with s/min)."""
    match = re.search(r"^TimeoutStopSec=(\d+)(s|min)?\s*$", unit_text, re.MULTILINE)
    if match is None:
        return None
    seconds = float(match.group(1)) * (60 if match.group(2) == "min" else 1)
    return Budget(
        seconds,
        "xenreconcile-guests.service's TimeoutStopSec",
        "raise TimeoutStopSec (systemctl edit xenreconcile-guests)",
    )


def host_budget() -> Budget | None:
    """This host's budget: FreeBSD's rc.conf, or the installed Linux unit; None when
    there is none to compare with."""
    if sys.platform.startswith("freebsd"):
        try:
            out = subprocess.run(
                ["/usr/sbin/sysrc", "-n", "rcshutdown_timeout"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        return freebsd_budget(out or None)
    try:
        with open(GUESTS_UNIT, encoding="utf-8") as f:
            return unit_budget(f.read())
    except OSError:
        return None


def guest_unit_missing() -> bool:
    """True on a Linux Xen Dom0 where the guests unit is not installed: nothing
    drains the guests when the host goes down."""
    return (
        sys.platform.startswith("linux")
        and os.path.exists("/proc/xen/capabilities")
        and not os.path.exists(GUESTS_UNIT)
    )
