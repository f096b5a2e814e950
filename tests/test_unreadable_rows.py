"""A row of `xl list` the daemon cannot read blinds it only to the guests that row could be."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import GUEST_CFG
from tests.helpers import simxl_daemon
from xenreconcile import eventsink
from xenreconcile.daemon import STATUS_FILE, Daemon
from xenreconcile.simxl import SimXl


@pytest.fixture
def notified(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str | None]]:
    """The notifications the daemon sends: (guest, event, error), recorded in order."""
    calls: list[tuple[str, str, str | None]] = []

    def record(
        _command: Any, guest: str, event: str, error: str | None, _log: Any, **_: Any
    ) -> None:
        calls.append((guest, event, error))

    monkeypatch.setattr(eventsink, "notify_async", record)
    return calls


@pytest.fixture
def daemon(tmp_path: Path, simxl: SimXl) -> Iterator[Daemon]:
    yield simxl_daemon(tmp_path, simxl.command, "notify_command: [/bin/true]\n")


def add_guest(tmp_path: Path, name: str) -> None:
    (tmp_path / "guests" / f"{name}.cfg").write_text(GUEST_CFG.format(name=name))


def logged(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    lines = (tmp_path / "daemon.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == event]


def test_a_domain_named_with_a_leading_no_break_space_stops_nothing(
    daemon: Daemon, simxl: SimXl, tmp_path: Path
) -> None:
    simxl.add_domain("\u00a0web")  # made by hand, or by a release that let the name through
    add_guest(tmp_path, "db")
    assert daemon.run_once() == 0
    assert sorted(simxl.names()) == sorted(["\u00a0web", "db"])
    assert logged(tmp_path, "toolstack_error") == []


def test_an_unreadable_row_holds_back_only_the_guest_it_could_be(
    daemon: Daemon,
    simxl: SimXl,
    tmp_path: Path,
    notified: list[tuple[str, str, str | None]],
) -> None:
    simxl.add_domain("web\n")  # xl prints it over two lines, neither a row
    add_guest(tmp_path, "web")
    add_guest(tmp_path, "db")
    assert daemon.run_once() == 1, "web's state cannot be known"
    assert [c.get("name") for c in simxl.creates()] == ["db"]
    (warning,) = logged(tmp_path, "xl_list_rows_unreadable")
    assert warning["error"] == "xl list output line 3: not an xl list row: 'web'"
    assert warning["rows"][0] == "line 3: 'web'"
    assert warning["not_acted_on"] == ["web"]
    assert notified == [("web", "xl_list_rows_unreadable", warning["error"])]
    status = json.loads((tmp_path / "state" / STATUS_FILE).read_text())
    web = next(g for g in status["guests"] if g["name"] == "web")
    assert web["state"] == "unknown"
    assert web["detail"].startswith("xl list output line 3: not an xl list row: 'web'")
    assert status["toolstack"] == {"ok": True, "error": warning["error"]}


def test_the_problem_is_told_once_and_its_end_too(
    daemon: Daemon,
    simxl: SimXl,
    tmp_path: Path,
    notified: list[tuple[str, str, str | None]],
) -> None:
    simxl.add_domain("web\n")
    add_guest(tmp_path, "web")
    daemon.start()
    try:
        for second in range(3):
            daemon.run_pass(1_800_000_000.0 + second)
        simxl.destroy("web\n")
        daemon.run_pass(1_800_000_010.0)
    finally:
        daemon.shutdown()
    assert len(logged(tmp_path, "xl_list_rows_unreadable")) == 1
    assert len(notified) == 1
    assert len(logged(tmp_path, "xl_list_rows_readable")) == 1
    assert [c.get("name") for c in simxl.creates()] == ["web"]
