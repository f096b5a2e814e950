"""`check` warns when the drain cannot fit the host's shutdown budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenreconcile import budget, commands
from xenreconcile.config import parse_config
from xenreconcile.models import DesiredGuest


def config(text: str = "") -> object:
    return parse_config(text, "/etc/xenreconcile.yaml")


def test_the_defaults_fit_freebsds_default_rcshutdown_timeout() -> None:
    assert budget.warnings(config(), {"a": 1024}, budget.freebsd_budget(None)) == []


def test_a_drain_longer_than_rcshutdown_timeout_is_warned_with_the_fix() -> None:
    (message,) = budget.warnings(
        config("host_shutdown_timeout: 120s\n"), {}, budget.freebsd_budget("90")
    )
    assert "122s" in message and "rcshutdown_timeout" in message
    assert "sysrc rcshutdown_timeout=" in message


def test_a_raised_rcshutdown_timeout_is_taken_into_account() -> None:
    assert (
        budget.warnings(config("host_shutdown_timeout: 120s\n"), {}, budget.freebsd_budget("200"))
        == []
    )


def test_the_guests_units_timeout_is_the_linux_budget() -> None:
    unit = Path(__file__).resolve().parents[1] / "etc" / "systemd" / "xenreconcile-guests.service"
    found = budget.unit_budget(unit.read_text(encoding="utf-8"))
    assert found is not None and found.seconds == 100
    assert budget.warnings(config(), {}, found) == []
    assert budget.unit_budget("TimeoutStopSec=2min\n").seconds == 120  # type: ignore[union-attr]


def test_saves_that_cannot_finish_by_the_deadline_are_warned() -> None:
    text = "guests:\n  big: {on_host_shutdown: save}\n  small: {on_host_shutdown: save}\n"
    (message,) = budget.warnings(config(text), {"big": 8192, "small": 512, "other": 65536}, None)
    assert "174s" in message, "8704 MiB at 50 MiB/s; the guest that is shut down does not count"


def test_checks_drain_warnings_use_this_hosts_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "host_budget", lambda: budget.freebsd_budget("60"))
    monkeypatch.setattr(budget, "guest_unit_missing", lambda: False)
    found = commands.drain_warnings(config(), [DesiredGuest("a", str(tmp_path / "a.cfg"), "h")])
    assert len(found) == 1 and "more than FreeBSD's rcshutdown_timeout gives it (60s)" in found[0]
