"""`xenreconcile doctor` against FreeBSD command outputs (tests/data/doctor/freebsd/:
the outputs of sysctl, limits, sysrc, service and ifconfig in the form FreeBSD 14
prints them, for a Dom0 set up as the Handbook says and for a fresh install)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from xenreconcile import doctor
from xenreconcile.doctor import Finding, Level, Output

DATA = Path(__file__).parent / "data" / "doctor" / "freebsd"
NEEDED = {"web": ["bridge0"], "db": ["bridge0"]}


def recorded(name: str, code: int = 0) -> Output:
    """A recorded command output, with the exit status it came with."""
    return code, (DATA / name).read_text(encoding="utf-8")


# The outputs of each command on a Handbook Dom0 and on a fresh install.
HANDBOOK: dict[tuple[str, ...], Output] = {
    ("sysctl", "-n", "vm.max_wired"): recorded("sysctl-vm.max_wired.handbook.txt"),
    ("limits", "-U", "root"): recorded("limits-U-root.handbook.txt"),
    ("sysrc", "-n", "xencommons_enable"): recorded("sysrc-xencommons_enable.yes.txt"),
    ("service", "xencommons", "status"): recorded("service-xencommons-status.running.txt"),
    ("xl", "info"): (0, "host                   : dom0\nxen_major              : 4\n"),
    ("sysctl", "-n", "kern.vm_guest"): recorded("sysctl-kern.vm_guest.dom0.txt"),
    ("sysctl", "-n", "hw.hv_vendor"): recorded("sysctl-hw.hv_vendor.dom0.txt"),
    ("ifconfig", "-l"): recorded("ifconfig-l.handbook.txt"),
}
FRESH: dict[tuple[str, ...], Output] = {
    ("sysctl", "-n", "vm.max_wired"): recorded("sysctl-vm.max_wired.default.txt"),
    ("limits", "-U", "root"): recorded("limits-U-root.default.txt"),
    ("sysrc", "-n", "xencommons_enable"): recorded("sysrc-xencommons_enable.no.txt"),
    ("service", "xencommons", "status"): recorded("service-xencommons-status.stopped.txt"),
    ("xl", "info"): (1, ""),
    ("sysctl", "-n", "kern.vm_guest"): recorded("sysctl-kern.vm_guest.bare.txt"),
    ("sysctl", "-n", "hw.hv_vendor"): recorded("sysctl-hw.hv_vendor.bare.txt"),
    ("ifconfig", "-l"): recorded("ifconfig-l.nobridge.txt"),
}


def runner(outputs: dict[tuple[str, ...], Output]) -> doctor.Run:
    """A `Run` answering from recorded outputs (None for any other command)."""

    def run(argv: Sequence[str]) -> Output:
        return outputs.get(tuple(argv))

    return run


def test_handbook_dom0_is_all_ok() -> None:
    """A Dom0 set up as the Handbook says: every line OK, exit 0."""
    findings = doctor.freebsd_findings(runner(HANDBOOK), NEEDED, is_dir=lambda _p: True)
    assert [f.level for f in findings] == [Level.OK] * len(findings)
    assert doctor.exit_code(findings) == 0
    assert "bridge bridge0 (vif of db, web) exists" in doctor.render(findings)


def test_fresh_install_fails_with_the_handbooks_fixes() -> None:
    """Each missing step FAILs and names the Handbook's own fix; exit 1."""
    findings = doctor.freebsd_findings(runner(FRESH), NEEDED, is_dir=lambda _p: False)
    assert doctor.exit_code(findings) == 1
    by_text = {f.text: f for f in findings}
    assert by_text["vm.max_wired is 8170374, not -1"].fix is not None
    memlock = by_text["root's login class has memorylocked 64 kB"]
    assert memlock.level is Level.FAIL
    assert memlock.fix is not None and "cap_mkdb /etc/login.conf" in memlock.fix
    assert by_text["xencommons_enable is NO"].fix == "sysrc xencommons_enable=yes (Handbook 23.7.1)"
    assert by_text["xencommons is not running: xencommons are not running."].level is Level.FAIL
    kernel = by_text["the Xen kernel is not loaded (kern.vm_guest is not xen)"]
    assert kernel.fix is not None and 'xen_kernel="/boot/xen"' in kernel.fix
    bridge = by_text["bridge bridge0 (vif of db, web) does not exist"]
    assert bridge.fix is not None and 'cloned_interfaces+="bridge0"' in bridge.fix
    assert by_text["/var/log/xen does not exist"].fix == "mkdir -p /var/log/xen"
    assert all(f.level is Level.FAIL for f in findings)


def test_commands_that_cannot_run_warn() -> None:
    """A probe whose command is missing warns instead of guessing."""
    assert doctor.max_wired(None).level is Level.WARN
    assert doctor.memorylocked(None).level is Level.WARN
    assert doctor.memorylocked((0, "Resource limits:\n")).level is Level.WARN
    assert doctor.bridges(NEEDED, None, doctor.freebsd_bridge_fix)[0].level is Level.WARN


def test_no_bridges_needed() -> None:
    """Guests without a bridge need nothing from the host's interfaces."""
    [finding] = doctor.bridges({}, frozenset(), doctor.freebsd_bridge_fix)
    assert finding.level is Level.OK


@pytest.mark.parametrize(
    ("sysrc", "drain", "level"),
    [((0, "90\n"), 80.0, Level.OK), ((0, "\n"), 80.0, Level.OK), ((0, "60\n"), 80.0, Level.FAIL)],
)
def test_rcshutdown_timeout_against_a_drain(sysrc: Output, drain: float, level: Level) -> None:
    """The drain must end before rc.shutdown's watchdog (90 s when unset)."""
    finding = doctor.rcshutdown_timeout(sysrc, drain)
    assert finding is not None and finding.level is level


def test_rcshutdown_timeout_without_a_drain() -> None:
    """No host shutdown drain configured: there is nothing to check (no line)."""
    assert doctor.rcshutdown_timeout((0, "90\n"), None) is None


def test_the_freebsd_checklist_weighs_the_drain_against_rcshutdown_timeout() -> None:
    """The drain's deadline reaches the checklist: 100 s does not fit the 90 s default."""
    outputs = {**HANDBOOK, ("sysrc", "-n", "rcshutdown_timeout"): (0, "\n")}
    findings = doctor.freebsd_findings(runner(outputs), NEEDED, drain=100.0, is_dir=lambda _p: True)
    [fits] = [f for f in findings if "rcshutdown_timeout" in f.text]
    assert fits.level is Level.FAIL and fits.fix == "sysrc rcshutdown_timeout=130"


def test_linux_checklist() -> None:
    """Debian: the xen units, /proc/xen, `xl info`, bridges and /var/log/xen."""
    outputs: dict[tuple[str, ...], Output] = {
        ("systemctl", "is-active", *doctor.LINUX_XEN_UNITS): (3, "active\ninactive\nactive\n"),
        ("xl", "info"): (0, "host : dom0\n"),
    }
    findings = doctor.linux_findings(
        runner(outputs),
        {"web": ["xenbr0"]},
        read_text=lambda _p: "control_d\n",
        interfaces=frozenset({"lo", "eth0"}),
        is_dir=lambda _p: True,
    )
    levels = {f.text: f.level for f in findings}
    assert levels["xen units not active: xenconsoled.service"] is Level.FAIL
    assert levels["/proc/xen says this is Dom0"] is Level.OK
    assert levels["`xl info` answers"] is Level.OK
    assert levels["bridge xenbr0 (vif of web) does not exist"] is Level.FAIL
    bridge = next(f for f in findings if f.text.startswith("bridge xenbr0"))
    assert bridge.fix is not None and bridge.fix.startswith("ip link add xenbr0 type bridge")
    assert doctor.exit_code(findings) == 1


def test_render_shows_fixes_under_problems() -> None:
    """OK lines carry no fix; a problem's fix is on the next line."""
    text = doctor.render([Finding(Level.OK, "fine", "x"), Finding(Level.FAIL, "bad", "do y")])
    assert text.splitlines() == ["OK    fine", "FAIL  bad", "      fix: do y"]


def test_doctor_command_runs(tmp_path: Path) -> None:
    """`xenreconcile doctor` prints one line per check and exits 0 or 1 (this test
    host is no Dom0, so it FAILs somewhere and exits 1)."""
    guests = tmp_path / "guests"
    guests.mkdir(mode=0o755)
    (guests / "web.cfg").write_text('name = "web"\nvif = [ "bridge=xrtestbr9" ]\n')
    config = tmp_path / "xenreconcile.yaml"
    config.write_text(
        f"guests_dir: {guests}\nstate_dir: {tmp_path / 'state'}\nstrict_permissions: false\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "xenreconcile", "-c", str(config), "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "FAIL  bridge xrtestbr9 (vif of web) does not exist" in done.stdout


# Xen's rc.d/xencommons for FreeBSD exits 0 whatever it finds; its text is the answer.
@pytest.mark.parametrize(
    ("recording", "level", "text"),
    [
        ("running", Level.OK, "xencommons is running (xenstored, xenconsoled)"),
        ("stopped", Level.FAIL, "xencommons is not running: xencommons are not running."),
        ("noconsoled", Level.FAIL, "xencommons is not running: xenconsoled stopped"),
    ],
)
def test_xencommons_status_is_read_from_its_text_not_its_exit_status(
    recording: str, level: Level, text: str
) -> None:
    finding = doctor.xencommons_running(recorded(f"service-xencommons-status.{recording}.txt"))
    assert (finding.level, finding.text) == (level, text)
    if level is Level.FAIL:
        assert finding.fix == "service xencommons start"


def test_xencommons_status_that_could_not_run_fails() -> None:
    assert doctor.xencommons_running(None).level is Level.FAIL
    assert doctor.xencommons_running((1, "xencommons does not exist in /etc/rc.d\n")).level is (
        Level.FAIL
    )


def test_memorylocked_is_read_when_soft_and_hard_limits_differ() -> None:
    """limits(1) then prints the soft limit as `memorylocked-cur`."""
    text = recorded("limits-U-root.default.txt")[1].replace(
        "  memorylocked               64 kB", "  memorylocked-cur           64 kB"
    )
    assert "memorylocked-cur" in text
    finding = doctor.memorylocked((0, text))
    assert (finding.level, finding.text) == (
        Level.FAIL,
        "root's login class has memorylocked 64 kB",
    )
