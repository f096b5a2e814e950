"""What keeps a guest from being created around a host's shutdown and boot: the
planner's `withheld` input, the stand-down mark, and the save images' fates."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.test_planner import desired, dom, listing, mem, settings
from xenreconcile import bootgate, planner, standdown
from xenreconcile.config import Config
from xenreconcile.models import GuestPhase
from xenreconcile.saves import DUE, LATER, STALE, UNRECORDED, SaveStore
from xenreconcile.state import Boot

BOOT1 = Boot("boot-1", 1000.0, 500.0)
BOOT2 = Boot("boot-2", 2000.0, 30.0)


def test_a_withheld_guest_waits_with_its_reason_and_blocks_higher_orders() -> None:
    ordered = settings(orders={"db": 10, "web": 50})
    plan = planner.plan(
        desired("db", "web"),
        listing(),
        mem(),
        (),
        100.0,
        ordered,
        withheld={"db": "save image /s/db.save: restored before any cold boot"},
    )
    assert plan.creates == ()
    states = {s.name: (s.state, s.detail) for s in plan.statuses}
    assert states["db"] == (
        GuestPhase.WAITING,
        "save image /s/db.save: restored before any cold boot",
    )
    assert states["web"][0] is GuestPhase.WAITING, "web waits for db's restore"


def test_a_withheld_guest_that_runs_stays_running() -> None:
    plan = planner.plan(
        desired("a"), listing(dom("a")), mem(), (), 100.0, settings(), withheld={"a": "x"}
    )
    assert plan.statuses[0].state is GuestPhase.RUNNING


def test_the_mark_stands_down_this_boot_and_is_lifted_by_the_next(tmp_path: Path) -> None:
    state_dir = str(tmp_path)
    standdown.stand_down(state_dir, BOOT1, 1500.0)
    assert standdown.stood_down(state_dir, BOOT1)
    assert not standdown.clear_after_reboot(state_dir, BOOT1), "kept within the same boot"
    assert standdown.stood_down(state_dir, BOOT1)
    assert standdown.clear_after_reboot(state_dir, BOOT2)
    assert not standdown.stood_down(state_dir, BOOT2)
    assert not os.path.exists(tmp_path / standdown.MARK)


def test_a_damaged_mark_keeps_the_daemon_stood_down(tmp_path: Path) -> None:
    (tmp_path / standdown.MARK).write_text("{not json")
    (tmp_path / standdown.MARK).chmod(0o600)
    assert standdown.stood_down(str(tmp_path), BOOT2)
    assert not standdown.clear_after_reboot(str(tmp_path), BOOT2)


def test_stood_down_withholds_every_desired_guest(tmp_path: Path) -> None:
    config = Config(state_dir=str(tmp_path))
    standdown.stand_down(str(tmp_path), BOOT1, 1500.0)
    assert bootgate.withheld(config, desired("a", "b"), BOOT1) == {
        "a": standdown.REASON,
        "b": standdown.REASON,
    }


def saved(tmp_path: Path, name: str, boot: Boot = BOOT1) -> SaveStore:
    store = SaveStore(Config(state_dir=str(tmp_path)), wall=lambda: 1600.0)
    assert store.prepare() is None
    Path(store.temp_path(name)).write_text("image")
    store.commit(name, boot, 128)
    return store


def fates(store: SaveStore, boot: Boot) -> dict[str, str]:
    return {i.name: i.fate for i in store.images(boot)}


def test_an_image_is_due_only_in_a_later_boot(tmp_path: Path) -> None:
    store = saved(tmp_path, "a")
    assert fates(store, BOOT1) == {"a": LATER}
    assert fates(store, BOOT2) == {"a": DUE}
    assert "a" in store.withheld(BOOT2)


def test_a_guest_seen_running_after_its_save_makes_the_image_stale(tmp_path: Path) -> None:
    store = saved(tmp_path, "a")
    store.note_running(["a"], listed_at=1500.0, current=BOOT1)
    assert fates(store, BOOT2) == {"a": DUE}, "a listing older than the save says nothing"
    store.note_running(["a"], listed_at=1700.0, current=BOOT1)
    assert fates(store, BOOT2) == {"a": STALE}
    assert store.withheld(BOOT2) == {}, "a stale image does not keep its guest down"


def test_an_image_without_a_record_is_never_restored_and_keeps_its_guest_down(
    tmp_path: Path,
) -> None:
    store = saved(tmp_path, "a")
    (tmp_path / "saves.json").write_text(json.dumps({}))
    assert fates(store, BOOT2) == {"a": UNRECORDED}
    assert "restore or remove it" in store.withheld(BOOT2)["a"]


def test_moving_aside_names_the_image_failed_and_forgets_its_record(tmp_path: Path) -> None:
    store = saved(tmp_path, "a")
    aside = store.move_aside("a", "failed")
    assert Path(aside).name.startswith("a.save.failed-")
    assert store.records() == {} and store.images(BOOT2) == []
