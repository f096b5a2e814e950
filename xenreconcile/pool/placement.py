"""Pool decisions of one pass, pure: which claims this host takes or moves, and
the gate the planner gets (docs/pool.md, rules 4 and 5, and Placement)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from xenreconcile.models import DOM0_NAME, Domain, PoolGate, split_migration_name


@dataclass(frozen=True)
class PoolView:
    """One consistent read of the pool: each live host with the guests its last
    trusted listing showed, and each claim (guest -> host)."""

    hosts: Mapping[str, frozenset[str]] = field(default_factory=dict)
    claims: Mapping[str, str] = field(default_factory=dict)
    members: frozenset[str] = frozenset()
    revisions: Mapping[str, int] = field(default_factory=dict)  # host -> its key's mod_revision

    def unaccounted(self, me: str) -> list[str]:
        """Members of the pool other than `me` that are not alive and were not
        taken over: each could be running any guest."""
        return sorted(self.members - set(self.hosts) - {me})


@dataclass(frozen=True)
class Decisions:
    """What this host asks of etcd this pass: claims to take (guests), claims to
    move here (guest, old holder), and conflicts to report (guest, holder)."""

    take: tuple[str, ...] = ()
    move: tuple[tuple[str, str], ...] = ()
    conflicts: tuple[tuple[str, str], ...] = ()


def published(listing: Iterable[Domain]) -> frozenset[str]:
    """The guest names a host publishes as its own: every listed domain but
    Domain-0 and those migrating away (an incoming one counts under its guest's name)."""
    names = set()
    for domain in listing:
        base, kind = split_migration_name(domain.name)
        if domain.name != DOM0_NAME and kind != "migratedaway":
            names.add(base)
    return frozenset(names)


def running_here(listing: Iterable[Domain]) -> frozenset[str]:
    """The names listed under their own name (not in migration), Domain-0 excepted."""
    return frozenset(
        d.name for d in listing if d.name != DOM0_NAME and split_migration_name(d.name)[1] is None
    )


def chosen_host(guest: str, live: Collection[str], preferred: str | None) -> str | None:
    """The live host that should claim a free `guest`: its preferred host while
    alive, else the first by rendezvous hashing; None when no host is alive."""
    if preferred and preferred in live:
        return preferred
    return max(live, key=lambda host: _rank(guest, host), default=None)


def _rank(guest: str, host: str) -> bytes:
    return hashlib.sha256(f"{guest}\0{host}".encode()).digest()


def decide(
    me: str,
    desired: Collection[str],
    here: Collection[str],
    view: PoolView,
    preferred: Mapping[str, str],
) -> Decisions:
    """Given this host, the desired guest names, those running here, the pool view
    and the preferred hosts, return the claims to take and move and the conflicts.
    A free guest that runs nowhere is claimed only while every member is accounted
    for: a daemon that has not yet seen the other hosts' keys change would take
    them all for itself, and a claim stays where it was taken."""
    complete = not view.unaccounted(me)
    take: list[str] = []
    move: list[tuple[str, str]] = []
    conflicts: list[tuple[str, str]] = []
    for guest in sorted(desired):
        holder = view.claims.get(guest)
        if guest in here:
            if holder is None:
                take.append(guest)
            elif holder != me and guest in view.hosts.get(holder, frozenset()):
                conflicts.append((guest, holder))
            elif holder != me:
                move.append((guest, holder))
        elif holder is None and complete and _free_for(guest, me, view, preferred.get(guest)):
            take.append(guest)
    return Decisions(tuple(take), tuple(move), tuple(conflicts))


def _free_for(guest: str, me: str, view: PoolView, preferred: str | None) -> bool:
    """True when unclaimed `guest`, listed by no other host, is this host's to claim."""
    return (
        not _listed_elsewhere(guest, me, view) and chosen_host(guest, view.hosts, preferred) == me
    )


def _listed_elsewhere(guest: str, me: str, view: PoolView) -> str | None:
    """Another live host whose last listing showed `guest`, if any."""
    return next((h for h, names in sorted(view.hosts.items()) if h != me and guest in names), None)


def gate(  # noqa: PLR0917 - all of it is one pass's pool input
    me: str,
    desired: Collection[str],
    view: PoolView,
    won: Collection[str],
    lease_ttl: float,
    fresh: Collection[str] = (),
) -> PoolGate:
    """The gate: unconfirmed while a member of the pool is unaccounted for (it
    could run any guest); else the desired guests claimed by this host (in the
    view or `won` this pass) and, for every other desired guest, the host that
    claims or lists it. A guest another host lists is elsewhere even if its claim
    is ours. A vanished guest waits `lease_ttl` plus a renewal: by then a live host
    it migrated to lists it, and a dead one's lease has ended (so it is unaccounted)."""
    missing = view.unaccounted(me)
    if missing:
        return PoolGate(
            False,
            reason=f"pool host {', '.join(missing)} is not alive and not taken over "
            "(it could run any guest; `xenreconcile pool takeover HOST --yes` once it is down)",
        )
    mine: set[str] = set()
    elsewhere: dict[str, str] = {}
    for guest in desired:
        holder = me if guest in won else view.claims.get(guest)
        other = _listed_elsewhere(guest, me, view)
        if other is not None:
            elsewhere[guest] = other
        elif holder == me:
            mine.add(guest)
        elif holder is not None:
            elsewhere[guest] = holder
    return PoolGate(
        True,
        frozenset(mine),
        elsewhere,
        vanish_grace=2 * lease_ttl,
        fresh=frozenset(fresh) & frozenset(mine),
    )
