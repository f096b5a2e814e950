"""Admin requests: their validation, where they are trusted from, and `hold` /
`release` / `status` on damaged or newer state files (no daemon, in-process)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xenreconcile import cli, control
from xenreconcile.models import GuestMemory, Memory
from xenreconcile.state import StateReadOnlyError, StateStore

NOBODY = 65534


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return str(path)


def drop(state_dir: str, body: str, name: str = "0001-1.json") -> Path:
    directory = Path(control.requests_dir(state_dir))
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / name
    path.write_text(body, encoding="utf-8")
    return path


def only_error(state_dir: str) -> str:
    [(_path, found)] = control.read_requests(state_dir)
    assert isinstance(found, control.RequestError)
    return str(found)


# --- request fields (finding 5: a bad request must not corrupt the next load) -------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"op": "hold", "name": "web", "reason": {"x": 1}}, "reason must be a string, not dict"),
        ({"op": "hold", "name": "web", "reason": 5}, "reason must be a string, not int"),
        ({"op": "hold", "name": 5}, "name must be a string, not int"),
        ({"op": "hold"}, "name must be a string, not null"),
        ({"op": ["hold"], "name": "web"}, "op ['hold'] is not one of"),
        ({"op": "destroy", "name": "web"}, "op 'destroy' is not one of"),
        ({"op": "hold", "name": "web", "when": 1}, "unknown field(s) when"),
        ({"op": "hold", "name": "web\n"}, "is not a guest name"),
        ({"op": "hold", "name": " web"}, "is not a guest name"),
        ({"op": "hold", "name": "web", "reason": "a\x1b[2Jb"}, "reason must be printable"),
        ({"op": "accept-state", "name": "web"}, "accept-state takes no name"),
        ([], "not a JSON object"),
    ],
)
def test_a_request_with_a_field_that_does_not_fit_is_refused(
    state_dir: str, raw: object, message: str
) -> None:
    path = drop(state_dir, json.dumps(raw))
    error = only_error(state_dir)
    assert error.startswith(f"{path}: unusable request: ")
    assert message in error


def test_the_requests_the_cli_writes_are_read_back(state_dir: str) -> None:
    sent = [
        control.Request("hold", "web", "disk being restored, DO NOT START"),
        control.Request("release", "db"),
        control.Request("retry", "mail"),
        control.Request("accept-state"),
    ]
    for request in sent:
        control.write_request(state_dir, request)
    assert [found for _path, found in control.read_requests(state_dir)] == sent


def test_a_request_that_does_not_fit_is_refused_when_made() -> None:
    with pytest.raises(control.RequestError, match="reason must be a string"):
        control.Request("hold", "web", 5)  # type: ignore[arg-type]


# --- where requests are trusted from (finding 9) ------------------------------------------------


def test_a_request_file_owned_by_another_user_is_refused(state_dir: str) -> None:
    path = drop(state_dir, json.dumps({"op": "release", "name": "web"}))
    os.chown(path, NOBODY, NOBODY)
    assert f"is owned by uid {NOBODY}: not trusted" in only_error(state_dir)


def test_a_request_symlink_is_not_followed(state_dir: str, tmp_path: Path) -> None:
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps({"op": "release", "name": "web"}))
    directory = Path(control.requests_dir(state_dir))
    directory.mkdir(mode=0o700)
    (directory / "0001-1.json").symlink_to(elsewhere)
    assert "is a symlink: not followed" in only_error(state_dir)


@pytest.mark.parametrize("unsafe", ["mode", "owner"])
def test_an_unsafe_requests_dir_is_refused(state_dir: str, unsafe: str) -> None:
    drop(state_dir, json.dumps({"op": "release", "name": "web"}))
    directory = Path(control.requests_dir(state_dir))
    if unsafe == "mode":
        directory.chmod(0o1777)
    else:
        os.chown(directory, NOBODY, NOBODY)
    with pytest.raises(control.RequestDirError, match=f"requests directory {directory} is unsafe"):
        control.read_requests(state_dir)
    with pytest.raises(control.RequestDirError):
        control.write_request(state_dir, control.Request("hold", "web"))


# --- hold and release on damaged or newer files (findings 5 and 6) ------------------------------


def test_hold_on_a_damaged_file_keeps_the_other_holds(state_dir: str) -> None:
    store = StateStore(state_dir)
    Path(store.path).write_text(
        json.dumps(
            {
                "version": 1,
                "guests": {
                    "db": {"held": True, "hold_reason": "disk being restored, DO NOT START"},
                    "web": {"held": "yes"},
                    "mail": {"attempts": "many", "migrated": True},
                },
            }
        )
    )
    warnings: list[str] = []
    said = control.submit(state_dir, control.Request("hold", "new", "x"), warn=warnings.append)
    assert said == "hold new: saved (no daemon running)"
    assert len(warnings) == 1 and "uncertain: web" in warnings[0]
    memory, warning = StateStore(state_dir).load()
    assert warning is None
    assert memory.guest("db") == GuestMemory(
        held=True, hold_reason="disk being restored, DO NOT START"
    )
    assert memory.guest("mail") == GuestMemory(migrated=True)
    assert memory.guest("new").held
    assert memory.guest("web").uncertain is not None  # still for the admin to decide


def test_hold_on_an_unreadable_file_keeps_the_last_good_holds(state_dir: str) -> None:
    store = StateStore(state_dir)
    store.save(Memory(guests={"db": GuestMemory(held=True, hold_reason="restore")}))
    Path(store.path).write_text("{garbage")
    control.submit(state_dir, control.Request("hold", "new"))
    memory, _warning = StateStore(state_dir).load()
    assert memory.guest("db").held and memory.guest("db").hold_reason == "restore"
    assert memory.guest("new").held and memory.guest("new").uncertain is None  # decided
    assert memory.guest("other").uncertain is not None  # not decided yet


def test_release_and_accept_state_settle_doubts(state_dir: str) -> None:
    store = StateStore(state_dir)
    store.save(Memory(guests={"db": GuestMemory(held=True, uncertain="x")}, uncertain="y"))
    control.submit(state_dir, control.Request("release", "web"))
    memory, _warning = StateStore(state_dir).load()
    assert memory.guest("web") == GuestMemory()
    assert memory.guest("db").uncertain == "x" and memory.guest("other").uncertain == "y"
    control.submit(state_dir, control.Request("accept-state"))
    memory, _warning = StateStore(state_dir).load()
    assert memory == Memory(guests={"db": GuestMemory(held=True), "web": GuestMemory()})


def test_no_command_rewrites_a_newer_state_file(state_dir: str) -> None:
    store = StateStore(state_dir)
    newer = json.dumps({"version": 7, "holds": ["db"]})
    Path(store.path).write_text(newer)
    with pytest.raises(StateReadOnlyError, match="format version 7"):
        control.submit(state_dir, control.Request("hold", "web"))
    daemon = StateStore(state_dir)
    assert daemon.try_lock()  # a running daemon: the request is refused before it is queued
    try:
        with pytest.raises(StateReadOnlyError, match="format version 7"):
            control.submit(state_dir, control.Request("release", "db"), wait=0)
    finally:
        daemon.unlock()
    assert Path(store.path).read_text() == newer
    assert not Path(control.requests_dir(state_dir)).exists()


# --- the command line: clear errors, no tracebacks ----------------------------------------------


@pytest.fixture
def config(tmp_path: Path, state_dir: str) -> str:
    guests = tmp_path / "guests"
    guests.mkdir(mode=0o755)
    path = tmp_path / "xenreconcile.yaml"
    path.write_text(
        f"guests_dir: {guests}\nstate_dir: {state_dir}\nxl: {tmp_path / 'no-xl'}\n",
        encoding="utf-8",
    )
    return str(path)


def test_cli_hold_with_a_bad_reason_is_a_usage_error(
    config: str, state_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["-c", config, "hold", "web", "--reason", "two\nlines"]) == 2
    err = capsys.readouterr().err
    assert err == "xenreconcile: hold: reason must be printable text of at most 1024 characters\n"
    assert not os.path.exists(StateStore(state_dir).path)


def test_cli_hold_and_status_on_nan_and_infinity(
    config: str, state_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(state_dir, "state.json").write_text(
        '{"version": 1, "boot_time": NaN, "guests": {"db": {"held": true, '
        '"next_retry": Infinity, "created_at": 1e999, "attempts": -3}}}'
    )
    assert cli.main(["-c", config, "status"]) == 1  # the toolstack (no xl here) is down
    out = capsys.readouterr().out
    assert "db" in out and "held" in out
    assert cli.main(["-c", config, "hold", "web"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "hold web: saved (no daemon running)\n"
    assert "guests.db.next_retry is not a finite number or null: Infinity" in captured.err
    memory, warning = StateStore(state_dir).load()
    assert warning is None
    assert memory.guest("db") == GuestMemory(held=True) and memory.guest("web").held


def test_cli_status_shows_uncertain_guests_without_touching_the_file(
    config: str, state_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "guests" / "web.cfg").write_text('name = "web"\n')
    Path(state_dir, "state.json").write_text('{"version": 1, "guests": {"web": {"held": 0}}}')
    assert cli.main(["-c", config, "status", "--json"]) == 1
    [web] = json.loads(capsys.readouterr().out)["guests"]
    assert web["state"] == "uncertain"
    assert "guests.web.held is not true or false: 0" in web["detail"]
    assert "xenreconcile hold web" in web["detail"] and "release web" in web["detail"]
    assert sorted(os.listdir(state_dir)) == ["state.json"]


def test_cli_refuses_an_unsafe_state_dir_with_a_clear_error(
    config: str, state_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(state_dir, 0o777)
    assert cli.main(["-c", config, "hold", "web"]) == 2
    assert capsys.readouterr().err.startswith(
        f"xenreconcile: state_dir {state_dir} is unsafe: {state_dir} has mode 0777"
    )
    assert cli.main(["-c", config, "check"]) == 2
    assert f"state_dir {state_dir} is unsafe" in capsys.readouterr().out
