"""simxl: a stateful stand-in for xl 4.17, run as a program, with faults on demand.

Run it as `python -m xenreconcile.simxl [--state DIR] SUBCOMMAND ...` (the state
directory comes from `--state` or the environment variable `SIMXL_STATE`), or
through the shell wrapper `SimXl.write_wrapper()` writes. Subcommands, with
xl 4.17's output, error texts and exit codes:

    list                          the plain table (header with its TABs, %-40s %5d ... columns)
    create [-q] FILE [KEY=VALUE]  "Parsing config from FILE" on stderr (not with -q);
                                  rc 3 "Failed to read config file: FILE: <strerror>";
                                  rc 1 "FILE:N: config parsing error near ..." for a line that is
                                  not a setting, comment, blank line or list continuation;
                                  rc 1 "Domain name must be specified." without `name`;
                                  rc 3 and libxl's "already exists" block for a listed name.
                                  On success a monitor process stays behind (see below).
    destroy NAME|ID               rc 1 "NAME is an invalid domain identifier (rc=-6)", or
                                  libxl's block and "destroy failed (rc=-21)" for an unknown id
    domid NAME                    the id, or rc 1 "Can't get domid of domain name 'NAME', ..."
    shutdown [-w] [-F] NAME|ID    "Shutting down domain N"; the guest powers off (reason 0)
                                  `shutdown_delay` later (per guest, default 0.3 s), never
                                  with `ignore_shutdown` (per guest); -w waits for it; an
                                  HVM guest with `no_pv_drivers` refuses it without -F
    sysrq NAME|ID o|b|c           powers off (0), reboots (1) or crashes (3) the guest
    save NAME FILE, restore FILE  see `lifecycle` (failing saves and restores)

A guest's end is handled with its cfg's `on_poweroff` / `on_reboot` / `on_crash`
(destroy, restart: a new domid, preserve: listed ---s-- / ---sc-), and its
monitor logs it to STATE/xl-NAME.log with real xl's lines (see `simxl.ends`).

Only the guest's `name`, `memory`, `vcpus`, `kernel` and `type` are read from the cfg.

A create runs in xl 4.17's three phases. Start-up and config parsing (knob
`parse_delay`) run unlocked and make no domain. The build runs holding xl's
global create lock, an fcntl write lock on xl.conf's `lockfile` (here
`STATE/xl.conf`; without one, `STATE/xl.lock`, never the host's /var/lock/xl),
so concurrent creates build one at a time: the domain appears, listed paused
(--p---), when the build starts and stays so for `create_delay` seconds.
Unpause and the monitor's daemonize (knob `daemonize_delay`) run unlocked
again, with the domain listed running. A create killed during its build leaves
the paused domain behind, as real xl does (its clean-up never runs); the kernel
drops the lock with the process. A lock file that cannot be opened gets xl's
"cannot open the lockfile FILE errno=N" and, as in xl 4.17, exit code 0 and no
domain.

The monitor: like real xl, a successful create forks a process in its own
session that lives while the domain exists. It exits when the domain is gone,
when the state directory is removed, or after $SIMXL_MONITOR_LIFETIME seconds
(default 3600). By default it keeps xl's inherited stdout/stderr open (the hard
case for whoever reads xl's output); real xl redirects them to
/var/log/xen/xl-NAME.log, which the knob `monitor_fds: "log"` imitates.

Fault knobs live in `STATE/faults.json` and are read by every invocation, so
they can change while a daemon runs (`SimXl.set_faults(**knobs)` merges them).
A knob marked (per guest) takes a plain value for every guest, or a dict
{guest name: value, "*": value for the others}.

    create_fail              (per guest) "kernel" (rc 3, kernel image missing, libxl's texts)
                             or "parse" (rc 1, config parsing error) or "console" (rc 3,
                             "console tty: timed out", as on a loaded Dom0); true means "kernel"
    create_fail_probability  0..1: each create fails with this chance, decided by
    seed, create_fail_kind   random.Random(f"{seed}:{create number}"): reproducible
    parse_delay              (per guest) seconds of start-up and parsing, before the lock
    create_delay             (per guest) seconds the build takes, under the lock; meanwhile
                             the domain is listed paused (--p---), as real xl shows it
    daemonize_delay          (per guest) seconds after the lock, domain running, no monitor yet
    create_hang              (per guest) the create never finishes (until killed): true or
                             "parse" hangs before the lock (no domain), "build" holding the
                             lock (domain paused), "daemonize" after it (domain running)
    list_fail                true (xl's "cannot init xl context" texts) or a text: rc 1
    list_garbage             true: `list` prints a truncated, unparseable table, rc 0
    list_hang                true: `list` never finishes
    ignore_sigterm           true: a hanging list/create ignores SIGTERM (needs SIGKILL)
    die_after                (per guest) seconds after a successful create the guest dies
    die_mode                 (per guest) "vanish" (default: gone from the list) or "crash"
                             (stays listed as ---sc-, crashed and preserved)
    dying_for                (per guest) seconds a destroyed/vanishing guest stays listed as
                             dying (-----d, Mem 0) before it is gone
    monitor_fds              "keep" (default) or "log", see above

State changes from Python (`SimXl`): `add_domain`, `destroy`, `crash`,
`set_state`, `reboot` (every guest gone, ids restart at 1, a new boot id and a
boot time tens of seconds later in `STATE/boot`), `step_clock` (the boot time
moves, the boot id stays), `migrate_away` (NAME -> NAME--migratedaway, then gone),
`migrate_in` (NAME--incoming, then NAME), `failed_localhost_migration` (NAME
stays, NAME--incoming exists for a while, as in the samples). Every invocation
is logged to `STATE/calls.jsonl` (`SimXl.calls()`, `SimXl.creates(name)`), a
create with the times it asked for, got and released the lock. `SimXl.lockfile()`
names the lock file and `SimXl.hold_create_lock()` holds it from Python.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xenreconcile.simxl.api import (
        SimDomain,
        SimXl,
        process_alive,
        wait_for,
        wait_until,
        write_cfg,
    )

__all__ = ["SimDomain", "SimXl", "process_alive", "wait_for", "wait_until", "write_cfg"]


def __getattr__(name: str) -> Any:
    """The Python API, imported on first use: every simulated `xl` call imports
    this package, and the API's imports would double its start-up time."""
    if name in __all__:
        return getattr(importlib.import_module("xenreconcile.simxl.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
