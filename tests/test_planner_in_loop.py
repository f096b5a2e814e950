"""The planner's failure rules through the real daemon loop: a fake clock and an
in-memory xl (no sleeps, no subprocesses), plus `run --once` on the simulated xl."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import DaemonRun
from tests.helpers import FakeClock
from tests.test_daemon_loop import FakeXl, add_guest, events, inline_starter
from xenreconcile import eventsink, logs, report
from xenreconcile.config import parse_config
from xenreconcile.daemon import STATUS_FILE, Daemon
from xenreconcile.models import CreateResult, Domain
from xenreconcile.state import Boot


class FrozenClock(FakeClock):
    """A fake clock that only the test moves: the loop's waits return at once."""

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.is_set()


class LeavingXl(FakeXl):
    """An xl whose creates of the names in `leave` are killed at the timeout while
    the domain is being built: it stays listed paused, as real xl 4.17 leaves it."""

    def __init__(self) -> None:
        super().__init__()
        self.leave: set[str] = set()

    def create(self, path: str) -> CreateResult:
        name = Path(path).stem
        if name not in self.leave:
            return super().create(path)
        self.created.append(name)
        self.domains[name] = Domain(name, 40 + len(self.created), 128, 1, "--p---", 0.0)
        return CreateResult(ok=False, exit_code=None, timed_out=True, duration=120.0)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[Daemon, LeavingXl, FrozenClock, Path]]:
    """A started daemon on a temp dir: backoff.initial 30 s, no jitter, a frozen clock."""
    guests = tmp_path / "guests"
    guests.mkdir(mode=0o755)
    text = (
        f"guests_dir: {guests}\nstate_dir: {tmp_path / 'state'}\n"
        f"log_file: {tmp_path / 'daemon.log'}\nlog_format: json\nlog_level: debug\n"
        "interval: 30s\nbackoff: {initial: 30s, jitter: 0}\n"
    )
    config = parse_config(text, str(tmp_path / "xenreconcile.yaml"))
    logs.configure(config.log_file, config.log_format, config.log_level)
    xl, clock = LeavingXl(), FrozenClock()
    daemon = Daemon(
        config,
        clock=clock,
        runner=xl,
        read_boot=lambda: Boot("boot-1", 1000.0, 10.0),
        use_watcher=False,
        create_starter=inline_starter(xl),  # type: ignore[arg-type]
    )
    daemon.start()
    try:
        yield daemon, xl, clock, tmp_path
    finally:
        daemon.shutdown()


def status_of(tmp_path: Path, name: str) -> dict[str, Any]:
    """The entry of `name` in the status document the daemon wrote."""
    doc = json.loads((tmp_path / "state" / STATUS_FILE).read_text())
    (entry,) = [g for g in doc["guests"] if g["name"] == name]
    return dict(entry)


def test_a_file_rewritten_every_100ms_does_not_bypass_backoff(loop) -> None:  # type: ignore[no-untyped-def]
    daemon, xl, clock, tmp_path = loop
    xl.fail.add("web")
    cfg = tmp_path / "guests" / "web.cfg"
    start = clock.now
    for stamp in range(80):  # every 100 ms for 8 s
        clock.now = start + stamp * 0.1
        cfg.write_text(f'name = "web"\nmemory = 128\n# stamped {stamp}\n', encoding="utf-8")
        cfg.chmod(0o644)
        daemon.pass_due = True  # what the watcher does on every change
        daemon.step()
    assert xl.created == ["web"]
    assert status_of(tmp_path, "web")["state"] == "backoff"


def test_paused_leftover_of_a_timed_out_create_is_reported_and_notified(  # type: ignore[no-untyped-def]
    loop, monkeypatch
) -> None:
    daemon, xl, _clock, tmp_path = loop
    told: list[tuple[str, str, str | None]] = []

    def notify(
        _command: object, guest: str, event: str, error: str | None, _log: object, **_: object
    ) -> None:
        told.append((guest, event, error))

    monkeypatch.setattr(eventsink, "notify_async", notify)
    xl.leave.add("web")
    add_guest(tmp_path, "web")
    for _ in range(5):
        daemon.step()
    assert xl.created == ["web"]
    entry = status_of(tmp_path, "web")
    assert (entry["state"], entry["attempts"]) == ("leftover", 1)
    assert "domid 41" in entry["detail"] and "xl destroy 41" in entry["detail"]
    doc = json.loads((tmp_path / "state" / STATUS_FILE).read_text())
    (row,) = [line for line in report.status_table(doc).splitlines() if line.startswith("web")]
    assert "leftover" in row and "xl destroy 41" in row
    assert [(g, e) for g, e, _ in told] == [("web", "leftover")]
    assert len(events(tmp_path, "create_leftover")) == 1


@pytest.fixture
def once(tmp_path: Path) -> Iterator[DaemonRun]:
    """The real daemon on the simulated xl, with a 1 s `xl_timeout`."""
    run = DaemonRun(tmp_path, xl_timeout="1s")
    try:
        yield run
    finally:
        run.kill()


def test_run_once_does_not_count_a_paused_leftover_as_running(once: DaemonRun) -> None:
    once.sim.set_faults(create_delay={"slow": 30})
    once.add_guest("slow")
    result = once.cli("run", "--once")
    assert result.returncode == 1, result.stderr
    (left,) = [d for d in once.sim.domains() if d.name == "slow"]
    assert left.state == "--p---"
    assert once.guest_state("slow") == "leftover"
