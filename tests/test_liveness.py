"""The daemon's liveness in `status` (last pass; exit 1 after 3 x interval without
one) and the one-line `status --brief` that `service xenreconcile status` adds."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.daemon_harness import DaemonRun, wait_for
from xenreconcile import liveness


def doc(last_pass: float | None, *guests: tuple[str, str, bool], ok: bool = True) -> dict[str, Any]:
    """A status document: guests as (name, state, has a file)."""
    return {
        "daemon": {"running": last_pass is not None, "pid": 1, "last_pass": last_pass},
        "toolstack": {"ok": ok, "error": None if ok else "xl list timed out"},
        "guests": [
            {"name": n, "state": s, "files": [f"/g/{n}.cfg"] if f else []} for n, s, f in guests
        ],
    }


GUESTS = (("web", "running", True), ("db", "backoff", True), ("old", "unmanaged", False))


def test_a_recent_pass_is_alive_and_shown() -> None:
    assert not liveness.stalled(doc(1000.0), 1089.0, 30)
    assert liveness.liveness_line(doc(1000.0), 1004.2, 30) == "daemon: last pass 4s ago"


def test_no_pass_for_three_intervals_is_stalled() -> None:
    assert liveness.stalled(doc(1000.0), 1091.0, 30)
    line = liveness.liveness_line(doc(1000.0), 1091.0, 30)
    assert line is not None and line.startswith("daemon: no pass for 91s (more than 3 x")


def test_a_document_no_daemon_wrote_says_nothing_about_liveness() -> None:
    assert liveness.liveness_line(doc(None), 5.0, 30) is None
    assert not liveness.stalled(doc(None), 1e9, 30)


def test_a_wall_clock_set_back_is_no_stall() -> None:
    assert liveness.pass_age(doc(1000.0), 900.0) == 0.0


def test_the_summary_counts_running_over_desired_and_names_the_problems() -> None:
    line = liveness.summary_line(doc(1000.0, *GUESTS), 1001.0, 30)
    assert line == "guests: 1/2 running; problems: db backoff"
    assert liveness.summary_line(doc(1000.0, GUESTS[0]), 1001.0, 30) == (
        "guests: 1/1 running; problems: none"
    )


def test_the_summary_leads_with_a_stall_and_the_toolstack() -> None:
    stalled = liveness.summary_line(doc(1000.0, GUESTS[0], ok=False), 1200.0, 30)
    assert stalled == (
        "guests: 1/1 running; problems: no pass for 200s, toolstack: xl list timed out"
    )


def test_status_exits_1_while_the_loop_is_wedged_and_0_when_it_passes_again(
    tmp_path: Path,
) -> None:
    run = DaemonRun(tmp_path, interval="1s")
    run.add_guest("web")
    try:
        run.start()
        wait_for(lambda: run.cli("status").returncode == 0, 20, "status to exit 0")
        shown = run.cli("status").stdout
        assert "daemon: last pass" in shown.splitlines()[-1]
        assert run.cli("status", "--brief").stdout == "guests: 1/1 running; problems: none\n"

        run.signal(signal.SIGSTOP)  # the loop is wedged: no more passes
        try:
            wait_for(lambda: run.cli("status").returncode == 1, 30, "status to see the stall")
            assert "the loop may be wedged" in run.cli("status").stdout
            assert "problems: no pass for" in run.cli("status", "--brief").stdout
        finally:
            run.signal(signal.SIGCONT)
        wait_for(lambda: run.cli("status").returncode == 0, 30, "status to exit 0 again")
    finally:
        run.stop()
        run.kill()
