"""Known `xl create` failures and what fixes them: pure.

`remedy` is given xl's own text (a `last_error`, or a create's stderr) and the
system it ran on, and returns the fix for the first known failure the text
shows, or None. Callers keep xl's text beside the hint: a hint can be wrong, the
raw text cannot. Sections named are the FreeBSD Handbook's Xen chapter (23.7).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hint:
    """A failure text (`pattern`, searched case-insensitively), the systems it
    applies to (a `sys.platform` prefix; empty: every system), and its fix."""

    pattern: str
    remedy: str
    systems: tuple[str, ...] = ()

    def matches(self, text: str, system: str) -> bool:
        """True when `text` shows this failure on `system`."""
        if self.systems and not system.startswith(self.systems):
            return False
        return re.search(self.pattern, text, re.IGNORECASE) is not None


HINTS: tuple[Hint, ...] = (
    Hint(
        r"Cannot allocate memory",
        "Dom0 may not lock the guest's memory: give root's login class "
        "memorylocked=unlimited (/etc/login.conf, then `cap_mkdb /etc/login.conf`) and set "
        "`sysctl vm.max_wired=-1` (also in /etc/sysctl.conf); Handbook 23.7.2; "
        "`xenreconcile doctor` checks both",
        systems=("freebsd",),
    ),
    Hint(
        r"Cannot allocate memory|Out of memory|not enough (free )?memory",
        "not enough free memory for the guest: compare its `memory` with `xl info` free_memory",
    ),
    Hint(
        r"Could not find bridge device|bridge \S+ does not exist|interface \S+ does not exist",
        "a vif's bridge= names a bridge Dom0 does not have: create it (FreeBSD: "
        '`sysrc cloned_interfaces=bridge0`, `sysrc ifconfig_bridge0="addm em0 SYNCDHCP"`, '
        "`service netif restart`; Linux: `ip link add NAME type bridge`); "
        "`xenreconcile doctor` lists the bridges the guests need",
    ),
    Hint(
        r"failed to stat|No such file or directory.*(disk|vdev)|(disk|vdev).*No such file",
        "a disk target does not exist: check the path in the cfg's `disk` (the daemon "
        "waits for a missing absolute path; a relative one is resolved by xl)",
    ),
    Hint(
        r"xc_dom_kernel_file failed|failed to open file .*(vmlinu|kernel)|ramdisk.*No such",
        "the cfg's `kernel` or `ramdisk` file does not exist or cannot be read",
    ),
    Hint(
        r"privileged command interface|/dev/xen/privcmd|xencall.*No such file",
        'Dom0 does not run on Xen: boot the Xen kernel (FreeBSD: `xen_kernel="/boot/xen"` '
        "and `xen_cmdline` in /boot/loader.conf; Handbook 23.7.1)",
    ),
    Hint(
        r"xenstore|xs_open|xs_daemon",
        "xenstored is not running: `sysrc xencommons_enable=yes` and "
        "`service xencommons start` (Linux: `systemctl start xen.target` or xencommons)",
    ),
)


def remedy(text: str | None, system: str | None = None) -> str | None:
    """Given xl's text (None: no error) and the system (default: this one),
    return the fix of the first known failure it shows, or None."""
    if not text:
        return None
    where = sys.platform if system is None else system
    for hint in HINTS:
        if hint.matches(text, where):
            return hint.remedy
    return None
