"""xenreconcile-watchdog-feed against a model of Xen's domain watchdog
(xen/common/sched: two slots per domain; slot 0 asks for a new one; a slot not
in use is EINVAL; timeout 0 stops a slot), and its libxenctrl binding on a host
that is not a Xen Dom0."""

from __future__ import annotations

import ctypes.util
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xenreconcile.pool import xenwatchdog
from xenreconcile.pool.xenwatchdog import WatchdogError


class XenWatchdogModel:
    """Dom0's watchdog slots as the hypervisor keeps them: slot -> timeout."""

    SLOTS = 2

    def __init__(self) -> None:
        self.armed: dict[int, int] = {}
        self.calls: list[tuple[int, int]] = []
        self.fail_with: int | None = None

    def __call__(self, slot: int, timeout: int) -> int:
        self.calls.append((slot, timeout))
        if self.fail_with is not None:
            raise OSError(self.fail_with, os.strerror(self.fail_with))
        if slot == 0:
            free = [n for n in range(1, self.SLOTS + 1) if n not in self.armed]
            if not free:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.armed[free[0]] = timeout
            return free[0]
        if slot not in self.armed:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if timeout == 0:
            del self.armed[slot]
        else:
            self.armed[slot] = timeout
        return 0


@pytest.fixture
def slot_file(tmp_path: Path) -> str:
    return str(tmp_path / "watchdog.slot")


def test_the_first_feed_arms_a_slot_and_later_feeds_re_arm_the_same(slot_file: str) -> None:
    xen = XenWatchdogModel()
    assert xenwatchdog.feed(xen, slot_file, 30) == 1
    assert Path(slot_file).read_text() == "1\n"
    assert xenwatchdog.feed(xen, slot_file, 30) == 1
    assert xenwatchdog.feed(xen, slot_file, 30) == 1
    assert xen.armed == {1: 30}  # one slot, however many feeds (each a new process)
    assert xen.calls == [(0, 30), (1, 30), (1, 30)]


def test_a_slot_the_hypervisor_no_longer_knows_is_replaced(slot_file: str) -> None:
    xen = XenWatchdogModel()
    xenwatchdog.feed(xen, slot_file, 30)
    del xen.armed[1]  # disarmed behind our back (xenwatchdogd's SIGUSR1, say)
    assert xenwatchdog.feed(xen, slot_file, 30) == 1
    assert xen.armed == {1: 30}


def test_a_failing_re_arm_never_arms_a_second_slot(slot_file: str) -> None:
    xen = XenWatchdogModel()
    xenwatchdog.feed(xen, slot_file, 30)
    xen.fail_with = errno.EFAULT
    with pytest.raises(WatchdogError, match="re-arming watchdog slot 1"):
        xenwatchdog.feed(xen, slot_file, 30)
    xen.fail_with = None
    assert xen.armed == {1: 30}  # the old deadline stands: a reset if feeds keep failing


def test_another_slot_in_use_is_left_alone(slot_file: str) -> None:
    xen = XenWatchdogModel()
    xen.armed[1] = 300  # xenwatchdogd's slot
    assert xenwatchdog.feed(xen, slot_file, 30) == 2
    assert xenwatchdog.feed(xen, slot_file, 30) == 2
    assert xen.armed == {1: 300, 2: 30}


def test_no_free_slot_is_an_error_naming_it(slot_file: str) -> None:
    xen = XenWatchdogModel()
    xen.armed.update({1: 300, 2: 300})
    with pytest.raises(WatchdogError, match="arming a watchdog slot"):
        xenwatchdog.feed(xen, slot_file, 30)
    assert not Path(slot_file).exists()


def test_disarm_stops_the_slot_and_forgets_it(slot_file: str) -> None:
    xen = XenWatchdogModel()
    xenwatchdog.feed(xen, slot_file, 30)
    assert xenwatchdog.disarm(xen, slot_file) == 1
    assert xen.armed == {}
    assert not Path(slot_file).exists()
    assert xenwatchdog.disarm(xen, slot_file) is None


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("abc\n", 0o644, "expected a watchdog slot number"),
        ("0\n", 0o644, "expected a watchdog slot number"),
        ("1\n", 0o666, "only root can write"),
    ],
)
def test_a_slot_file_it_cannot_trust_is_refused(
    slot_file: str, content: str, mode: int, message: str
) -> None:
    Path(slot_file).write_text(content)
    os.chmod(slot_file, mode)
    xen = XenWatchdogModel()
    with pytest.raises(WatchdogError, match=message):
        xenwatchdog.feed(xen, slot_file, 30)
    assert xen.calls == []


def test_a_symlinked_slot_file_is_refused(slot_file: str, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("1\n")
    os.symlink(tmp_path / "elsewhere", slot_file)
    with pytest.raises(WatchdogError, match=slot_file):
        xenwatchdog.feed(XenWatchdogModel(), slot_file, 30)


def test_main_takes_the_timeout_the_daemon_passes(
    slot_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    xen = XenWatchdogModel()
    monkeypatch.setenv("XR_FENCE_TIMEOUT", "45")
    assert xenwatchdog.main(["--slot-file", slot_file], hypercall=xen) == 0
    assert xen.armed == {1: 45}
    monkeypatch.delenv("XR_FENCE_TIMEOUT")
    assert xenwatchdog.main(["--slot-file", slot_file], hypercall=xen) == 2
    assert xenwatchdog.main(["--slot-file", slot_file, "--timeout", "0"], hypercall=xen) == 2
    assert xenwatchdog.main(["--slot-file", slot_file, "--disarm"], hypercall=xen) == 0
    assert xen.armed == {}


def test_off_a_xen_dom0_the_program_says_so_and_exits_1(slot_file: str) -> None:
    if ctypes.util.find_library("xenctrl") is None:
        pytest.skip("libxenctrl is not installed (Debian: libxenmisc4.17)")
    if os.path.exists("/dev/xen/privcmd"):
        pytest.skip("this is a Xen Dom0: the real watchdog would be armed")
    done = subprocess.run(
        [sys.executable, "-m", "xenreconcile.pool.xenwatchdog", "--slot-file", slot_file],
        env={**os.environ, "XR_FENCE_TIMEOUT": "30"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "xc_interface_open" in done.stderr
    assert "is this a Xen Dom0?" in done.stderr
    assert not Path(slot_file).exists()
