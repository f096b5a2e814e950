"""Directory watchers against the real file system (inotify, poll) and a fake kqueue."""

from __future__ import annotations

import importlib
import logging
import os
import select
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from xenreconcile.watch import KINDS, Watcher, WatchUnavailable, make_watcher
from xenreconcile.watch.events import Readout
from xenreconcile.watch.inotify import InotifyWatcher
from xenreconcile.watch.kqueue import KqueueWatcher
from xenreconcile.watch.poll import RACY_WINDOW_NS, PollWatcher, take_snapshot

GENEROUS = 5.0  # a change must be reported well within this
QUIET = 0.5  # long enough for a spurious report to show up

CFG = 'name = "alpha"\nmemory = 512\n'


class LogRecorder:
    """Collects (event, fields) pairs passed to a watcher's `log`."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        self.events.append((event, fields))

    def names(self) -> list[str]:
        return [event for event, _ in self.events]


def drain(watcher: Watcher) -> None:
    """Consume hints left over from the test's setup; fail if they never stop."""
    for _ in range(20):
        if not watcher.wait(QUIET):
            return
    pytest.fail("the watcher keeps reporting changes with nothing happening")


@pytest.fixture
def guests(tmp_path: Path) -> Path:
    directory = tmp_path / "guests"
    directory.mkdir()
    (directory / "alpha.cfg").write_text(CFG)
    return directory


@pytest.fixture(params=["inotify", "poll"])
def watcher(request: pytest.FixtureRequest, guests: Path) -> Iterator[Watcher]:
    w = make_watcher(request.param, str(guests), poll_interval=0.05)
    assert w.name == request.param
    drain(w)
    yield w
    w.close()


# --- behaviour shared by inotify and poll ---------------------------------------------------


def test_no_change_means_false_after_the_timeout(watcher: Watcher) -> None:
    assert watcher.wait(QUIET) is False


def test_new_file_is_reported(watcher: Watcher, guests: Path) -> None:
    (guests / "beta.cfg").write_text(CFG)
    assert watcher.wait(GENEROUS) is True
    assert watcher.wait(QUIET) is False


def test_atomic_rename_into_the_directory_is_reported(
    watcher: Watcher, guests: Path, tmp_path: Path
) -> None:
    staged = tmp_path / "beta.cfg.new"
    staged.write_text(CFG)
    os.rename(staged, guests / "beta.cfg")
    assert watcher.wait(GENEROUS) is True


def test_editor_save_is_one_hint(watcher: Watcher, guests: Path) -> None:
    swap = guests / ".alpha.cfg.swp"
    swap.write_text(CFG + "vcpus = 2\n")
    os.rename(swap, guests / "alpha.cfg")
    assert watcher.wait(GENEROUS) is True
    assert watcher.wait(QUIET) is False


def test_edit_in_place_is_reported(watcher: Watcher, guests: Path) -> None:
    # Same size, same inode: only the content (and perhaps not even mtime) differs.
    with open(guests / "alpha.cfg", "r+") as fh:
        fh.write(CFG.replace("alpha", "gamma"))
    assert watcher.wait(GENEROUS) is True


def test_delete_is_reported(watcher: Watcher, guests: Path) -> None:
    (guests / "alpha.cfg").unlink()
    assert watcher.wait(GENEROUS) is True


def test_chmod_is_reported(watcher: Watcher, guests: Path) -> None:
    os.chmod(guests / "alpha.cfg", 0o666)
    assert watcher.wait(GENEROUS) is True


def test_chmod_of_the_directory_is_reported(watcher: Watcher, guests: Path) -> None:
    os.chmod(guests, 0o777)
    assert watcher.wait(GENEROUS) is True


def test_symlink_created_is_reported(watcher: Watcher, guests: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.cfg"
    target.write_text(CFG)
    os.symlink(target, guests / "linked.cfg")
    assert watcher.wait(GENEROUS) is True


def test_burst_of_writes_coalesces(watcher: Watcher, guests: Path) -> None:
    for i in range(50):
        (guests / f"guest{i}.cfg").write_text(f'name = "guest{i}"\n')
    assert watcher.wait(GENEROUS) is True
    assert watcher.wait(QUIET) is False


def test_replaced_directory_is_reported_and_still_watched(watcher: Watcher, guests: Path) -> None:
    shutil.rmtree(guests)
    guests.mkdir()
    assert watcher.wait(GENEROUS) is True
    drain(watcher)
    (guests / "beta.cfg").write_text(CFG)
    assert watcher.wait(GENEROUS) is True


def test_directory_moved_away_follows_the_path(
    watcher: Watcher, guests: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "guests.old"
    os.rename(guests, moved)
    guests.mkdir()
    assert watcher.wait(GENEROUS) is True
    drain(watcher)
    (moved / "beta.cfg").write_text(CFG)
    assert watcher.wait(QUIET) is False
    (guests / "beta.cfg").write_text(CFG)
    assert watcher.wait(GENEROUS) is True


def test_removed_directory_is_reported_then_waited_for(watcher: Watcher, guests: Path) -> None:
    shutil.rmtree(guests)
    assert watcher.wait(GENEROUS) is True
    assert watcher.wait(QUIET) is False
    guests.mkdir()
    assert watcher.wait(GENEROUS) is True
    drain(watcher)
    (guests / "beta.cfg").write_text(CFG)
    assert watcher.wait(GENEROUS) is True


@pytest.mark.parametrize("kind", ["inotify", "poll"])
def test_directory_missing_at_start_is_watched_once_it_appears(tmp_path: Path, kind: str) -> None:
    directory = tmp_path / "later"
    log = LogRecorder()
    w = make_watcher(kind, str(directory), poll_interval=0.05, log=log)
    try:
        assert w.wait(QUIET) is False
        directory.mkdir()
        assert w.wait(GENEROUS) is True
        drain(w)
        (directory / "alpha.cfg").write_text(CFG)
        assert w.wait(GENEROUS) is True
    finally:
        w.close()
    if kind == "inotify":
        assert log.names()[0] == "watch_dir_missing"


def test_close_wakes_a_blocked_wait(watcher: Watcher) -> None:
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(watcher.wait(60)))
    waiter.start()
    watcher.close()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert results == [False]


def test_wait_after_close_is_false(watcher: Watcher, guests: Path) -> None:
    watcher.close()
    (guests / "beta.cfg").write_text(CFG)
    assert watcher.wait(QUIET) is False
    watcher.close()  # closing twice is harmless


# --- inotify specifics ------------------------------------------------------------------------


def test_inotify_reports_a_continuous_stream_without_waiting_for_it_to_end(guests: Path) -> None:
    w = make_watcher("inotify", str(guests))
    stop = threading.Event()

    def keep_writing() -> None:
        i = 0
        # Writes far longer than the 1 s bound unless told to stop.
        while not stop.wait(0.02) and i < 1000:
            (guests / f"stream{i % 5}.cfg").write_text(str(i))
            i += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        assert w.wait(60) is True
        assert writer.is_alive(), "wait only returned once the stream of events ended"
    finally:
        stop.set()
        writer.join()
        w.close()


def test_inotify_queue_overflow_means_rescan(guests: Path) -> None:
    pyinotify = pytest.importorskip("pyinotify")
    queue_limit = pyinotify.max_queued_events.value
    if queue_limit > 100_000:
        pytest.skip(f"fs.inotify.max_queued_events is {queue_limit}: too slow to overflow")
    log = LogRecorder()
    w = InotifyWatcher(str(guests), log=log)
    try:
        # Three distinct events per round (create, close-write, delete), none read yet.
        for _ in range(queue_limit // 3 + 100):
            (guests / "churn.cfg").touch()
            (guests / "churn.cfg").unlink()
        assert w.wait(GENEROUS) is True
        assert "watch_overflow" in log.names()
    finally:
        w.close()


class RecordList(logging.Handler):
    """Keeps every log record it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_inotify_keeps_pyinotify_bookkeeping_out_of_the_logs(guests: Path, tmp_path: Path) -> None:
    # pyinotify reports a watched directory moved away, and the events of a watch
    # already removed, on stderr; the watcher logs watch_lost itself.
    pytest.importorskip("pyinotify")
    handler = RecordList()
    logging.getLogger("pyinotify").addHandler(handler)
    w = make_watcher("inotify", str(guests), poll_interval=0.05)
    try:
        os.rename(guests, tmp_path / "guests.old")
        guests.mkdir()
        assert w.wait(GENEROUS) is True
        drain(w)
    finally:
        w.close()
        logging.getLogger("pyinotify").removeHandler(handler)
    assert handler.records == []


@pytest.mark.parametrize("kind", ["inotify", "poll"])
def test_file_name_that_is_not_utf8_is_a_change_like_any_other(guests: Path, kind: str) -> None:
    log = LogRecorder()
    w = make_watcher(kind, str(guests), poll_interval=0.05, log=log)
    try:
        drain(w)
        try:
            name = os.path.join(os.fsencode(guests), b"caf\xe9.cfg")
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY))
        except OSError as err:
            pytest.skip(f"this file system refuses names that are not UTF-8: {err}")
        assert w.wait(GENEROUS) is True
        drain(w)
        (guests / "beta.cfg").write_text(CFG)
        assert w.wait(GENEROUS) is True
    finally:
        w.close()
    assert not {"watch_error", "watch_lost"} & set(log.names())


def test_inotify_batch_cut_short_by_a_bad_name_still_notices_the_directory_moving(
    guests: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pyinotify")
    w = InotifyWatcher(str(guests))
    try:
        try:
            os.close(os.open(os.path.join(os.fsencode(guests), b"caf\xe9.cfg"), os.O_CREAT))
        except OSError as err:
            pytest.skip(f"this file system refuses names that are not UTF-8: {err}")
        os.rename(guests, tmp_path / "guests.old")  # its IN_MOVE_SELF follows the bad name
        guests.mkdir()
        assert w._read(GENEROUS) == Readout(changed=True, lost=True)
    finally:
        w.close()


# --- choosing a watcher -----------------------------------------------------------------------


def test_auto_picks_inotify_on_linux(guests: Path) -> None:
    pytest.importorskip("pyinotify")
    if not sys.platform.startswith("linux"):
        pytest.skip("inotify is Linux only")
    w = make_watcher("auto", str(guests))
    try:
        assert w.name == "inotify"
    finally:
        w.close()


def test_auto_falls_back_to_poll_when_pyinotify_does_not_import(
    guests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyinotify", None)
    log = LogRecorder()
    w = make_watcher("auto", str(guests), log=log)
    try:
        assert w.name == ("kqueue" if hasattr(select, "kqueue") else "poll")
        unavailable = [fields for event, fields in log.events if event == "watch_unavailable"]
        assert unavailable[0]["kind"] == "inotify"
    finally:
        w.close()


def test_auto_falls_back_when_asyncore_is_missing(
    guests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python >= 3.12 without the pyasyncore shim: pyinotify's own import fails.
    monkeypatch.delitem(sys.modules, "pyinotify", raising=False)
    monkeypatch.setitem(sys.modules, "asyncore", None)
    w = make_watcher("auto", str(guests))
    try:
        assert w.name != "inotify"
    finally:
        w.close()


def test_auto_falls_back_when_inotify_cannot_be_initialised(
    guests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyinotify = pytest.importorskip("pyinotify")

    def refuse() -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(pyinotify, "WatchManager", refuse)
    w = make_watcher("auto", str(guests))
    try:
        assert w.name != "inotify"
    finally:
        w.close()


def test_explicit_inotify_that_cannot_import_raises(
    guests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyinotify", None)
    with pytest.raises(WatchUnavailable, match="pyinotify"):
        make_watcher("inotify", str(guests))


@pytest.mark.skipif(hasattr(select, "kqueue"), reason="this platform has kqueue")
def test_explicit_kqueue_without_kqueue_raises(guests: Path) -> None:
    with pytest.raises(WatchUnavailable, match="kqueue"):
        make_watcher("kqueue", str(guests))


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_the_name_of_its_module_and_watcher(kind: str) -> None:
    module = importlib.import_module(f"xenreconcile.watch.{kind}")
    assert module.WATCHER.name == kind


def test_unknown_kind_is_a_value_error(guests: Path) -> None:
    with pytest.raises(ValueError, match="fanotify"):
        make_watcher("fanotify", str(guests))


# --- poll snapshot ----------------------------------------------------------------------------


def test_snapshot_only_fingerprints_guest_cfgs(guests: Path) -> None:
    (guests / "x.cfg~").write_text(CFG)
    (guests / ".hidden.cfg").write_text(CFG)
    (guests / "sub").mkdir()
    assert set(take_snapshot(str(guests)).entries) == {"alpha.cfg"}


def test_snapshot_keys_a_dangling_symlink_by_the_link(guests: Path) -> None:
    os.symlink(guests / "nowhere", guests / "dangling.cfg")
    assert take_snapshot(str(guests)).entries["dangling.cfg"] is not None


def test_file_leaving_the_racy_window_is_not_a_change(guests: Path) -> None:
    path = guests / "alpha.cfg"
    mtime_ns = path.stat().st_mtime_ns
    fresh = take_snapshot(str(guests), now_ns=mtime_ns)
    later = take_snapshot(str(guests), now_ns=mtime_ns + 10 * RACY_WINDOW_NS)
    assert "alpha.cfg" in fresh.digests
    assert "alpha.cfg" not in later.digests
    assert not later.differs_from(fresh)


def test_racy_content_change_is_a_change(guests: Path) -> None:
    path = guests / "alpha.cfg"
    before = take_snapshot(str(guests), now_ns=path.stat().st_mtime_ns)
    stat_before = path.stat()
    path.write_text(CFG.replace("alpha", "gamma"))
    # Pretend the file system's clock did not tick: same timestamps as before.
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    after = take_snapshot(str(guests), now_ns=stat_before.st_mtime_ns)
    assert after.digests["alpha.cfg"] != before.digests["alpha.cfg"]
    assert after.differs_from(before)


def test_poll_unreadable_directory_does_not_raise(tmp_path: Path) -> None:
    w = PollWatcher(str(tmp_path / "missing"), poll_interval=0.05)
    try:
        assert w.wait(QUIET) is False
    finally:
        w.close()


# --- kqueue with a fake kernel ----------------------------------------------------------------


@dataclass(frozen=True)
class FakeKevent:
    ident: int
    filter: int = 0
    flags: int = 0
    fflags: int = 0


class FakeKqueue:
    """Returns queued events; otherwise blocks on the registered read filters (the
    watcher's waker pipe) like a kqueue would."""

    def __init__(self, api: SimpleNamespace) -> None:
        self.api = api
        self.changes: list[FakeKevent] = []
        self.pending: list[FakeKevent] = []
        self.closed = False

    def control(self, changelist: list[FakeKevent] | None, max_events: int, timeout: float) -> Any:
        self.changes.extend(changelist or [])
        if max_events == 0:
            return []
        if self.pending:
            events, self.pending = self.pending[:max_events], self.pending[max_events:]
            return events
        poller = select.poll()
        readers = [c.ident for c in self.changes if c.filter == self.api.KQ_FILTER_READ]
        for fd in readers:
            poller.register(fd, select.POLLIN)
        ready = poller.poll(int(timeout * 1000))
        return [FakeKevent(fd, filter=self.api.KQ_FILTER_READ) for fd, _ in ready]

    def close(self) -> None:
        self.closed = True

    def vnode_registrations(self) -> list[FakeKevent]:
        return [c for c in self.changes if c.filter == self.api.KQ_FILTER_VNODE]


@pytest.fixture
def kq_api() -> SimpleNamespace:
    # Values from FreeBSD's <sys/event.h>.
    api = SimpleNamespace(
        KQ_FILTER_READ=-1,
        KQ_FILTER_VNODE=-4,
        KQ_EV_ADD=0x1,
        KQ_EV_CLEAR=0x20,
        KQ_EV_ERROR=0x4000,
        KQ_NOTE_DELETE=0x1,
        KQ_NOTE_WRITE=0x2,
        KQ_NOTE_EXTEND=0x4,
        KQ_NOTE_ATTRIB=0x8,
        KQ_NOTE_LINK=0x10,
        KQ_NOTE_RENAME=0x20,
        KQ_NOTE_REVOKE=0x40,
        kevent=FakeKevent,
    )
    api.instances = []

    def new_kqueue() -> FakeKqueue:
        kq = FakeKqueue(api)
        api.instances.append(kq)
        return kq

    api.kqueue = new_kqueue
    return api


def test_kqueue_registers_the_directory_vnode(guests: Path, kq_api: SimpleNamespace) -> None:
    w = KqueueWatcher(str(guests), kqueue_api=kq_api)
    kq = kq_api.instances[0]
    try:
        [reg] = kq.vnode_registrations()
        assert os.fstat(reg.ident).st_ino == guests.stat().st_ino
        assert reg.flags & kq_api.KQ_EV_CLEAR
        wanted = kq_api.KQ_NOTE_WRITE | kq_api.KQ_NOTE_DELETE | kq_api.KQ_NOTE_RENAME
        assert reg.fflags & wanted == wanted
    finally:
        w.close()
    assert kq.closed


def test_kqueue_write_event_is_a_change(guests: Path, kq_api: SimpleNamespace) -> None:
    w = KqueueWatcher(str(guests), kqueue_api=kq_api)
    kq = kq_api.instances[0]
    try:
        assert w.wait(QUIET) is False
        [reg] = kq.vnode_registrations()
        kq.pending.append(FakeKevent(reg.ident, kq_api.KQ_FILTER_VNODE, 0, kq_api.KQ_NOTE_WRITE))
        assert w.wait(GENEROUS) is True
        assert w.wait(QUIET) is False
    finally:
        w.close()


def test_kqueue_reopens_the_directory_after_a_revoke(guests: Path, kq_api: SimpleNamespace) -> None:
    w = KqueueWatcher(str(guests), kqueue_api=kq_api)
    kq = kq_api.instances[0]
    try:
        [old] = kq.vnode_registrations()
        kq.pending.append(FakeKevent(old.ident, kq_api.KQ_FILTER_VNODE, 0, kq_api.KQ_NOTE_REVOKE))
        assert w.wait(GENEROUS) is True
        assert len(kq.vnode_registrations()) == 2
        new = kq.vnode_registrations()[-1]
        assert os.fstat(new.ident).st_ino == guests.stat().st_ino
        assert w.wait(QUIET) is False
    finally:
        w.close()


def test_kqueue_notices_a_replaced_directory_without_an_event(
    guests: Path, kq_api: SimpleNamespace
) -> None:
    w = KqueueWatcher(str(guests), kqueue_api=kq_api)
    kq = kq_api.instances[0]
    try:
        os.rename(guests, guests.with_name("old"))
        guests.mkdir()
        assert w.wait(GENEROUS) is True
        assert len(kq.vnode_registrations()) == 2
    finally:
        w.close()


def test_kqueue_waits_for_a_missing_directory(tmp_path: Path, kq_api: SimpleNamespace) -> None:
    directory = tmp_path / "later"
    w = KqueueWatcher(str(directory), poll_interval=0.05, kqueue_api=kq_api)
    kq = kq_api.instances[0]
    try:
        assert w.wait(QUIET) is False
        assert kq.vnode_registrations() == []
        directory.mkdir()
        assert w.wait(GENEROUS) is True
        assert len(kq.vnode_registrations()) == 1
    finally:
        w.close()


def test_kqueue_close_wakes_a_blocked_wait(guests: Path, kq_api: SimpleNamespace) -> None:
    w = KqueueWatcher(str(guests), kqueue_api=kq_api)
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(w.wait(60)))
    waiter.start()
    w.close()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert results == [False]
