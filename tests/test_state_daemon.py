"""The daemon on damaged, newer or unsafe state and with stuck requests: a fake
clock and a fake xl in-process, as in test_daemon_loop."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import FakeClock
from tests.test_daemon_loop import FakeXl, events, inline_starter
from xenreconcile import control, logs
from xenreconcile.config import parse_config
from xenreconcile.daemon import Daemon
from xenreconcile.models import GuestMemory, Memory
from xenreconcile.simxl import wait_until
from xenreconcile.state import Boot, StateStore

NOBODY = 65534
NOTIFY = "import os, sys\nwith open(sys.argv[1], 'a') as f:\n    f.write(os.environ['XR_EVENT'] + ' ' + os.environ['XR_GUEST'] + ' ' + os.environ['XR_ERROR'] + '\\n')\n"  # noqa: E501

MakeDaemon = Callable[[], tuple[Daemon, FakeXl]]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[MakeDaemon]:
    """Start a daemon on tmp_path (guests, state, log, a notify_command writing
    `notified.txt`) when called; every daemon started is shut down afterwards."""
    (tmp_path / "guests").mkdir(mode=0o755)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "notify.py").write_text(NOTIFY)
    config_path = tmp_path / "xenreconcile.yaml"
    notify = [sys.executable, str(tmp_path / "notify.py"), str(tmp_path / "notified.txt")]
    config_path.write_text(
        f"guests_dir: {tmp_path / 'guests'}\nstate_dir: {tmp_path / 'state'}\n"
        f"log_file: {tmp_path / 'daemon.log'}\nlog_format: json\nlog_level: debug\n"
        f"notify_command: {json.dumps(notify)}\n",
        encoding="utf-8",
    )
    config = parse_config(config_path.read_text(), str(config_path))
    logs.configure(config.log_file, config.log_format, config.log_level)
    started: list[Daemon] = []

    def start() -> tuple[Daemon, FakeXl]:
        xl = FakeXl()
        daemon = Daemon(
            config,
            config_path=str(config_path),
            clock=FakeClock(),
            runner=xl,
            read_boot=lambda: Boot("boot-1", 1000.0, 10.0),
            use_watcher=False,
            create_starter=inline_starter(xl),  # type: ignore[arg-type]
        )
        daemon.start()
        started.append(daemon)
        return daemon, xl

    yield start
    for daemon in started:
        if daemon.store.locked_by_us:
            daemon.shutdown()


def add_guests(tmp_path: Path, *names: str) -> None:
    for name in names:
        (tmp_path / "guests" / f"{name}.cfg").write_text(f'name = "{name}"\n')


def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.json"


def status_of(tmp_path: Path) -> dict[str, dict[str, object]]:
    doc = json.loads((tmp_path / "state" / "status.json").read_text())
    return {g["name"]: g for g in doc["guests"]}


def notified(tmp_path: Path, line_start: str) -> str:
    record = tmp_path / "notified.txt"
    wait_until(
        lambda: record.exists() and line_start in record.read_text(), 10, f"{line_start!r} sent"
    )
    return record.read_text()


def steps(daemon: Daemon, count: int = 3) -> None:
    for _ in range(count):
        daemon.step()


# --- finding 5: holds fail closed -------------------------------------------------------------


def test_a_hold_survives_a_damaged_field_elsewhere(make: MakeDaemon, tmp_path: Path) -> None:
    add_guests(tmp_path, "db", "web")
    state_path(tmp_path).write_text(
        json.dumps(
            {
                "version": 1,
                "guests": {
                    "db": {"held": True, "hold_reason": "disk being restored, DO NOT START"},
                    "web": {"attempts": "3"},
                },
            }
        )
    )
    daemon, xl = make()
    steps(daemon)
    assert xl.created == ["web"]
    assert status_of(tmp_path)["db"]["state"] == "held"
    assert "guests.web.attempts" in str(events(tmp_path, "state_corrupt")[0]["error"])
    assert list((tmp_path / "state").glob("state.json.corrupt-*"))


def test_an_unreadable_file_creates_nothing_until_an_admin_decides(
    make: MakeDaemon, tmp_path: Path
) -> None:
    add_guests(tmp_path, "db", "web", "mail")
    StateStore(str(tmp_path / "state")).save(
        Memory(guests={"db": GuestMemory(held=True, hold_reason="restore")})
    )
    state_path(tmp_path).write_text('{"version": 1, "guests": {"web": {"held": tr')
    daemon, xl = make()
    steps(daemon)
    assert xl.created == []
    status = status_of(tmp_path)
    assert status["db"]["state"] == "held"  # recovered from the last good copy
    assert {status["web"]["state"], status["mail"]["state"]} == {"uncertain"}
    assert "state.json was unreadable (not JSON" in str(status["web"]["detail"])
    [doubt] = events(tmp_path, "state_uncertain")
    assert doubt["guest"] == "*" and "hold NAME or release NAME" in str(doubt["fix"])
    assert "state_uncertain * state.json was unreadable" in notified(tmp_path, "state_uncertain")

    control.write_request(str(tmp_path / "state"), control.Request("release", "web"))
    steps(daemon)
    assert xl.created == ["web"]
    control.write_request(str(tmp_path / "state"), control.Request("accept-state"))
    steps(daemon)
    assert xl.created == ["web", "mail"]
    assert status_of(tmp_path)["db"]["state"] == "held"


def test_doubts_left_by_a_cli_command_are_reported_at_start(
    make: MakeDaemon, tmp_path: Path
) -> None:
    add_guests(tmp_path, "web")
    state_path(tmp_path).write_text('{"version": 1, "guests": {"web": {"migrated": "?"}}}')
    control.submit(str(tmp_path / "state"), control.Request("hold", "other"))  # moves it aside
    daemon, xl = make()
    steps(daemon)
    assert xl.created == []
    [doubt] = events(tmp_path, "state_uncertain")
    assert doubt["guest"] == "web" and "guests.web.migrated" in str(doubt["error"])
    assert "state_uncertain web guests.web.migrated" in notified(tmp_path, "state_uncertain")


def test_a_newer_state_file_is_never_rewritten(make: MakeDaemon, tmp_path: Path) -> None:
    add_guests(tmp_path, "web")
    newer = json.dumps({"version": 2, "guests": {"web": {"hold": {"until": "friday"}}}})
    state_path(tmp_path).write_text(newer)
    daemon, xl = make()
    request = Path(control.requests_dir(str(tmp_path / "state"))) / "0001-1.json"
    request.parent.mkdir(mode=0o700)
    request.write_text(json.dumps({"op": "release", "name": "web"}))
    steps(daemon)
    daemon.shutdown()
    assert xl.created == []
    assert state_path(tmp_path).read_text() == newer
    assert not (tmp_path / "state" / "state.json.prev").exists()
    assert "format version 2" in str(events(tmp_path, "state_newer")[0]["error"])
    assert events(tmp_path, "request_refused") and not request.exists()
    assert events(tmp_path, "state_save_failed") == []


def test_a_request_reason_that_is_not_a_string_never_reaches_the_state(
    make: MakeDaemon, tmp_path: Path
) -> None:
    daemon, _xl = make()
    request = Path(control.requests_dir(str(tmp_path / "state"))) / "0001-1.json"
    request.parent.mkdir(mode=0o700)
    request.write_text(json.dumps({"op": "hold", "name": "web", "reason": ["a"]}))
    steps(daemon)
    assert "reason must be a string, not list" in str(events(tmp_path, "bad_request")[0]["error"])
    assert not request.exists()
    saved, warning = StateStore(str(tmp_path / "state")).load()
    assert warning is None
    assert (saved.guests, saved.uncertain) == (daemon.memory.guests, daemon.memory.uncertain)
    assert not daemon.memory.guest("web").held


# --- finding 9: the state directory ------------------------------------------------------------


def test_a_planted_status_temp_symlink_is_not_written_through(
    make: MakeDaemon, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, tmp_path / "state" / "status.json.tmp")
    add_guests(tmp_path, "web")
    daemon, xl = make()
    steps(daemon)
    assert xl.created == ["web"]
    assert victim.read_text() == "precious\n"
    assert status_of(tmp_path)["web"]["state"] == "running"


def test_requests_from_untrusted_files_or_dirs_are_not_applied(
    make: MakeDaemon, tmp_path: Path
) -> None:
    add_guests(tmp_path, "web")
    directory = Path(control.requests_dir(str(tmp_path / "state")))
    directory.mkdir(mode=0o700)
    planted = directory / "0001-1.json"
    planted.write_text(json.dumps({"op": "hold", "name": "web"}))
    os.chown(planted, NOBODY, NOBODY)
    daemon, xl = make()
    assert "not trusted" in str(events(tmp_path, "bad_request")[0]["error"])
    directory.chmod(0o777)
    control_file = directory / "0002-1.json"
    control_file.write_text(json.dumps({"op": "hold", "name": "web"}))
    steps(daemon)
    assert xl.created == ["web"]
    assert not daemon.memory.guest("web").held
    [unsafe] = events(tmp_path, "requests_dir_unsafe")
    assert f"{directory} has mode 0777" in str(unsafe["error"])
    assert control_file.exists()


def test_the_daemon_refuses_an_unsafe_state_dir(make: MakeDaemon, tmp_path: Path) -> None:
    os.chmod(tmp_path / "state", 0o777)
    with pytest.raises(OSError, match=r"state_dir .* is unsafe: .* has mode 0777"):
        make()
    assert os.listdir(tmp_path / "state") == []


# --- finding 13: a request is applied once ------------------------------------------------------


def test_a_request_is_applied_once_while_saving_fails(
    make: MakeDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, _xl = make()

    def full(_memory: Memory) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(daemon.store, "save", full)
    path = Path(
        control.write_request(str(tmp_path / "state"), control.Request("hold", "web", "disk"))
    )
    steps(daemon, 20)
    assert len(events(tmp_path, "hold")) == 1
    assert path.exists()  # kept until its save succeeds
    assert daemon.memory.guest("web").held
    monkeypatch.undo()
    daemon.step()
    assert not path.exists()
    assert len(events(tmp_path, "hold")) == 1
    assert StateStore(str(tmp_path / "state")).load()[0].guest("web").hold_reason == "disk"


def test_a_request_left_by_a_killed_daemon_is_applied_at_the_next_start(
    make: MakeDaemon, tmp_path: Path
) -> None:
    add_guests(tmp_path, "web")
    path = Path(control.write_request(str(tmp_path / "state"), control.Request("hold", "web")))
    daemon, xl = make()
    steps(daemon)
    assert not path.exists() and xl.created == []
    assert StateStore(str(tmp_path / "state")).load()[0].guest("web").held
