"""kill -9 durability at a CI size: tools/kill9.py with a handful of kills.

The full run (`python tools/kill9.py --kills 500`) and its figures are in
docs/reliability.md. XR_KILL9_KILLS sets the count here (default 5).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get("XR_KILL9_KILLS", "5"))

pytestmark = pytest.mark.integration


def load_kill9() -> ModuleType:
    """tools/kill9.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("kill9", ROOT / "tools" / "kill9.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill9"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kill9() -> ModuleType:
    return load_kill9()


def test_kill9_loses_no_state_and_converges(tmp_path: Path, kill9: ModuleType) -> None:
    figures = kill9.run_kills(tmp_path, KILLS, seed=4)
    assert figures.kills == KILLS
    assert sum(figures.cli_requests.values()) > 0  # holds really were set over kills


def test_a_request_queued_over_a_kill_is_applied_after_the_restart(
    tmp_path: Path, kill9: ModuleType
) -> None:
    run = kill9.Kill9Run(tmp_path, seed=0)
    try:
        run.prepare()
        run.proc.send_signal(signal.SIGSTOP)  # it holds the lock but takes nothing
        out = run.cli("hold", "good2")
        assert "queued" in out, out
        assert run.pending_requests(), "the request file must persist"
        run.kill9()  # SIGKILL ends a stopped process too
        run.expected_held["good2"] = True
        run.spawn()
        run.wait_ready()
        run.check_holds("after restart", allow_pending=False)
    finally:
        run.cleanup()


def test_temp_files_of_a_killed_save_are_removed_by_the_next_lock_holder(tmp_path: Path) -> None:
    from xenreconcile.models import Memory
    from xenreconcile.state import StateStore

    store = StateStore(str(tmp_path))
    store.save(Memory(boot_time=1.0))
    leftover = tmp_path / ".state.json.abc123.tmp"  # what a kill -9 inside save() leaves
    leftover.write_text("{", encoding="utf-8")
    other = tmp_path / "keep.tmp"
    other.write_text("", encoding="utf-8")
    assert store.try_lock()
    store.unlock()
    assert not leftover.exists() and other.exists()
    assert store.load() == (Memory(boot_time=1.0), None)
