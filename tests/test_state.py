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
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from xenreconcile.models import GuestMemory, Memory
from xenreconcile.state import (
    Decoded,
    StateDirError,
    StateLockedError,
    StateReadOnlyError,
    StateStore,
    UnsafeFileError,
    decode_memory,
    decode_state,
    encode_memory,
    write_atomically,
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
    assert sorted(os.listdir(store.state_dir)) == ["state.json", "state.json.prev"]


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
    assert sorted(os.listdir(store.state_dir)) == ["state.json", "state.json.prev"]
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
        (b'{"version": 1, "guests": {"web": 5}}', "guests.web is not an object"),
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
    _memory, warning = store.load()
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


@freeze_time("2026-03-01 04:05:06", tz_offset=-7)
def test_corrupt_files_are_named_by_the_utc_second_and_numbered_within_it(tmp_path: Path) -> None:
    # The wall clock stands still: both damaged files are moved aside in the same
    # second, and the local time zone (UTC-7 here) must not show in the name.
    store = store_in(tmp_path)
    os.makedirs(store.state_dir)
    for content in (b"one", b"two"):
        Path(store.path).write_bytes(content)
        store.load()
    stamp = "state.json.corrupt-20260301T040506Z"
    aside = {name: Path(store.state_dir, name).read_bytes() for name in os.listdir(store.state_dir)}
    assert aside == {stamp: b"one", f"{stamp}.2": b"two"}


def test_corrupt_file_is_replaced_by_the_next_save(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.makedirs(store.state_dir)
    Path(store.path).write_text("{}")
    memory, _warning = store.load()
    assert store.save(memory) is True
    assert store_in(tmp_path).load() == (memory, None)


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.makedirs(store.state_dir)
    Path(store.path).write_text(
        json.dumps(
            {
                "version": 1,
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


# --- damaged files fail closed (finding 5) ----------------------------------------------------


def write_state(store: StateStore, document: object) -> None:
    os.makedirs(store.state_dir, mode=0o700, exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    Path(store.path).write_text(text)


def test_a_bad_field_loses_only_itself(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    write_state(
        store,
        {
            "version": 1,
            "boot_time": "yesterday",
            "guests": {
                "web": {"attempts": "2", "held": True, "hold_reason": "disk"},
                "db": {"held": True, "hold_reason": 5},
            },
        },
    )
    memory, warning = store.load()
    assert memory == Memory(
        guests={"web": GuestMemory(held=True, hold_reason="disk"), "db": GuestMemory(held=True)}
    )
    assert warning is not None
    assert "guests.web.attempts" in warning and "guests.db.hold_reason" in warning
    assert "boot_time" in warning and "no hold or migrated mark was lost" in warning


@pytest.mark.parametrize("field", ["held", "migrated", "migrating_away", "uncertain"])
def test_a_damaged_hold_or_mark_makes_that_guest_uncertain(tmp_path: Path, field: str) -> None:
    store = store_in(tmp_path)
    write_state(
        store,
        {"version": 1, "guests": {"web": {field: [1]}, "db": {"held": True, "hold_reason": "x"}}},
    )
    memory, warning = store.load()
    web = memory.guest("web")
    assert web.uncertain is not None and f"guests.web.{field}" in web.uncertain
    assert memory.guest("db") == GuestMemory(held=True, hold_reason="x")
    assert memory.uncertain is None
    assert memory.guest("other").uncertain is None
    assert warning is not None and "uncertain: web" in warning


def test_a_guest_entry_that_is_not_an_object_makes_it_uncertain(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    write_state(store, {"version": 1, "guests": {"web": 5, "db": {"held": True}}})
    memory, _warning = store.load()
    assert memory.guest("web").uncertain == "guests.web is not an object: 5"
    assert memory.guest("db") == GuestMemory(held=True)


@pytest.mark.parametrize(
    "guests",
    ['"guests": []', '"guests": {"\\ud800": {}}', '"guests": {"": {"held": true}}'],
)
def test_unreadable_guest_entries_make_every_name_uncertain(tmp_path: Path, guests: str) -> None:
    store = store_in(tmp_path)
    write_state(store, '{"version": 1, "boot_time": 5, ' + guests + "}")
    memory, warning = store.load()
    assert memory.uncertain is not None
    assert memory.guest("anyone").uncertain == memory.uncertain
    assert memory.boot_time == 5.0
    assert warning is not None and "every guest is uncertain" in warning


def test_an_unreadable_file_falls_back_to_the_last_good_copy(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.save(SAMPLE)
    Path(store.path).write_text('{"version": 1, "guests": {"db": {"held": tru')
    memory, warning = store_in(tmp_path).load()
    assert warning is not None
    assert "not JSON" in warning and f"recovered the last good copy {store.prev_path}" in warning
    assert memory.boot_time == SAMPLE.boot_time
    assert memory.guest("db").held and memory.guest("db").hold_reason == "maintenance"
    assert memory.guest("web").attempts == 2
    # The damaged file may have held more than its last good copy: every name is in doubt.
    assert memory.uncertain is not None and "not JSON" in memory.uncertain
    assert all(gm.uncertain == memory.uncertain for gm in memory.guests.values())
    assert memory.guest("never-seen").uncertain == memory.uncertain


def test_an_unreadable_file_without_a_good_copy_doubts_every_name(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    write_state(store, "{not json")
    memory, warning = store.load()
    assert memory.guests == {}
    assert memory.uncertain is not None
    assert warning is not None and "no usable last good copy" in warning


def test_a_missing_file_with_a_last_good_copy_left_is_damage(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.save(SAMPLE)
    os.unlink(store.path)
    memory, warning = store_in(tmp_path).load()
    assert warning is not None and "state.json is missing but state.json.prev is there" in warning
    assert memory.guest("db").held and memory.uncertain is not None


def test_a_damaged_last_good_copy_is_not_used(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.save(SAMPLE)
    Path(store.path).write_text("{not json")
    Path(store.prev_path).write_text("[]")
    memory, warning = store_in(tmp_path).load()
    assert memory.guests == {} and memory.uncertain is not None
    assert warning is not None and "no usable last good copy" in warning


def test_doubts_are_saved_and_survive_a_restart(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    write_state(store, {"version": 1, "guests": {"web": {"held": "yes"}}})
    memory, _warning = store.load()
    assert store.save(memory) is True
    again, warning = store_in(tmp_path).load()
    assert warning is None
    assert again == memory and again.guest("web").uncertain is not None


def test_without_repair_nothing_on_disk_changes(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    write_state(store, "{not json")
    memory, warning = store.load(repair=False)
    assert memory.uncertain is not None and warning is not None
    assert os.listdir(store.state_dir) == ["state.json"]


def test_a_newer_format_is_read_only_and_never_rewritten(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    newer = json.dumps({"version": 2, "guests": {"db": {"held": True}}})
    write_state(store, newer)
    memory, warning = store.load()
    assert warning is not None and "format version 2" in warning
    assert store.read_only == warning
    assert memory == Memory(uncertain=warning)  # nothing of an unknown format is trusted
    with pytest.raises(StateReadOnlyError, match="left untouched"):
        store.save(Memory())
    assert Path(store.path).read_text() == newer
    assert os.listdir(store.state_dir) == ["state.json"]


# --- values that JSON allows and the daemon cannot use (finding 6) ------------------------------


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("next_retry", "NaN"),
        ("next_retry", "Infinity"),
        ("created_at", "-Infinity"),
        ("missing_since", "1e999"),
        ("next_retry", "1" * 5000),
        ("attempts", "-1"),
        ("attempts", "1" * 30),
        ("attempts", str(10**9 + 1)),
        ("attempts", "2.5"),
    ],
)
def test_numbers_the_daemon_cannot_use_are_damaged_fields(
    tmp_path: Path, field: str, literal: str
) -> None:
    store = store_in(tmp_path)
    write_state(
        store,
        '{"version": 1, "guests": {"web": {"held": true, "hold_reason": "restore", '
        f'"{field}": {literal}}}}}}}',
    )
    memory, warning = store.load()
    assert memory.guest("web") == GuestMemory(held=True, hold_reason="restore")
    assert warning is not None and f"guests.web.{field}" in warning
    assert store.save(memory) is True  # no ValueError from the encoder
    assert store_in(tmp_path).load() == (memory, None)


@pytest.mark.parametrize("literal", ["NaN", "1e999", "-Infinity"])
def test_top_level_numbers_the_daemon_cannot_use(tmp_path: Path, literal: str) -> None:
    store = store_in(tmp_path)
    write_state(store, f'{{"version": 1, "boot_time": {literal}, "last_create_at": {literal}}}')
    memory, warning = store.load()
    assert memory == Memory()
    assert warning is not None and "boot_time is not a finite number or null" in warning
    assert store.save(memory) is True


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.integers(min_value=10**18, max_value=10**60),  # NaN and infinities come from floats()
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from([*GuestMemory.__dataclass_fields__, "web", "x"]), children, max_size=4
        )
    ),
    max_leaves=6,
)


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.dictionaries(st.text(max_size=12), json_values, max_size=4),
        max_size=3,
    ),
    json_values,
    json_values,
)
@settings(max_examples=100, deadline=None)
def test_any_json_decodes_to_a_memory_that_can_be_saved(
    guests: dict[str, object], boot_time: object, uncertain: object
) -> None:
    text = json.dumps(
        {"version": 1, "guests": guests, "boot_time": boot_time, "uncertain": uncertain}
    )
    found = decode_state(text.encode())
    encoded = encode_memory(found.memory)  # raises on NaN, inf or an unencodable string
    assert decode_state(encoded.encode()) == Decoded(found.memory)


# --- state_dir and the files in it (finding 9) -------------------------------------------------

NOBODY = 65534


def test_a_missing_state_dir_is_created_0700_by_the_lock(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    assert store.try_lock()
    store.unlock()
    assert stat.S_IMODE(os.stat(store.state_dir).st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777])
def test_a_state_dir_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    store = store_in(tmp_path)
    os.mkdir(store.state_dir)
    os.chmod(store.state_dir, mode)
    message = f"state_dir {store.state_dir} is unsafe: {store.state_dir} has mode {mode:04o}"
    for operation in (store.try_lock, store.load, lambda: store.save(SAMPLE)):
        with pytest.raises(StateDirError) as caught:
            operation()
        assert str(caught.value).startswith(message)
    assert os.listdir(store.state_dir) == []


def test_a_state_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.mkdir(store.state_dir, 0o700)
    os.chown(store.state_dir, NOBODY, NOBODY)
    with pytest.raises(StateDirError, match=f"{store.state_dir} is owned by uid {NOBODY}"):
        store.try_lock()


def test_a_state_dir_inside_a_user_owned_dir_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chown(home, NOBODY, NOBODY)
    store = StateStore(str(home / "state"))
    with pytest.raises(StateDirError, match=f"{home} is owned by uid {NOBODY}"):
        store.save(SAMPLE)
    assert not (home / "state").exists()


def test_a_symlink_through_a_user_owned_dir_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (home / "link").symlink_to(real)
    os.chown(home, NOBODY, NOBODY)
    with pytest.raises(StateDirError, match=f"{home} is owned by uid {NOBODY}"):
        StateStore(str(home / "link")).try_lock()


def test_a_user_owned_symlink_on_the_way_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(StateDirError, match=f"symlink {link} owned by uid {NOBODY}"):
        StateStore(str(link)).try_lock()


def test_a_root_owned_sticky_ancestor_and_a_safe_symlink_are_accepted(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    real = shared / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    store = StateStore(str(tmp_path / "link"))
    assert store.save(SAMPLE) is True
    assert store.load() == (SAMPLE, None)


def test_a_planted_lock_symlink_is_not_followed(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.mkdir(store.state_dir, 0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, store.lock_path)
    with pytest.raises(UnsafeFileError, match="lock: is a symlink"):
        store.try_lock()
    assert victim.read_text() == "precious\n"
    assert store.lock_holder() is None and store.daemon_running() is False


def test_a_planted_lock_hard_link_is_not_truncated(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.mkdir(store.state_dir, 0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.link(victim, store.lock_path)
    with pytest.raises(UnsafeFileError, match="has other hard links"):
        store.try_lock()
    assert victim.read_text() == "precious\n"


def test_a_state_file_symlink_is_not_followed(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.mkdir(store.state_dir, 0o700)
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps({"version": 1, "guests": {}}))
    os.symlink(planted, store.path)
    memory, warning = store.load()
    assert warning is not None and "state.json is a symlink" in warning
    assert memory.uncertain is not None  # what the real file held is unknown
    assert not os.path.lexists(store.path)
    assert planted.exists()


def test_a_state_file_owned_by_another_user_is_not_trusted(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    write_state(store, {"version": 1, "guests": {}})
    os.chown(store.path, NOBODY, NOBODY)
    memory, warning = store.load()
    assert warning is not None and f"owned by uid {NOBODY}" in warning
    assert memory.uncertain is not None


def test_temp_files_have_unique_names_and_stale_ones_are_removed(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    os.mkdir(store.state_dir, 0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for fixed in ("state.json.tmp", "status.json.tmp", ".state.json.tmp", ".status.json.tmp"):
        os.symlink(victim, os.path.join(store.state_dir, fixed))
    (Path(store.state_dir) / ".status.json.abc.tmp").write_text("left by a kill -9")
    assert store.try_lock()
    write_atomically(store.state_dir, "status.json", "{}", durable=False)
    store.save(SAMPLE)
    store.unlock()
    assert victim.read_text() == "precious\n"
    assert not (Path(store.state_dir) / ".status.json.abc.tmp").exists()
    assert (Path(store.state_dir) / "status.json").read_text() == "{}"


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
    uncertain=texts,
)
memories = st.builds(
    Memory,
    guests=st.dictionaries(st.text(min_size=1), guest_memories, max_size=5),
    last_create_at=times,
    boot_time=times,
    uncertain=texts,
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
