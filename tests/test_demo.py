"""`xenreconcile demo`, the README's first command, end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_shows_the_recovery_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "xenreconcile", "demo"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-2000:]
    for step in (
        "ok: all guests created",
        "ok: web recreated",
        "ok: build created",
        "event=dom0_rebooted",
        "ok: every guest recovered",
        "demo finished: every guest recovered",
    ):
        assert step in out, f"missing {step!r} in the demo's output"
    assert "FAILED" not in out
