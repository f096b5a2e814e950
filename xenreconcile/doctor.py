"""`xenreconcile doctor`: the Dom0 checked the way the FreeBSD Handbook sets it up.

Each probe is a pure function given the recorded output of one command (None:
the command could not be run) and returns one `Finding`: OK, WARN or FAIL, what
was found, and the fix (the Handbook's own command where it has one; sections
are its Xen chapter, 23.7). `freebsd_findings` and `linux_findings` run the
commands through a `Run` callable, so tests feed them recorded outputs.
"""

from __future__ import annotations

import enum
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from xenreconcile.preflight import linux_interfaces

COMMAND_TIMEOUT = 10.0
XEN_LOG_DIR = "/var/log/xen"
FREEBSD_DEFAULT_RCSHUTDOWN_TIMEOUT = 90.0
LINUX_XEN_UNITS = ("xenstored.service", "xenconsoled.service", "xen-init-dom0.service")

# A command's exit status and standard output, or None when it could not be run.
Output = tuple[int, str] | None
Run = Callable[[Sequence[str]], Output]


class Level(enum.StrEnum):
    """How a check came out."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the doctor's report: its `level`, what was found, the fix."""

    level: Level
    text: str
    fix: str | None = None


def run_command(argv: Sequence[str]) -> Output:
    """Run `argv` (no shell) with a timeout; its exit status and stdout, or None."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.returncode, done.stdout


# --- FreeBSD probes ---------------------------------------------------------------------


def max_wired(sysctl: Output) -> Finding:
    """`sysctl -n vm.max_wired`: must be -1 so Dom0 may wire guest memory."""
    fix = "sysctl vm.max_wired=-1 && echo 'vm.max_wired=-1' >> /etc/sysctl.conf (Handbook 23.7.2)"
    if sysctl is None or sysctl[0] != 0:
        return Finding(Level.WARN, "vm.max_wired: sysctl could not be read", fix)
    value = sysctl[1].strip()
    if value == "-1":
        return Finding(Level.OK, "vm.max_wired is -1")
    return Finding(Level.FAIL, f"vm.max_wired is {value}, not -1", fix)


def memorylocked(limits: Output) -> Finding:
    """`limits -U root`: root's login class must have memorylocked=unlimited
    (limits(1) prints it as `memorylocked  infinity kB`, or as `memorylocked-cur`,
    the soft limit, when the class's soft and hard limits differ)."""
    fix = (
        "sed -i '' -e 's/memorylocked=64K/memorylocked=unlimited/' /etc/login.conf"
        " && cap_mkdb /etc/login.conf (Handbook 23.7.2)"
    )
    if limits is None or limits[0] != 0:
        return Finding(Level.WARN, "memorylocked: `limits -U root` could not be run", fix)
    for line in limits[1].splitlines():
        words = line.split()
        if words[:1] in (["memorylocked"], ["memorylocked-cur"]) and len(words) >= 2:
            shown = " ".join(words[1:])
            if words[1] == "infinity":
                return Finding(Level.OK, "root's login class has memorylocked=unlimited")
            return Finding(Level.FAIL, f"root's login class has memorylocked {shown}", fix)
    return Finding(Level.WARN, "memorylocked: not in the output of `limits -U root`", fix)


def xencommons_enabled(sysrc: Output) -> Finding:
    """`sysrc -n xencommons_enable`: YES, so the toolstack starts at boot."""
    fix = "sysrc xencommons_enable=yes (Handbook 23.7.1)"
    value = sysrc[1].strip() if sysrc is not None and sysrc[0] == 0 else ""
    if value.lower() in {"yes", "true", "on", "1"}:
        return Finding(Level.OK, "xencommons_enable is YES")
    return Finding(Level.FAIL, f"xencommons_enable is {value or 'not set'}", fix)


_XENCOMMONS_BOTH = re.compile(r"xencommons are running as pids\s+\d+\s+\d+\.?$")
_XENCOMMONS_ONE = re.compile(r"(xenstored|xenconsoled) is running as pid \d+\.?$")


def xencommons_running(status: Output) -> Finding:
    """`service xencommons status`, as Xen's rc.d/xencommons for FreeBSD prints it.
    That script exits 0 whether or not its daemons run, so only its text counts:
    "xencommons are running as pids ..." when both run, else one line per daemon
    (where a daemon that is not running may show as "running as pid ." with no
    number) or "xencommons are not running."."""
    fix = "service xencommons start"
    lines = status[1].strip().splitlines() if status is not None else []
    running = {m.group(1) for m in map(_XENCOMMONS_ONE.match, lines) if m}
    if any(map(_XENCOMMONS_BOTH.match, lines)) or running == {"xenstored", "xenconsoled"}:
        return Finding(Level.OK, "xencommons is running (xenstored, xenconsoled)")
    if status is None:
        return Finding(Level.FAIL, "xencommons: `service xencommons status` could not be run", fix)
    if lines and lines[0].startswith(("xenstored ", "xenconsoled ")):
        stopped = sorted({"xenstored", "xenconsoled"} - running)
        return Finding(Level.FAIL, f"xencommons is not running: {', '.join(stopped)} stopped", fix)
    said = lines[:1]
    return Finding(Level.FAIL, "xencommons is not running" + "".join(f": {s}" for s in said), fix)


def xen_kernel(xl_info: Output, vm_guest: Output, hv_vendor: Output) -> Finding:
    """The Xen kernel is loaded: `xl info` answers, and `sysctl -n kern.vm_guest` or
    `sysctl -n hw.hv_vendor` says xen."""
    fix = (
        'sysrc -f /boot/loader.conf xen_kernel="/boot/xen" and xen_cmdline="dom0_mem=... '
        'dom0_max_vcpus=... dom0pvh=1 ..."; reboot (Handbook 23.7.1)'
    )
    says_xen = any(
        out is not None and out[0] == 0 and "xen" in out[1].lower() for out in (vm_guest, hv_vendor)
    )
    answers = xl_info is not None and xl_info[0] == 0
    if says_xen and answers:
        return Finding(Level.OK, "Dom0 runs on Xen and `xl info` answers")
    if says_xen:
        return Finding(
            Level.FAIL, "Dom0 runs on Xen but `xl info` fails", "service xencommons start"
        )
    return Finding(Level.FAIL, "the Xen kernel is not loaded (kern.vm_guest is not xen)", fix)


def rcshutdown_timeout(sysrc: Output, drain: float | None) -> Finding | None:
    """`sysrc -n rcshutdown_timeout` against the host shutdown drain (seconds; None:
    the config has no drain, then there is nothing to check): the drain must end
    before rc.shutdown's watchdog (default 90 s) kills everything."""
    if drain is None:
        return None
    text = sysrc[1].strip() if sysrc is not None and sysrc[0] == 0 else ""
    try:
        budget = float(text) if text else FREEBSD_DEFAULT_RCSHUTDOWN_TIMEOUT
    except ValueError:
        return Finding(Level.WARN, f"rcshutdown_timeout is {text!r}, not a number of seconds")
    if drain < budget:
        return Finding(Level.OK, f"the {drain:.0f}s drain fits rcshutdown_timeout ({budget:.0f}s)")
    return Finding(
        Level.FAIL,
        f"the {drain:.0f}s drain does not fit rcshutdown_timeout ({budget:.0f}s)",
        f"sysrc rcshutdown_timeout={int(drain) + 30}",
    )


# --- probes of every system -------------------------------------------------------------


def bridges(
    needed: Mapping[str, Iterable[str]],
    present: frozenset[str] | None,
    fix: Callable[[str], str],
) -> list[Finding]:
    """Given the bridges each guest's vifs name, the host's interfaces (None:
    unknown) and how to create a bridge, one finding per bridge."""
    by_bridge: dict[str, list[str]] = {}
    for guest, names in sorted(needed.items()):
        for name in names:
            by_bridge.setdefault(name, []).append(guest)
    if not by_bridge:
        return [Finding(Level.OK, "no guest's vif names a bridge")]
    if present is None:
        return [Finding(Level.WARN, "bridges: the host's interfaces could not be listed")]
    findings = []
    for name, guests in sorted(by_bridge.items()):
        used = f"bridge {name} (vif of {', '.join(guests)})"
        if name in present:
            findings.append(Finding(Level.OK, f"{used} exists"))
        else:
            findings.append(Finding(Level.FAIL, f"{used} does not exist", fix(name)))
    return findings


def freebsd_bridge_fix(name: str) -> str:
    """How the Handbook creates bridge `name` on FreeBSD."""
    return (
        f'sysrc cloned_interfaces+="{name}" && sysrc ifconfig_{name}="addm em0 SYNCDHCP"'
        " && service netif restart (Handbook 23.7.1; em0: your uplink)"
    )


def linux_bridge_fix(name: str) -> str:
    """How to create bridge `name` on Debian."""
    return (
        f"ip link add {name} type bridge && ip link set {name} up (and in /etc/network/interfaces)"
    )


def xen_log_dir(is_dir: bool) -> Finding:
    """/var/log/xen must exist: xl writes each guest's log there."""
    if is_dir:
        return Finding(Level.OK, f"{XEN_LOG_DIR} exists")
    return Finding(Level.FAIL, f"{XEN_LOG_DIR} does not exist", f"mkdir -p {XEN_LOG_DIR}")


# --- Linux (Debian) probes --------------------------------------------------------------


def linux_units(is_active: Output) -> Finding:
    """`systemctl is-active` of the Xen units: each line must say active."""
    fix = "systemctl enable --now " + " ".join(LINUX_XEN_UNITS)
    if is_active is None:
        return Finding(Level.WARN, "xen units: systemctl could not be run", fix)
    states = is_active[1].split()
    down = [u for u, s in zip(LINUX_XEN_UNITS, states, strict=False) if s != "active"]
    down += list(LINUX_XEN_UNITS[len(states) :])
    if not down:
        return Finding(Level.OK, "the xen units are active: " + ", ".join(LINUX_XEN_UNITS))
    return Finding(Level.FAIL, "xen units not active: " + ", ".join(down), fix)


def proc_xen(capabilities: str | None) -> Finding:
    """/proc/xen/capabilities says `control_d` in a Dom0 running on Xen."""
    if capabilities is not None and "control_d" in capabilities:
        return Finding(Level.OK, "/proc/xen says this is Dom0")
    return Finding(
        Level.FAIL,
        "/proc/xen is missing or does not say control_d: not a Xen Dom0",
        "apt install xen-system-amd64, then boot the GRUB entry with the Xen hypervisor",
    )


# --- the host, gathered ------------------------------------------------------------------


def freebsd_findings(
    run: Run,
    needed: Mapping[str, Iterable[str]],
    *,
    drain: float | None = None,
    is_dir: Callable[[str], bool] = os.path.isdir,
) -> list[Finding]:
    """The FreeBSD checklist, with commands run through `run`; `drain` is the host
    shutdown drain's deadline (`host_shutdown_timeout`), None: not checked."""
    ifconfig = run(["ifconfig", "-l"])
    present = frozenset(ifconfig[1].split()) if ifconfig is not None and ifconfig[0] == 0 else None
    findings = [
        max_wired(run(["sysctl", "-n", "vm.max_wired"])),
        memorylocked(run(["limits", "-U", "root"])),
        xencommons_enabled(run(["sysrc", "-n", "xencommons_enable"])),
        xencommons_running(run(["service", "xencommons", "status"])),
        xen_kernel(
            run(["xl", "info"]),
            run(["sysctl", "-n", "kern.vm_guest"]),
            run(["sysctl", "-n", "hw.hv_vendor"]),
        ),
        *bridges(needed, present, freebsd_bridge_fix),
        xen_log_dir(is_dir(XEN_LOG_DIR)),
    ]
    fits = rcshutdown_timeout(run(["sysrc", "-n", "rcshutdown_timeout"]), drain)
    return findings + ([fits] if fits is not None else [])


def linux_findings(
    run: Run,
    needed: Mapping[str, Iterable[str]],
    *,
    read_text: Callable[[str], str | None],
    interfaces: frozenset[str] | None,
    is_dir: Callable[[str], bool] = os.path.isdir,
) -> list[Finding]:
    """The Debian checklist, with commands run through `run`."""
    xl_info = run(["xl", "info"])
    answers = xl_info is not None and xl_info[0] == 0
    return [
        linux_units(run(["systemctl", "is-active", *LINUX_XEN_UNITS])),
        proc_xen(read_text("/proc/xen/capabilities")),
        Finding(Level.OK, "`xl info` answers")
        if answers
        else Finding(Level.FAIL, "`xl info` fails", "systemctl start xenstored xen-init-dom0"),
        *bridges(needed, interfaces, linux_bridge_fix),
        xen_log_dir(is_dir(XEN_LOG_DIR)),
    ]


def render(findings: Sequence[Finding]) -> str:
    """The report: one line per finding, its fix indented under it."""
    lines = []
    for f in findings:
        lines.append(f"{f.level.value:<5} {f.text}")
        if f.fix and f.level is not Level.OK:
            lines.append(f"      fix: {f.fix}")
    return "\n".join(lines)


def exit_code(findings: Sequence[Finding]) -> int:
    """0 when nothing FAILs, else 1."""
    return 1 if any(f.level is Level.FAIL for f in findings) else 0


def read_text(path: str) -> str | None:
    """The text of a small file, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(65536)
    except OSError:
        return None


def host_findings(needed: Mapping[str, Iterable[str]], drain: float | None) -> list[Finding]:
    """Given the bridges each guest's vifs name and the host shutdown drain's
    deadline, this host's checklist (FreeBSD's or Debian's), its commands run for real."""
    if sys.platform.startswith("freebsd"):
        return freebsd_findings(run_command, needed, drain=drain)
    return linux_findings(run_command, needed, read_text=read_text, interfaces=linux_interfaces())
