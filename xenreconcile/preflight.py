"""Which guests' needs Dom0 does not meet yet, looked at once per pass.

Given the desired state of a pass and the bytes its scanner checked, `Preflight`
reads each guest's needs (`preconditions.guest_needs`, cached by content hash:
an unchanged file is not parsed again), stats each needed path once, and lists
the host's network interfaces once (FreeBSD `ifconfig -l`, Linux
/sys/class/net) when some guest names a bridge. The result maps a guest name to
what it waits for ("/dev/zvol/tank/xendisk0", "bridge bridge0"), for the
planner. When the interfaces cannot be listed, bridges are not waited for that
pass: xl reports a missing bridge as it did before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable

from xenreconcile import xlcfg
from xenreconcile.models import DesiredState
from xenreconcile.preconditions import Needs, guest_needs

SYS_CLASS_NET = "/sys/class/net"
IFCONFIG_TIMEOUT = 5.0

CheckedBytes = Callable[[str, str], bytes | None]
Interfaces = Callable[[], frozenset[str] | None]


def bridge_need(name: str) -> str:
    """How a missing bridge is named in "waiting for ..."."""
    return f"bridge {name}"


def parse_ifconfig_list(output: str) -> frozenset[str]:
    """The interface names of `ifconfig -l` output (one line, blank-separated)."""
    return frozenset(output.split())


def freebsd_interfaces() -> frozenset[str] | None:
    """The interfaces `ifconfig -l` lists, or None when it cannot be run."""
    try:
        done = subprocess.run(
            ["ifconfig", "-l"],
            capture_output=True,
            text=True,
            timeout=IFCONFIG_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_ifconfig_list(done.stdout) if done.returncode == 0 else None


def linux_interfaces(sys_class_net: str = SYS_CLASS_NET) -> frozenset[str] | None:
    """The interfaces under /sys/class/net, or None when it cannot be read."""
    try:
        return frozenset(os.listdir(sys_class_net))
    except OSError:
        return None


def host_interfaces() -> frozenset[str] | None:
    """This host's network interfaces, the way its system lists them."""
    if sys.platform.startswith("freebsd"):
        return freebsd_interfaces()
    return linux_interfaces()


def cfg_needs(data: bytes) -> Needs:
    """The needs of a guest file's checked bytes (none if they no longer parse)."""
    try:
        return guest_needs(xlcfg.parse_cfg(data.decode("utf-8")).settings)
    except (UnicodeDecodeError, xlcfg.CfgError):
        return Needs()


class Preflight:
    """The needs of every desired guest, and which of them are unmet this pass."""

    def __init__(
        self,
        checked_bytes: CheckedBytes,
        *,
        exists: Callable[[str], bool] = os.path.exists,
        interfaces: Interfaces = host_interfaces,
    ) -> None:
        self._checked_bytes = checked_bytes
        self._exists = exists
        self._interfaces = interfaces
        self._needs: dict[str, Needs] = {}

    def needs(self, desired: DesiredState) -> dict[str, Needs]:
        """Each desired guest's needs, by name (cached by content hash)."""
        cache: dict[str, Needs] = {}
        by_name: dict[str, Needs] = {}
        for guest in desired.guests:
            found = self._needs.get(guest.cfg_hash)
            if found is None:
                data = self._checked_bytes(guest.path, guest.cfg_hash)
                found = cfg_needs(data) if data is not None else Needs()
            cache[guest.cfg_hash] = by_name[guest.name] = found
        self._needs = cache
        return by_name

    def unmet(self, desired: DesiredState) -> dict[str, tuple[str, ...]]:
        """Given a pass's desired state, return what each guest still waits for
        (guests with nothing missing are left out)."""
        needs = self.needs(desired)
        missing_paths = self._missing_paths(p for n in needs.values() for p in n.paths)
        wanted_bridges = {b for n in needs.values() for b in n.bridges}
        present = self._interfaces() if wanted_bridges else frozenset()
        unmet: dict[str, tuple[str, ...]] = {}
        for name, need in needs.items():
            waits = [p for p in need.paths if p in missing_paths]
            if present is not None:
                waits += [bridge_need(b) for b in need.bridges if b not in present]
            if waits:
                unmet[name] = tuple(waits)
        return unmet

    def _missing_paths(self, paths: Iterable[str]) -> set[str]:
        """The paths among `paths` that do not exist (each looked at once)."""
        return {path for path in set(paths) if not self._exists(path)}
