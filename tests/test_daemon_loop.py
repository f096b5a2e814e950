"""The daemon loop in-process: a fake clock, a fake xl, no sleeps, no subprocesses."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import FakeClock, minimal_cfg
from xenreconcile import control, logs
from xenreconcile import daemon as daemon_module
from xenreconcile.config import parse_config
from xenreconcile.daemon import Daemon, toolstack_delay
from xenreconcile.models import CreateAction, CreateResult, Domain, GuestMemory, Memory
from xenreconcile.state import Boot, StateStore
from xenreconcile.xl import ToolstackError

DOM0 = Domain("Domain-0", 0, 1024, 2, "r-----", 1.0)


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


BOOT = Boot(boot_id="boot-1", boot_time=1000.0, uptime=50.0)


def new_daemon(
    tmp_path: Path,
    xl: FakeXl,
    clock: FakeClock,
    *,
    boot: Boot = BOOT,
    backoff: str = "{initial: 10s, jitter: 0}",
    start: bool = True,
    use_watcher: bool = False,
) -> Daemon:
    """A daemon on the guests and state dirs under `tmp_path` (a restart when a
    daemon ran there before), with a fake xl and a fake clock; started unless
    `start` is false (for `run`, which starts it)."""
    guests = tmp_path / "guests"
    guests.mkdir(mode=0o755, exist_ok=True)
    config_path = tmp_path / "xenreconcile.yaml"
    config_path.write_text(
        f"guests_dir: {guests}\nstate_dir: {tmp_path / 'state'}\n"
        f"log_file: {tmp_path / 'daemon.log'}\nlog_format: json\nlog_level: debug\n"
        f"interval: 30s\nbackoff: {backoff}\n",
        encoding="utf-8",
    )
    config = parse_config(config_path.read_text(), str(config_path))
    logs.configure(config.log_file, config.log_format, config.log_level)
    daemon = Daemon(
        config,
        config_path=str(config_path),
        clock=clock,
        runner=xl,
        read_boot=lambda: boot,
        use_watcher=use_watcher,
        create_starter=inline_starter(xl),  # type: ignore[arg-type]
    )
    if start:
        daemon.start()
    return daemon


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Daemon, FakeXl, FakeClock, Path]]:
    xl, clock = FakeXl(), FakeClock()
    daemon = new_daemon(tmp_path, xl, clock)
    try:
        yield daemon, xl, clock, tmp_path
    finally:
        daemon.shutdown()


def step_until(daemon: Daemon, clock: FakeClock, done: Callable[[], bool], seconds: float) -> bool:
    """Step the loop until `done()` or `seconds` of (fake) time passed; `done()`."""
    deadline = clock.now + seconds
    while not done() and clock.now < deadline:
        daemon.step()
    return done()


def events(tmp_path: Path, name: str) -> list[dict[str, object]]:
    lines = (tmp_path / "daemon.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def add_guest(tmp_path: Path, name: str) -> None:
    path = tmp_path / "guests" / f"{name}.cfg"
    path.write_text(minimal_cfg(name), encoding="utf-8")
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


def test_a_watcher_hint_brings_a_pass_at_once(world) -> None:  # type: ignore[no-untyped-def]
    daemon, xl, clock, tmp_path = world
    daemon.step()  # the first pass; the next is due in 30 s
    lists, hinted_at = xl.lists, clock.now
    add_guest(tmp_path, "new")
    daemon.hint()  # what the watcher thread does when it sees the directory change
    daemon.step()
    assert (xl.lists, xl.created) == (lists + 1, ["new"])
    assert clock.now == hinted_at  # no wait before the pass


def test_the_first_creates_do_not_wait_for_the_sources_and_a_pass_follows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xl, clock = FakeXl(), FakeClock()
    started: list[tuple[str, list[str]]] = []

    class Source:
        """Stands in for both sources; a cfg appears while the file watcher starts."""

        name = "stand-in"

        def __init__(self, *args: object) -> None:
            started.append((type(self).__name__, list(xl.created)))
            if type(self).__name__ == "FileWatch":
                add_guest(tmp_path, "late")

        def close(self) -> None:
            return None

    monkeypatch.setattr(daemon_module, "WatchSource", type("FileWatch", (Source,), {}))
    monkeypatch.setattr(daemon_module, "ReleaseWatchSource", type("ReleaseWatch", (Source,), {}))
    daemon = new_daemon(tmp_path, xl, clock, start=False, use_watcher=True)
    add_guest(tmp_path, "boot")
    create = xl.create

    def create_then_stop_at_late(path: str) -> CreateResult:
        if Path(path).stem == "late":
            daemon.stop()
        return create(path)

    xl.create = create_then_stop_at_late  # type: ignore[method-assign]
    began = clock.now
    assert daemon.run() == 0
    assert started == [("FileWatch", ["boot"]), ("ReleaseWatch", ["boot"])]
    assert xl.created == ["boot", "late"]
    assert clock.now - began < 30  # the pass after the sources, not the next interval


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
    path = Path(
        control.write_request(str(tmp_path / "state"), control.Request("hold", "kept", "disk"))
    )
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
    directory = Path(control.requests_dir(str(tmp_path / "state")))
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


# --- the wall clock steps: waits run on the monotonic clock --------------------------------

HOUR, DAY = 3600.0, 86_400.0


def run_guest(daemon: Daemon, xl: FakeXl, clock: FakeClock, tmp_path: Path, name: str) -> None:
    """Drop `name`'s file and step until a pass has seen it running."""
    add_guest(tmp_path, name)
    assert step_until(daemon, clock, lambda: daemon.memory.guest(name).seen_running, 60)


def test_a_clock_set_back_an_hour_keeps_passes_running_and_recreates(world) -> None:  # type: ignore[no-untyped-def]
    daemon, xl, clock, tmp_path = world
    run_guest(daemon, xl, clock, tmp_path, "web")
    clock.step_wall(-HOUR)
    lists = xl.lists
    del xl.domains["web"]  # destroyed; no file event tells the daemon
    assert step_until(daemon, clock, lambda: xl.created == ["web", "web"], 60)
    assert xl.lists - lists >= 2  # the interval pass, then the one at the end of missing_grace
    assert step_until(daemon, clock, lambda: xl.lists - lists >= 4, 60)  # and on it goes


def test_a_clock_corrected_by_a_day_does_not_delay_the_retry(tmp_path: Path) -> None:
    xl, clock = FakeXl(), FakeClock(wall_offset=1_800_000_000.0 + DAY)  # a bad RTC
    daemon = new_daemon(tmp_path, xl, clock, backoff="{initial: 10s, max: 60s, jitter: 5s}")
    try:
        xl.fail.add("bad")
        add_guest(tmp_path, "bad")
        assert step_until(daemon, clock, lambda: daemon.memory.guest("bad").next_retry, 5)
        failed_at = clock.now  # the failure is recorded, its retry scheduled
        clock.step_wall(-DAY)  # NTP corrects the clock
        assert step_until(daemon, clock, lambda: len(xl.created) == 2, 2 * DAY)
        assert clock.now - failed_at <= 10 + 5  # backoff.initial + jitter
    finally:
        daemon.shutdown()


def test_a_clock_corrected_across_a_restart_retries_within_backoff_max(tmp_path: Path) -> None:
    xl, clock = FakeXl(), FakeClock(wall_offset=1_800_000_000.0 + DAY)
    backoff = "{initial: 10s, multiplier: 100, max: 60s, jitter: 5s}"
    daemon = new_daemon(tmp_path, xl, clock, backoff=backoff)
    xl.fail.add("bad")
    add_guest(tmp_path, "bad")
    assert step_until(daemon, clock, lambda: len(xl.created) == 2, 60)  # 2nd retry in 60 s
    daemon.shutdown()  # saved with next_retry a day ahead of the corrected clock
    clock.step_wall(-DAY)
    restarted = new_daemon(tmp_path, xl, clock, backoff=backoff)
    try:
        started = clock.now
        assert step_until(restarted, clock, lambda: len(xl.created) == 3, 2 * DAY)
        assert clock.now - started <= 60 + 5  # backoff.max + jitter
    finally:
        restarted.shutdown()


def test_a_clock_step_forward_does_not_cut_missing_grace_short(world) -> None:  # type: ignore[no-untyped-def]
    daemon, xl, clock, tmp_path = world
    run_guest(daemon, xl, clock, tmp_path, "web")
    del xl.domains["web"]
    assert step_until(daemon, clock, lambda: daemon.memory.guest("web").missing_since, 60)
    missing_at = clock.now
    clock.step_wall(HOUR)
    assert not step_until(daemon, clock, lambda: len(xl.created) == 2, 4.5)  # grace is 5 s
    assert step_until(daemon, clock, lambda: len(xl.created) == 2, 10)
    assert clock.now - missing_at >= 5


def test_deadlines_saved_far_in_the_future_are_clamped_on_load(tmp_path: Path) -> None:
    xl, clock = FakeXl(), FakeClock()
    far = clock.wall() + 30 * DAY  # written under a clock a month ahead
    store = StateStore(str(tmp_path / "state"))
    web = GuestMemory(attempts=3, next_retry=far, created_at=far, cfg_hash=None)
    store.save(Memory(guests={"web": web}, last_create_at=far, **boot_fields(BOOT)))
    daemon = new_daemon(tmp_path, xl, clock, backoff="{initial: 10s, max: 60s, jitter: 5s}")
    try:
        now, loaded = clock.now, daemon.memory
        assert loaded.guest("web").next_retry == now + 60 + 5
        assert loaded.guest("web").created_at == now  # its stable_after window starts again
        assert loaded.last_create_at == now
        xl.domains["web"] = Domain("web", 1, 128, 1, "-b----", 0.0)
        add_guest(tmp_path, "web")
        # listed running: stable after stable_after (60 s) from now, not in a month
        assert step_until(daemon, clock, lambda: daemon.memory.guest("web").attempts == 0, 61)
    finally:
        daemon.shutdown()


def test_state_json_holds_epoch_seconds(world) -> None:  # type: ignore[no-untyped-def]
    daemon, xl, clock, tmp_path = world
    xl.fail.add("bad")
    add_guest(tmp_path, "bad")
    assert step_until(daemon, clock, lambda: daemon.memory.guest("bad").next_retry, 5)
    saved = json.loads((tmp_path / "state" / "state.json").read_text())
    in_memory = daemon.memory.guest("bad").next_retry
    assert in_memory is not None and in_memory < 1_000_000  # monotonic seconds
    assert saved["guests"]["bad"]["next_retry"] == pytest.approx(in_memory + clock.wall_offset)
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["generated_at"] == pytest.approx(clock.wall(), abs=1)
    assert status["guests"][0]["next_retry"] == pytest.approx(in_memory + clock.wall_offset)


# --- Dom0 reboot detection at start -----------------------------------------------------------


def boot_fields(boot: Boot) -> dict[str, object]:
    """The Memory fields that say which boot a saved state belongs to."""
    return {"boot_id": boot.boot_id, "boot_time": boot.boot_time, "saved_uptime": boot.uptime}


def restart_on(tmp_path: Path, boot: Boot) -> Daemon:
    """Save a state with a held guest and a failing one under BOOT, then start a
    daemon that finds the Dom0 boot `boot`."""
    store = StateStore(str(tmp_path / "state"))
    guests = {"parked": GuestMemory(held=True), "bad": GuestMemory(attempts=4, last_error="x")}
    store.save(Memory(guests=guests, **boot_fields(BOOT)))
    return new_daemon(tmp_path, FakeXl(), FakeClock(), boot=boot)


@pytest.mark.parametrize(
    "boot",
    [
        Boot("boot-1", 1000.0 - HOUR, uptime=80.0),  # the clock was set back an hour
        Boot("boot-1", 1000.0 + DAY, uptime=80.0),  # or a day forward
        Boot(None, 1000.0 - HOUR, uptime=80.0),  # the same, on a kernel without boot ids
    ],
    ids=["back", "forward", "no-boot-id-back"],
)
def test_a_clock_step_is_not_taken_for_a_dom0_reboot(tmp_path: Path, boot: Boot) -> None:
    daemon = restart_on(tmp_path, boot)
    try:
        assert events(tmp_path, "dom0_rebooted") == []
        assert daemon.memory.guest("bad").attempts == 4
        assert daemon.memory.boot_time == boot.boot_time  # the kernel's current value
    finally:
        daemon.shutdown()


@pytest.mark.parametrize(
    "boot",
    [
        Boot("boot-2", 1000.0, uptime=80.0),  # a new id, even with the same boot time
        Boot(None, 1000.0 - HOUR, uptime=20.0),  # no id: the uptime went down
        Boot(None, 1000.0 + 600, uptime=90.0),  # no id: booted after the last save
    ],
    ids=["new-id", "uptime-went-down", "booted-after-the-save"],
)
def test_a_dom0_reboot_is_seen(tmp_path: Path, boot: Boot) -> None:
    daemon = restart_on(tmp_path, boot)
    try:
        rebooted = events(tmp_path, "dom0_rebooted")
        assert len(rebooted) == 1 and rebooted[0]["previous_boot_id"] == "boot-1"
        assert daemon.memory.guest("bad").attempts == 0
        assert daemon.memory.guest("parked").held
    finally:
        daemon.shutdown()


def test_the_uptime_of_the_last_save_is_recorded(world) -> None:  # type: ignore[no-untyped-def]
    daemon, _xl, clock, tmp_path = world
    clock.now += 100
    daemon.shutdown()
    memory, _ = StateStore(str(tmp_path / "state")).load()
    assert memory.saved_uptime == pytest.approx(BOOT.uptime + 100)  # type: ignore[operator]
    assert (memory.boot_id, memory.boot_time) == (BOOT.boot_id, BOOT.boot_time)
    daemon.store.try_lock()  # the fixture shuts it down once more
