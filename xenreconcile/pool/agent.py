"""One pass's pool step (an adapter around the pure `placement`): keep the lease,
publish this host's listing, read the pool, take and move claims, and return the
planner's `PoolGate`. Only the daemon's main thread calls it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from xenreconcile.models import Domain, PoolGate
from xenreconcile.pool import placement
from xenreconcile.pool.fence import make_feeder
from xenreconcile.pool.lease import LeaseClock
from xenreconcile.pool.placement import PoolView
from xenreconcile.pool.store import EtcdStore, StoreError
from xenreconcile.poolmode import preferred_hosts
from xenreconcile.schema import Config


class Store(Protocol):
    """What the agent needs from etcd (`store.EtcdStore`)."""

    def grant(self, ttl: float) -> int: ...
    def refresh(self, lease: int) -> bool: ...
    def publish(self, host: str, names: frozenset[str], lease: int) -> None: ...
    def read(self) -> PoolView: ...
    def claim(self, guest: str, host: str) -> bool: ...
    def move(self, guest: str, old: str, new: str) -> bool: ...
    def free(self, guest: str, old: str) -> bool: ...
    def join(self, host: str) -> None: ...
    def forget(self, host: str) -> bool: ...


class PoolAgent:
    """The pool member `config.pool.host`, talking to etcd through `store`;
    `clock` is monotonic seconds; `on_renewed` runs after each confirmed renewal
    (the fence feed)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Callable[[], float],
        log: Any,
        on_renewed: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = config.pool
        self.me = config.pool.host
        self.preferred = preferred_hosts(config)
        self.store = store
        self.clock = clock
        self.log = log
        self.on_renewed = on_renewed
        self.lease = LeaseClock(config.pool.lease_ttl)
        self.lease_id: int | None = None
        self.last_view: PoolView | None = None
        self.last_error: str | None = None
        self._conflicts: set[tuple[str, str]] = set()
        self.absent_since: dict[str, float] = {}
        self.changes: dict[str, tuple[int, float | None]] = {}

    @property
    def renew_every(self) -> float:
        """The longest time between two pool steps."""
        return self.lease.renew_every

    def gate(self, desired: frozenset[str], listing: tuple[Domain, ...] | None) -> PoolGate:
        """Given the desired guest names and this pass's listing (None: untrusted),
        do the pool step and return the gate; unconfirmed on any etcd problem or
        when the lease is not known alive once the step is done."""
        try:
            self._keep_lease()
            if listing is not None and self.lease_id is not None:
                self.store.publish(self.me, placement.published(listing), self.lease_id)
            view = self._fresh(self.store.read())
            won, fresh = (
                self._claim(desired, listing, view) if listing is not None else (set(), set())
            )
        except StoreError as exc:
            return self._unconfirmed(f"etcd: {exc}")
        self.last_view = view
        if not self.lease.known_alive(self.clock()):
            return self._unconfirmed("this host's pool lease is not known to be alive")
        self._settled()
        self._take_over_fenced(view)
        return placement.gate(self.me, desired, view, won, self.settings.lease_ttl, fresh)

    def _fresh(self, view: PoolView) -> PoolView:
        """`view` with only the hosts whose liveness key this agent saw change
        (each host puts it every pass) less than `lease_ttl` ago: a key that
        outlives its daemon (etcd extends every lease on a leader change) is not
        taken for a live host, nor is one seen only once since this daemon started."""
        now = self.clock()
        for host, revision in view.revisions.items():
            before = self.changes.get(host)
            if before is None:
                self.changes[host] = (revision, None)
            elif before[0] != revision:
                self.changes[host] = (revision, now)
        ttl = self.settings.lease_ttl
        fresh = {
            h: names
            for h, names in view.hosts.items()
            if h == self.me or _recent(self.changes.get(h), now, ttl)
        }
        return replace(view, hosts=fresh)

    @property
    def fencing(self) -> bool:
        """True when every host of the pool fences itself (`pool.fence.feed` set)."""
        return bool(self.settings.fence.feed)

    @property
    def fence_wait(self) -> float:
        """How long a host must have been seen gone before its claims are freed
        automatically: the watchdog's timeout plus the lease TTL (docs/pool.md)."""
        return self.settings.fence.timeout + self.settings.lease_ttl

    def _take_over_fenced(self, view: PoolView) -> None:
        """With fencing, free the claims of each holder whose liveness key this
        host has seen absent for `fence_wait`; placement starts them next pass."""
        now = self.clock()
        gone = set(view.unaccounted(self.me))
        gone |= {h for h in view.claims.values() if h not in view.hosts and h != self.me}
        self.absent_since = {h: self.absent_since.get(h, now) for h in gone}
        if not self.fencing:
            return
        for host, since in sorted(self.absent_since.items()):
            if now - since < self.fence_wait:
                continue
            held = sorted(g for g, h in view.claims.items() if h == host)
            try:
                freed = [g for g in held if self.store.free(g, host)]
                if freed == held:
                    self.store.forget(host)
            except StoreError as exc:
                self.log.warning("pool_takeover_failed", host=host, error=str(exc))
                return
            self.log.warning(
                "pool_fenced_takeover",
                host=host,
                guests=",".join(freed),
                waited=round(now - since, 1),
            )

    def _keep_lease(self) -> None:
        """Grant a lease if there is none, renew it when due; feed the fence on success."""
        sent = self.clock()
        if self.lease_id is not None and not self.lease.renewal_due(sent):
            return
        if self.lease_id is not None and self.store.refresh(self.lease_id):
            self.lease.confirmed(sent)
            self.on_renewed()
            return
        if self.lease_id is not None:
            self.log.warning("pool_lease_lost", host=self.me)
            self.lease.lost()
        self.lease_id = self.store.grant(self.settings.lease_ttl)
        self.store.join(self.me)
        self.lease.confirmed(sent)
        self.on_renewed()

    def _claim(
        self, desired: frozenset[str], listing: tuple[Domain, ...], view: PoolView
    ) -> tuple[set[str], set[str]]:
        """Take and move the claims `placement.decide` asks for; the guests won,
        and of them those taken where no claim existed."""
        here = placement.running_here(listing)
        decisions = placement.decide(self.me, desired, here, view, self.preferred)
        fresh = {g for g in decisions.take if self.store.claim(g, self.me)}
        won = set(fresh)
        for guest, old in decisions.move:
            if self.store.move(guest, old, self.me):
                won.add(guest)
                self.log.info("pool_claim_moved", guest=guest, source=old, host=self.me)
        for guest in sorted(won - set(dict(decisions.move))):
            self.log.info("pool_claimed", guest=guest, host=self.me)
        self._report_conflicts(set(decisions.conflicts))
        return won, fresh

    def _report_conflicts(self, conflicts: set[tuple[str, str]]) -> None:
        for guest, holder in sorted(conflicts - self._conflicts):
            self.log.error(
                "pool_conflict",
                guest=guest,
                holder=holder,
                host=self.me,
                error=f"{guest} runs here and on pool host {holder}",
            )
        self._conflicts = conflicts

    def _unconfirmed(self, reason: str) -> PoolGate:
        if reason != self.last_error:
            self.log.warning("pool_unconfirmed", host=self.me, error=reason)
        self.last_error = reason
        return PoolGate(False, reason=reason)

    def _settled(self) -> None:
        if self.last_error is not None:
            self.log.info("pool_confirmed", host=self.me)
        self.last_error = None


def _recent(change: tuple[int, float | None] | None, now: float, ttl: float) -> bool:
    return change is not None and change[1] is not None and now - change[1] < ttl


def make_agent(config: Config, clock: Callable[[], float], log: Any) -> PoolAgent:
    """The agent of `config` (pool mode configured) with its etcd store and fence."""
    return PoolAgent(config, EtcdStore(config.pool), clock, log, make_feeder(config, log))
