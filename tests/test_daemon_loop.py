"""The daemon loop in-process: a fake clock, a fake xl, no sleeps, no subprocesses."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xenreconcile import control, logs
from xenreconcile.config import parse_config
from xenreconcile.daemon import Daemon, toolstack_delay
from xenreconcile.models import CreateAction, CreateResult, Domain
from xenreconcile.state import StateStore
from xenreconcile.xl import ToolstackError

DOM0 = Domain("Domain-0", 0, 1024, 2, "r-----", 1.0)


class FakeClock:
    """Time that only moves when the loop waits."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        self.now += max(0.0, timeout)
        return False


class FakeXl:
    """An in-memory toolstack: `list` and `create` with scripted failures."""

    def __init__(self) -> None:
        self.domains: dict[str, Domain] = {}
        self.list_error: str | None = None
        self.fail: set[str] = set()
        self.created: list[str] = []
        self.lists = 0

    def list(self) -> tuple[Domain, ...]:
        self.lists += 1
        if self.list_error:
            raise ToolstackError(self.list_error)
        return (DOM0, *self.domains.values())

    def create(self, path: str) -> CreateResult:
        name = Path(path).stem
        self.created.append(name)
        if name in self.fail:
            return CreateResult(ok=False, exit_code=3, stderr_tail="libxl: error: boom\n")
        self.domains[name] = Domain(name, len(self.domains) + 1, 128, 1, "-b----", 0.0)
        return CreateResult(ok=True, exit_code=0)


def inline_starter(xl: FakeXl) -> Callable[..., object]:
    """Run each create at once in the loop's own thread (no concurrency)."""

    class Done:
        def join(self, timeout: float | None = None) -> None:
            return None

    def start(action: CreateAction, done: Callable[[CreateResult], None]) -> Done:
        done(xl.create(action.path))
        return Done()

    return start


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Daemon, FakeXl, FakeClock, Path]]:
    guests = tmp_path / "guests"
    guests.mkdir(mode=0o755)
    log_file = tmp_path / "daemon.log"
    config_path = tmp_path / "xenreconcile.yaml"
    config_path.write_text(
        f"guests_dir: {guests}\nstate_dir: {tmp_path / 'state'}\nlog_file: {log_file}\n"
        "log_format: json\nlog_level: debug\ninterval: 30s\nbackoff: {initial: 10s, jitter: 0}\n",
        encoding="utf-8",
    )
    config = parse_config(config_path.read_text(), str(config_path))
    logs.configure(config.log_file, config.log_format, config.log_level)
    xl, clock = FakeXl(), FakeClock()
    daemon = Daemon(
        config,
        config_path=str(config_path),
        clock=clock,
        runner=xl,
        boot_time=lambda: 1000.0,
        use_watcher=False,
        create_starter=inline_starter(xl),  # type: ignore[arg-type]
    )
    daemon.start()
    try:
        yield daemon, xl, clock, tmp_path
    finally:
        daemon.shutdown()


def events(tmp_path: Path, name: str) -> list[dict[str, object]]:
    lines = (tmp_path / "daemon.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def add_guest(tmp_path: Path, name: str) -> None:
    path = tmp_path / "guests" / f"{name}.cfg"
    path.write_text(f'name = "{name}"\nmemory = 128\n', encoding="utf-8")
    path.chmod(0o644)


def test_toolstack_delay_grows_and_is_capped() -> None:
    delays = [toolstack_delay(n, 30) for n in range(1, 8)]
    assert delays == sorted(delays)
    assert delays[0] == 1 and delays[-1] == 30


def test_failing_listing_is_retried_with_backoff_and_creates_nothing(world) -> None:  # type: ignore[no-untyped-def]
    daemon, xl, clock, tmp_path = world
    add_guest(tmp_path, "a")
    xl.list_error = "xl list exited 1: cannot init xl context"
    start = clock.now
    while xl.lists < 4:
        daemon.step()
    assert xl.created == []
    # 1 + 2 + 4 seconds between listings, not the 30 s interval
    assert clock.now - start == pytest.approx(7, abs=0.6)
    assert len(events(tmp_path, "toolstack_error")) >= 1
    xl.list_error = None
    fixed = clock.now
    while not xl.created and clock.now - fixed < 60:
        daemon.step()
    assert xl.created == ["a"]
    assert clock.now - fixed <= 8.5  # the next listing comes 8 s after the 4th failure
    assert events(tmp_path, "toolstack_ready")


def test_failed_create_schedules_a_retry_after_the_backoff(world) -> None:  # type: ignore[no-untyped-def]
    daemon, xl, clock, tmp_path = world
    add_guest(tmp_path, "bad")
    xl.fail.add("bad")
    daemon.step()
    first = clock.now
    while len(xl.created) < 2:
        daemon.step()
    assert clock.now - first >= 10  # backoff.initial, no jitter
    failed = events(tmp_path, "create_failed")
    assert failed[0]["exit_code"] == 3 and "boom" in str(failed[0]["stderr"])
    assert events(tmp_path, "retry_scheduled")[0]["delay"] == 10.0


def test_requests_are_taken_applied_and_removed(world) -> None:  # type: ignore[no-untyped-def]
    daemon, xl, _clock, tmp_path = world
    add_guest(tmp_path, "kept")
    path = control.write_request(str(tmp_path / "state"), control.Request("hold", "kept", "disk"))
    daemon.step()
    assert not path.exists()
    assert xl.created == []
    memory, _ = StateStore(str(tmp_path / "state")).load()
    assert memory.guest("kept").held and memory.guest("kept").hold_reason == "disk"
    control.write_request(str(tmp_path / "state"), control.Request("release", "kept"))
    daemon.step()
    daemon.step()
    assert xl.created == ["kept"]


def test_an_unusable_request_is_logged_and_dropped(world) -> None:  # type: ignore[no-untyped-def]
    daemon, _xl, _clock, tmp_path = world
    directory = control.requests_dir(str(tmp_path / "state"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "0001-1.json").write_text("{not json")
    daemon.step()
    assert not (directory / "0001-1.json").exists()
    assert events(tmp_path, "bad_request")


def test_reload_keeps_the_old_config_when_the_new_one_is_bad(world) -> None:  # type: ignore[no-untyped-def]
    daemon, _xl, _clock, tmp_path = world
    config_path = tmp_path / "xenreconcile.yaml"
    good = config_path.read_text()
    config_path.write_text(good + "concurency: 2\n")
    daemon.reload()
    daemon.step()
    error = str(events(tmp_path, "config_reload_failed")[0]["error"])
    assert "concurency" in error and "concurrency" in error  # names the key, suggests the right one
    assert daemon.config.concurrency == 4
    config_path.write_text(good + "concurrency: 2\n")
    daemon.reload()
    daemon.step()
    assert daemon.config.concurrency == 2
    assert events(tmp_path, "config_reloaded")


def test_reload_keeps_the_old_config_when_the_new_one_is_world_writable(world) -> None:  # type: ignore[no-untyped-def]
    daemon, _xl, _clock, tmp_path = world
    config_path = tmp_path / "xenreconcile.yaml"
    config_path.write_text(config_path.read_text() + "concurrency: 2\n")
    config_path.chmod(0o666)
    daemon.reload()
    daemon.step()
    error = str(events(tmp_path, "config_reload_failed")[0]["error"])
    assert error.startswith(f"{config_path}: unsafe config file: mode 0666")
    assert daemon.config.concurrency == 4
    config_path.chmod(0o644)
    daemon.reload()
    daemon.step()
    assert daemon.config.concurrency == 2


def test_state_save_failure_is_logged_once_and_the_loop_goes_on(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    daemon, xl, _clock, tmp_path = world

    def full(*_args: object) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(daemon.store, "save", full)
    add_guest(tmp_path, "a")
    add_guest(tmp_path, "b")
    for _ in range(3):
        daemon.step()
    assert sorted(xl.created) == ["a", "b"]
    assert len(events(tmp_path, "state_save_failed")) == 1


def test_idle_passes_log_nothing_at_info(world) -> None:  # type: ignore[no-untyped-def]
    daemon, xl, _clock, tmp_path = world
    add_guest(tmp_path, "a")
    for _ in range(3):
        daemon.step()
    assert xl.created == ["a"]
    before = len((tmp_path / "daemon.log").read_text().splitlines())
    for _ in range(20):  # 20 more turns, several full passes
        daemon.step()
    new = (tmp_path / "daemon.log").read_text().splitlines()[before:]
    assert [line for line in new if json.loads(line)["level"] != "debug"] == []
