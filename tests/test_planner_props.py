"""Properties of the planner over generated directories, listings, memories and settings."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from xenreconcile.models import (
    DOM0_NAME,
    INCOMING_SUFFIX,
    MIGRATEDAWAY_SUFFIX,
    Backoff,
    CreateAction,
    CreateResult,
    DesiredGuest,
    DesiredState,
    Domain,
    GuestMemory,
    GuestOverride,
    GuestPhase,
    InvalidFile,
    Memory,
    Plan,
    PlannerSettings,
)
from xenreconcile.planner import FORGET_AFTER, plan, record_create

NAMES = ("a", "b", "c", "d", "e", "f")
STATES = ("r-----", "-b----", "--p---", "---s--", "----c-", "----d-", "---sd-")
HASHES = ("h1", "h2")
TIME = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
# Times relative to `now`: the boundaries of grace, stable_after, start_delay and backoff.
OFFSETS = (-2000.0, -60.0, -30.0, -10.0, -5.0, -2.0, -0.5, 0.0, 0.5, 2.0, 5.0, 30.0, 600.0)


@dataclass(frozen=True)
class World:
    """One generated input of `plan`."""

    desired: DesiredState
    listing: tuple[Domain, ...] | None
    memory: Memory
    in_flight: frozenset[str]
    now: float
    settings: PlannerSettings

    def run(self) -> Plan:
        """Plan this world."""
        return plan(
            self.desired, self.listing, self.memory, self.in_flight, self.now, self.settings
        )


@st.composite
def desired_states(draw: st.DrawFn) -> DesiredState:
    """A scan with valid guests, duplicates and invalid files over a few names."""
    valid = draw(st.lists(st.sampled_from(NAMES), unique=True))
    hashes = {n: draw(st.sampled_from(HASHES)) for n in valid}
    guests = tuple(DesiredGuest(n, f"/g/{n}.cfg", hashes[n]) for n in valid)
    rest = [n for n in NAMES if n not in valid]
    dups = draw(st.lists(st.sampled_from(rest), unique=True)) if rest else []
    duplicates: dict[str, tuple[str, ...]] = {n: (f"/g/{n}-1.cfg", f"/g/{n}-2.cfg") for n in dups}
    invalid_names = draw(st.lists(st.sampled_from((*NAMES, None)), max_size=2))
    invalid = tuple(
        InvalidFile(f"/g/bad{i}.cfg", "bad", name=n, line=1) for i, n in enumerate(invalid_names)
    )
    error = draw(st.sampled_from((None, None, None, "unsafe permissions")))
    if error is not None:
        return DesiredState(error=error)
    return DesiredState(guests=guests, invalid=invalid, duplicates=duplicates, error=error)


@st.composite
def listings(draw: st.DrawFn) -> tuple[Domain, ...] | None:
    """None (a failed listing) or Domain-0 plus guests, migration names and strangers."""
    if draw(st.integers(0, 9)) == 0:
        return None
    candidates = [
        *NAMES,
        *(n + INCOMING_SUFFIX for n in NAMES),
        *(n + MIGRATEDAWAY_SUFFIX for n in NAMES),
        "stranger",
    ]
    names = draw(st.lists(st.sampled_from(candidates), unique=True, max_size=8))
    rows = [Domain(DOM0_NAME, 0, 4096, 4, "r-----", 9.0)]
    for domid, name in enumerate(names, start=1):
        rows.append(Domain(name, domid, 512, 1, draw(st.sampled_from(STATES)), 1.0))
    return tuple(rows)


def optional_time(now: float, draw: st.DrawFn) -> float | None:
    """None or a time near `now`."""
    offset = draw(st.sampled_from((None, *OFFSETS)))
    return None if offset is None else now + offset


@st.composite
def guest_memories(draw: st.DrawFn, now: float) -> GuestMemory:
    """Any remembered state of one guest, with times around `now`."""
    return GuestMemory(
        attempts=draw(st.integers(0, 6)),
        next_retry=optional_time(now, draw),
        last_error=draw(st.sampled_from((None, "boom"))),
        held=draw(st.booleans()),
        hold_reason=draw(st.sampled_from((None, "maintenance"))),
        migrated=draw(st.booleans()),
        migrating_away=draw(st.booleans()),
        cfg_hash=draw(st.sampled_from((None, *HASHES))),
        created_hash=draw(st.sampled_from((None, *HASHES))),
        created_at=optional_time(now, draw),
        seen_running=draw(st.booleans()),
        missing_since=optional_time(now, draw),
        last_failure_at=optional_time(now, draw),
        leftover_unchecked=draw(st.booleans()),
        leftover_domid=draw(st.sampled_from((None, 1, 2, 3))),
        absent_at=draw(st.sampled_from((None, now, now - 10.0, now - FORGET_AFTER))),
    )


@st.composite
def planner_settings(draw: st.DrawFn) -> PlannerSettings:
    """Settings with small numbers and per-guest orders and holds."""
    names = draw(st.lists(st.sampled_from(NAMES), unique=True))
    overrides = {
        n: GuestOverride(order=draw(st.integers(1, 3)), hold=draw(st.booleans())) for n in names
    }
    return PlannerSettings(
        concurrency=draw(st.integers(0, 5)),
        start_delay=draw(st.sampled_from((0.0, 0.0, 2.0, 10.0))),
        missing_grace=draw(st.sampled_from((0.0, 5.0, 30.0))),
        stable_after=draw(st.sampled_from((0.0, 60.0))),
        backoff=Backoff(
            initial=draw(st.sampled_from((1.0, 10.0))),
            jitter=draw(st.sampled_from((0.0, 5.0))),
            give_up_after=draw(st.integers(0, 4)),
        ),
        guests=overrides,
    )


@st.composite
def worlds(draw: st.DrawFn) -> World:
    """Any input of `plan`."""
    now = draw(TIME)
    remembered = draw(st.lists(st.sampled_from((*NAMES, "stranger", "gone")), unique=True))
    memory = Memory(
        guests={n: draw(guest_memories(now)) for n in remembered},
        last_create_at=optional_time(now, draw),
    )
    in_flight = frozenset(draw(st.lists(st.sampled_from((*NAMES, "gone")), unique=True)))
    return World(
        desired=draw(desired_states()),
        listing=draw(listings()),
        memory=memory,
        in_flight=in_flight,
        now=now,
        settings=draw(planner_settings()),
    )


def listed_names(world: World) -> set[str]:
    """Names in the world's listing (empty when the listing failed)."""
    return {d.name for d in world.listing or ()}


# --- safety -----------------------------------------------------------------------------------


@given(worlds())
def test_never_creates_a_listed_held_or_in_flight_guest(world: World) -> None:
    listed = listed_names(world)
    for create in world.run().creates:
        name = create.name
        assert name not in listed
        assert name + INCOMING_SUFFIX not in listed
        assert name + MIGRATEDAWAY_SUFFIX not in listed
        assert not world.memory.guest(name).held
        assert not world.settings.override(name).hold
        assert name not in world.in_flight


@given(worlds())
def test_creates_respect_concurrency_and_are_unique(world: World) -> None:
    creates = world.run().creates
    names = [c.name for c in creates]
    assert len(names) == len(set(names))
    assert len(creates) <= max(0, world.settings.concurrency - len(world.in_flight))
    if world.settings.start_delay > 0:
        assert len(creates) <= 1


@given(worlds())
def test_creates_only_valid_unique_desired_guests_from_their_file(world: World) -> None:
    valid = {g.name: g for g in world.desired.guests if g.name not in world.desired.duplicates}
    for create in world.run().creates:
        assert create.name in valid
        assert (create.path, create.cfg_hash) == (
            valid[create.name].path,
            valid[create.name].cfg_hash,
        )


@given(worlds())
def test_no_create_in_backoff_failed_or_migrated_with_unchanged_file(world: World) -> None:
    give_up_after = world.settings.backoff.give_up_after
    hashes = {g.name: g.cfg_hash for g in world.desired.guests}
    for create in world.run().creates:
        remembered = world.memory.guest(create.name)
        if remembered.cfg_hash in (None, hashes[create.name]):
            assert not (0 < give_up_after <= remembered.attempts)
            assert remembered.next_retry is None or remembered.next_retry <= world.now
        assert not remembered.migrated


@given(worlds())
def test_no_create_sooner_than_backoff_initial_after_a_failure(world: World) -> None:
    for create in world.run().creates:
        failed_at = world.memory.guest(create.name).last_failure_at
        assert failed_at is None or failed_at + world.settings.backoff.initial <= world.now


@given(worlds())
def test_a_paused_leftover_of_a_failed_create_is_never_running(world: World) -> None:
    result = world.run()
    if not result.trusted or world.desired.error:
        return
    rows = {s.name: s for s in result.statuses}
    managed = {g.name for g in world.desired.guests} - set(world.desired.duplicates)
    for domain in world.listing or ():
        name, before = domain.name, world.memory.guest(domain.name)
        left = before.leftover_unchecked or before.leftover_domid == domain.domid
        if name not in managed or name in world.in_flight or not (domain.paused and left):
            continue
        if rows[name].state is not GuestPhase.HELD:
            assert rows[name].state is GuestPhase.LEFTOVER
        assert result.memory.guest(name).leftover_domid == domain.domid
        assert result.memory.guest(name).seen_running == before.seen_running


@given(worlds())
def test_failed_listing_does_nothing(world: World) -> None:
    untrusted = replace(world, listing=None)
    result = untrusted.run()
    assert result.creates == ()
    assert result.memory == world.memory
    assert result.trusted is False
    assert result.events == ()


@given(worlds())
def test_plan_is_deterministic(world: World) -> None:
    assert world.run() == world.run()


# --- shape of the output -----------------------------------------------------------------------


@given(worlds())
def test_statuses_sorted_and_one_per_desired_guest(world: World) -> None:
    statuses = world.run().statuses
    keys = [(s.name, s.paths) for s in statuses]
    assert keys == sorted(keys)
    names = [s.name for s in statuses]
    for g in world.desired.guests:
        expected = 1 if g.name not in world.desired.duplicates else 0
        matching = [s for s in statuses if s.name == g.name and s.paths == (g.path,)]
        assert len(matching) == expected
    for name in world.desired.duplicates:
        assert names.count(name) >= 1


@given(worlds())
def test_wake_at_is_in_the_future(world: World) -> None:
    wake_at = world.run().wake_at
    assert wake_at is None or wake_at > world.now


@given(worlds())
def test_memory_keeps_holds_and_migrated_marks(world: World) -> None:
    result = world.run()
    for name, before in world.memory.guests.items():
        after = result.memory.guest(name)
        assert after.held == before.held
        if before.migrated and name not in listed_names(world):
            assert after.migrated


@given(worlds())
def test_memory_forgets_names_that_matter_no_more(world: World) -> None:
    result = world.run()
    with_file = {g.name for g in world.desired.guests} | set(world.desired.duplicates)
    with_file |= {bad.name for bad in world.desired.invalid if bad.name}
    listed = listed_names(world)
    migrating = {n.removesuffix(s) for n in listed for s in (INCOMING_SUFFIX, MIGRATEDAWAY_SUFFIX)}
    for name, gm in result.memory.guests.items():
        relevant = name in with_file | listed | migrating | world.in_flight
        remembered = gm.absent_at is not None and world.now < gm.absent_at + FORGET_AFTER
        marks = GuestMemory(held=gm.held, hold_reason=gm.hold_reason, migrated=gm.migrated)
        marks_only = gm == marks
        assert (
            relevant
            or remembered
            or (marks_only and (gm.held or gm.migrated))
            or world.desired.error
            or world.listing is None
        )


@given(worlds())
def test_guests_created_now_show_pending(world: World) -> None:
    result = world.run()
    rows = {(s.name, s.paths): s.state for s in result.statuses}
    for create in result.creates:
        assert rows[(create.name, (create.path,))] is GuestPhase.PENDING


# --- simulation: with creates that always work, everything ends up running ----------------------


@st.composite
def simulations(draw: st.DrawFn) -> World:
    """A start of a simulation: valid guests, some running, and memory with backoff,
    grace and holds, but no migration and no give-up."""
    now = draw(st.floats(min_value=1e5, max_value=1e6))
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1))
    running = draw(st.lists(st.sampled_from(names), unique=True))
    memory = Memory(
        guests={
            n: GuestMemory(
                attempts=draw(st.integers(0, 4)),
                next_retry=optional_time(now, draw),
                held=draw(st.booleans()),
                cfg_hash=draw(st.sampled_from((None, *HASHES))),
                seen_running=draw(st.booleans()),
                missing_since=optional_time(now, draw),
            )
            for n in draw(st.lists(st.sampled_from(names), unique=True))
        },
        last_create_at=optional_time(now, draw),
    )
    config = replace(draw(planner_settings()), concurrency=draw(st.integers(1, 4)))
    config = replace(config, backoff=replace(config.backoff, give_up_after=0))
    return World(
        desired=DesiredState(guests=tuple(DesiredGuest(n, f"/g/{n}.cfg", "h1") for n in names)),
        listing=tuple(Domain(n, i + 1, 512, 1, "-b----", 1.0) for i, n in enumerate(running)),
        memory=memory,
        in_flight=frozenset(),
        now=now,
        settings=config,
    )


INTERVAL = 30.0


@settings(max_examples=150)
@given(simulations())
def test_simulation_converges_to_every_unheld_guest_running(world: World) -> None:
    desired = {g.name for g in world.desired.guests}
    held = {n for n in desired if world.memory.guest(n).held or world.settings.override(n).hold}
    running = {d.name for d in world.listing or ()}
    memory, now = world.memory, world.now
    for _ in range(200):
        listing = tuple(Domain(n, 1, 512, 1, "-b----", 1.0) for n in sorted(running))
        result = plan(world.desired, listing, memory, (), now, world.settings)
        memory = result.memory
        for create in result.creates:
            assert create.name not in running
            assert create.name not in held
            running.add(create.name)
            memory, _ = record_create(memory, create, CreateResult(True, 0), now, world.settings)
        if running >= desired - held and not result.creates:
            break
        now = min(result.wake_at or now + INTERVAL, now + INTERVAL)
    assert running >= desired - held


# --- a failing guest whose file keeps changing ---------------------------------------------------


@st.composite
def rewrites(draw: st.DrawFn) -> tuple[PlannerSettings, list[tuple[float, bool]]]:
    """Settings and a run of passes: seconds since the previous pass, and whether
    the file's content changed before it."""
    config = replace(draw(planner_settings()), concurrency=1, start_delay=0.0)
    steps = draw(
        st.lists(
            st.tuples(st.sampled_from((0.1, 0.5, 1.0, 3.0, 12.0)), st.booleans()),
            min_size=1,
            max_size=60,
        )
    )
    return config, steps


@settings(max_examples=150)
@given(rewrites())
def test_a_failing_guest_is_tried_at_most_once_per_backoff_initial(
    run: tuple[PlannerSettings, list[tuple[float, bool]]],
) -> None:
    """Each create fails when the next pass comes, maybe after the file changed."""
    config, steps = run
    dom0 = (Domain(DOM0_NAME, 0, 4096, 4, "r-----", 9.0),)
    memory, now, content = Memory(), 1e5, 0
    flying: list[CreateAction] = []
    tried: list[float] = []
    for seconds, changed in steps:
        now += seconds
        content += changed
        for create in flying:
            memory, _ = record_create(memory, create, CreateResult(False, 3), now, config)
        scan = DesiredState(guests=(DesiredGuest("a", "/g/a.cfg", f"h{content}"),))
        result = plan(scan, dom0, memory, (), now, config)
        memory, flying = result.memory, list(result.creates)
        tried += [now for _ in flying]
    gaps = [later - earlier for earlier, later in itertools.pairwise(tried)]
    assert all(gap >= config.backoff.initial for gap in gaps), (tried, config.backoff)
