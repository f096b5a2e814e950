"""state.json round trips, atomic writes, corrupt files, the daemon lock."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenreconcile.models import GuestMemory, Memory
from xenreconcile.state import (
    StateLockedError,
    StateStore,
    decode_memory,
    encode_memory,
)

SAMPLE = Memory(
    guests={
        "web": GuestMemory(attempts=2, next_retry=1700000100.5, last_error="xl create exited 1"),
        "db": GuestMemory(held=True, hold_reason="maintenance", seen_running=True),
        "idle": GuestMemory(),
    },
    last_create_at=1700000000.25,
    boot_time=1699990000.0,
)


def store_in(tmp_path: Path) -> StateStore:
    return StateStore(str(tmp_path / "state"))


def test_missing_file_gives_empty_memory(tmp_path: Path) -> None:
    assert store_in(tmp_path).load() == (Memory(), None)


def test_round_trip(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    assert store.save(SAMPLE) is True
    assert store_in(tmp_path).load() == (SAMPLE, None)


def test_save_creates_state_dir_private(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.save(SAMPLE)
    assert stat.S_IMODE(os.stat(store.state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_file_holds_only_non_default_fields_sorted(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.save(SAMPLE)
    text = Path(store.path).read_text()
    document = json.loads(text)
    assert document == {
        "version": 1,
        "boot_time": 1699990000.0,
        "last_create_at": 1700000000.25,
        "guests": {
            "db": {"held": True, "hold_reason": "maintenance", "seen_running": True},
            "idle": {},
            "web": {
                "attempts": 2,
                "last_error": "xl create exited 1",
                "next_retry": 1700000100.5,
            },
        },
    }
    assert text == json.dumps(document, sort_keys=True, indent=2) + "\n"


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.save(SAMPLE)
    store.save(Memory(boot_time=1.0))
    assert sorted(os.listdir(store.state_dir)) == ["state.json"]


def test_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_in(tmp_path)
    store.save(SAMPLE)

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        store.save(Memory(boot_time=2.0))
    monkeypatch.undo()
    assert sorted(os.listdir(store.state_dir)) == ["state.json"]
    assert store_in(tmp_path).load() == (SAMPLE, None)
    assert store.save(Memory(boot_time=2.0)) is True  # tried again, not skipped


def test_unchanged_save_does_not_write(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    assert store.save(SAMPLE) is True
    before = os.stat(store.path).st_ino
    assert store.save(SAMPLE) is False
    assert os.stat(store.path).st_ino == before


def test_save_after_load_of_same_content_does_not_write(tmp_path: Path) -> None:
    store_in(tmp_path).save(SAMPLE)
    store = store_in(tmp_path)
    memory, _ = store.load()
    assert store.save(memory) is False
    assert store.save(Memory()) is True


def test_save_to_unusable_dir_raises(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    store = StateStore(str(tmp_path / "file" / "state"))
    with pytest.raises(OSError):
        store.save(SAMPLE)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "top level is not an object"),
        (b'{"guests": {}}', "bad version"),
        (b'{"version": "1"}', "bad version"),
        (b'{"version": 1, "guests": []}', "guests is not an object"),
        (b'{"version": 1, "guests": {"web": 5}}', "'web' is not an object"),
        (b'{"version": 1, "guests": {"web": {"attempts": "2"}}}', "web.attempts"),
        (b'{"version": 1, "guests": {"web": {"held": 1}}}', "web.held"),
        (b'{"version": 1, "guests": {"web": {"attempts": true}}}', "web.attempts"),
        (b'{"version": 1, "boot_time": "yesterday"}', "boot_time"),
    ],
)
def test_corrupt_file_is_moved_aside(tmp_path: Path, content: bytes, reason: str) -> None:
    store = store_in(tmp_path)
    os.makedirs(store.state_dir)
    Path(store.path).write_bytes(content)
    memory, warning = store.load()
    assert memory == Memory()
    assert warning is not None
    assert reason in warning
    aside = [name for name in os.listdir(store.state_dir) if name.startswith("state.json.")]
    assert len(aside) == 1
    assert aside[0].startswith("state.json.corrupt-")
    assert aside[0] in warning
    assert Path(store.state_dir, aside[0]).read_bytes() == content
    assert not os.path.exists(store.path)


def test_second_corrupt_file_does_not_overwrite_the_first(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.makedirs(store.state_dir)
    for content in (b"one", b"two"):
        Path(store.path).write_bytes(content)
        store.load()
    kept = sorted(
        Path(store.state_dir, name).read_bytes()
        for name in os.listdir(store.state_dir)
        if name.startswith("state.json.corrupt-")
    )
    assert kept == [b"one", b"two"]


def test_corrupt_file_is_replaced_by_the_next_save(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.makedirs(store.state_dir)
    Path(store.path).write_text("{}")
    memory, _warning = store.load()
    assert store.save(memory) is True
    assert store_in(tmp_path).load() == (Memory(), None)


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.makedirs(store.state_dir)
    Path(store.path).write_text(
        json.dumps(
            {
                "version": 2,
                "future": {"x": 1},
                "boot_time": 5,
                "guests": {"web": {"attempts": 1, "colour": "blue"}},
            }
        )
    )
    assert store.load() == (Memory(guests={"web": GuestMemory(attempts=1)}, boot_time=5.0), None)


def test_unreadable_file_raises_and_stays(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.makedirs(store.path)  # a directory where the file should be
    with pytest.raises(OSError):
        store.load()
    assert os.path.isdir(store.path)


# --- hypothesis round trip --------------------------------------------------------------------

times = st.none() | st.floats(allow_nan=False, allow_infinity=False)
texts = st.none() | st.text()
guest_memories = st.builds(
    GuestMemory,
    attempts=st.integers(min_value=0, max_value=10**9),
    next_retry=times,
    last_error=texts,
    held=st.booleans(),
    hold_reason=texts,
    migrated=st.booleans(),
    migrating_away=st.booleans(),
    cfg_hash=texts,
    created_hash=texts,
    created_at=times,
    seen_running=st.booleans(),
    missing_since=times,
)
memories = st.builds(
    Memory,
    guests=st.dictionaries(st.text(min_size=1), guest_memories, max_size=5),
    last_create_at=times,
    boot_time=times,
)


@given(memories)
@settings(max_examples=200)
def test_encoding_round_trips(memory: Memory) -> None:
    text = encode_memory(memory)
    assert decode_memory(text.encode()) == memory
    assert encode_memory(decode_memory(text.encode())) == text


@given(memories)
@settings(max_examples=25, deadline=None)
def test_store_round_trips(tmp_path_factory: pytest.TempPathFactory, memory: Memory) -> None:
    state_dir = tmp_path_factory.mktemp("state")
    StateStore(str(state_dir)).save(memory)
    assert StateStore(str(state_dir)).load() == (memory, None)


# --- the daemon lock --------------------------------------------------------------------------


def test_lock_is_exclusive(tmp_path: Path) -> None:
    daemon, other = store_in(tmp_path), store_in(tmp_path)
    assert other.daemon_running() is False
    assert daemon.try_lock() is True
    assert other.try_lock() is False
    assert other.daemon_running() is True
    assert other.lock_holder() == os.getpid()
    daemon.unlock()
    assert other.daemon_running() is False
    assert other.lock_holder() is None
    assert other.try_lock() is True
    other.unlock()


def test_lock_context_manager_refuses_a_second_holder(tmp_path: Path) -> None:
    with store_in(tmp_path).lock() as held:
        assert held.locked_by_us
        second = store_in(tmp_path)
        with pytest.raises(StateLockedError, match=f"pid {os.getpid()}"), second.lock():
            pass
    assert store_in(tmp_path).daemon_running() is False


def test_lock_held_by_another_process_is_seen(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    script = textwrap.dedent(
        f"""
        import sys
        from xenreconcile.state import StateStore
        store = StateStore({state_dir!r})
        assert store.try_lock()
        print("locked", flush=True)
        sys.stdin.readline()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"
        store = StateStore(state_dir)
        assert store.daemon_running() is True
        assert store.lock_holder() == child.pid
        assert store.try_lock() is False
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
    assert StateStore(state_dir).daemon_running() is False
