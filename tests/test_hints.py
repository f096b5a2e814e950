"""Known xl failures get their remedy, beside xl's own text, in status and the log."""

from __future__ import annotations

from typing import Any

import pytest

from xenreconcile import hints, report
from xenreconcile.eventsink import EventSink
from xenreconcile.models import CreateAction, CreateResult, GuestPhase, GuestStatus, Memory, Plan

# xl 4.17's lines for a missing kernel (/work/shared/xl-samples/xl-4.17.txt, error cases).
NO_KERNEL = (
    "xc: error: panic: xg_dom_core.c:205: failed to open file '/no/such/vmlinuz': "
    "No such file or directory: Internal error\n"
    "libxl: error: libxl_dom.c:646:libxl__build_pv: xc_dom_kernel_file failed: "
    "No such file or directory\n"
)
# The next three follow libxl's message formats (written for the test, not captured).
NO_MEMLOCK = "libxl: error: libxl_dom.c:...: xc_dom_boot_mem_init failed: Cannot allocate memory\n"
NO_BRIDGE = (
    "libxl: error: libxl_exec.c:117:libxl_report_child_exitstatus: /etc/xen/scripts/vif-bridge"
    " online [812] exited with error status 1\n"
    "libxl: error: libxl_device.c:1286:device_hotplug_child_death_cb: script: "
    "Could not find bridge device xenbr1\n"
)
NO_DISK = (
    "libxl: error: libxl_device.c:356:libxl__device_disk_set_backend: Disk vdev=xvda "
    "failed to stat: /dev/zvol/tank/xendisk0: No such file or directory\n"
)


@pytest.mark.parametrize(
    ("text", "system", "words"),
    [
        (NO_MEMLOCK, "freebsd14", "memorylocked=unlimited"),
        (NO_MEMLOCK, "freebsd14", "vm.max_wired=-1"),
        (NO_MEMLOCK, "linux", "free_memory"),
        (NO_BRIDGE, "linux", "ip link add NAME type bridge"),
        (NO_BRIDGE, "freebsd14", "cloned_interfaces"),
        (NO_DISK, "freebsd14", "disk target does not exist"),
        (NO_KERNEL, "linux", "`kernel` or `ramdisk`"),
    ],
)
def test_known_failures_get_their_remedy(text: str, system: str, words: str) -> None:
    """Each known failure text maps to its fix, per system where that matters."""
    remedy = hints.remedy(text, system)
    assert remedy is not None and words in remedy


def test_unknown_failure_has_no_hint() -> None:
    """An unknown text, or no error at all, gets no hint rather than a guess."""
    assert hints.remedy("libxl: error: something new", "linux") is None
    assert hints.remedy(None) is None


def test_status_shows_the_hint_beside_xls_text() -> None:
    """`status --json` keeps last_error as xl said it and adds `hint`; the table
    prints the hint under the rows."""
    error = CreateResult(ok=False, exit_code=3, stderr_tail=NO_KERNEL).error
    row = GuestStatus("web", GuestPhase.BACKOFF, ("/g/web.cfg",), attempts=1, last_error=error)
    plan = Plan(creates=(), statuses=(row,), memory=Memory())
    doc = report.status_document(plan, now=0.0, wall_now=0.0, daemon_pid=None, toolstack_error=None)
    [guest] = doc["guests"]
    assert guest["last_error"] == error
    assert guest["hint"] == hints.remedy(error)
    assert guest["hint"] is not None
    table = report.status_table(doc)
    assert f"hint for web: {guest['hint']}" in table.splitlines()


class Log:
    """A structlog stand-in that keeps each call."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))


def test_create_failed_log_line_has_the_hint() -> None:
    """The log keeps xl's stderr and adds `hint` for a known failure."""
    log = Log()
    sink = EventSink(log)
    action = CreateAction("web", "/g/web.cfg", "h")
    sink.create_result(action, CreateResult(False, 1, stderr_tail=NO_BRIDGE), Memory(), 0.0)
    [(level, _event, fields)] = [line for line in log.lines if line[1] == "create_failed"]
    assert level == "error"
    assert fields["stderr"] == NO_BRIDGE.strip()
    assert "bridge" in fields["hint"]
