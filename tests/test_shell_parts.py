"""The parts of the daemon's shell: one precedence of a guest's standing, creates
marked by the planner, the in-flight names in the status document, and the
watcher handing the loop hints through its queue only."""

from __future__ import annotations

import time
from pathlib import Path

from xenreconcile import planner, report
from xenreconcile.commands import in_flight_names
from xenreconcile.config import parse_config
from xenreconcile.loopqueue import Hint, LoopQueue
from xenreconcile.models import (
    DesiredGuest,
    DesiredState,
    Domain,
    GuestMemory,
    GuestPhase,
    Memory,
    PlannerSettings,
)
from xenreconcile.sources import WatchSource

NOW = 1000.0
DOM0 = Domain("Domain-0", 0, 1024, 2, "r-----", 1.0)
SETTINGS = PlannerSettings(missing_grace=0.0)
WEB = DesiredState(guests=(DesiredGuest("web", "/guests/web.cfg", "hash-web"),))


def state_of(plan: planner.Plan, name: str) -> GuestPhase:
    return next(s.state for s in plan.statuses if s.name == name)


def test_a_held_guest_with_a_create_in_flight_shows_creating_on_any_listing() -> None:
    memory = Memory(guests={"web": GuestMemory(held=True, hold_reason="maintenance")})
    trusted = planner.plan(WEB, (DOM0,), memory, {"web"}, NOW, SETTINGS)
    untrusted = planner.plan(WEB, None, memory, {"web"}, NOW, SETTINGS)
    assert state_of(trusted, "web") is GuestPhase.CREATING
    assert state_of(untrusted, "web") is GuestPhase.CREATING


def test_the_planner_marks_the_creates_its_caller_starts() -> None:
    started = planner.plan(WEB, (DOM0,), Memory(), (), NOW, SETTINGS, starting=True)
    dry_run = planner.plan(WEB, (DOM0,), Memory(), (), NOW, SETTINGS)
    assert [c.name for c in started.creates] == ["web"]
    assert state_of(started, "web") is GuestPhase.CREATING
    assert state_of(dry_run, "web") is GuestPhase.PENDING


def test_the_status_document_names_the_creates_in_flight() -> None:
    memory = Memory(guests={"web": GuestMemory(held=True)})
    plan = planner.plan(WEB, None, memory, set(), NOW, SETTINGS)
    doc = report.status_document(
        plan, now=NOW, wall_now=NOW, daemon_pid=1, toolstack_error="x", in_flight={"web"}
    )
    assert doc["in_flight"] == ["web"]
    assert in_flight_names(doc) == {"web"}, "read from the list, whatever the guest's state"
    assert in_flight_names({"guests": [{"name": "web", "state": "creating"}]}) == set()


def test_the_watcher_hands_the_loop_a_hint_through_its_queue(tmp_path: Path) -> None:
    guests = tmp_path / "guests"
    guests.mkdir(mode=0o755)
    config = parse_config(
        f"guests_dir: {guests}\nstate_dir: {tmp_path / 'state'}\nwatch: poll\n", "t.yaml"
    )
    door = LoopQueue()
    source = WatchSource(config, door, _NullLog())
    try:
        (guests / "web.cfg").write_text('name = "web"\n')
        deadline = time.monotonic() + 10
        seen: list[object] = []
        while Hint.CHANGED not in seen and time.monotonic() < deadline:
            seen += door.take_all()
            time.sleep(0.05)  # polls for the hint; the deadline bounds the wait
        assert Hint.CHANGED in seen
    finally:
        source.close()


class _NullLog:
    def __getattr__(self, _name: str) -> object:
        return lambda *_args, **_fields: None
