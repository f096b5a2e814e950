"""The daemon's door to pool mode: the pool agent when `pool` is configured,
else None, without importing the pool package (or etcd3gw) at all."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xenreconcile.models import DesiredState, Domain, PoolGate
from xenreconcile.schema import Config

if TYPE_CHECKING:
    from xenreconcile.pool.agent import PoolAgent


def pool_agent(config: Config, clock: Callable[[], float], log: Any) -> PoolAgent | None:
    """Given the config, the monotonic clock and the logger, the pool agent (None
    without `pool`)."""
    if not config.pool.enabled:
        return None
    from xenreconcile.pool.agent import make_agent  # noqa: PLC0415 - pool mode only

    return make_agent(config, clock, log)


def preferred_hosts(config: Config) -> dict[str, str]:
    """guest -> its preferred pool host (`guests.NAME.pool_host`), where set."""
    return {name: g.pool_host for name, g in config.guests.items() if g.pool_host}


def pool_gate(
    agent: PoolAgent | None, desired: DesiredState, listing: tuple[Domain, ...] | None
) -> PoolGate | None:
    """The gate of one pass (None without pool mode)."""
    if agent is None:
        return None
    return agent.gate(frozenset(g.name for g in desired.guests), listing)


def dry_gate(config: Config, desired: DesiredState) -> PoolGate | None:
    """For a command that plans without acting (`status` with no daemon, `plan`):
    the gate from one read of the pool, taking no claim (None without pool mode)."""
    if not config.pool.enabled:
        return None
    from xenreconcile.pool import placement  # noqa: PLC0415 - pool mode only
    from xenreconcile.pool.store import EtcdStore, StoreError  # noqa: PLC0415

    try:
        view = EtcdStore(config.pool).read()
    except StoreError as exc:
        return PoolGate(False, reason=f"etcd: {exc}")
    names = frozenset(g.name for g in desired.guests)
    return placement.gate(config.pool.host, names, view, set(), config.pool.lease_ttl)


def pool_summary(agent: PoolAgent | None, gate: PoolGate | None) -> dict[str, Any] | None:
    """The `pool` object of the status document: this host, whether this pass's
    gate was confirmed (and why not), how many desired guests it claims; None
    without pool mode."""
    if agent is None or gate is None:
        return None
    return {
        "name": agent.settings.name,
        "host": agent.me,
        "confirmed": gate.confirmed,
        "error": gate.reason or None,
        "claimed_here": len(gate.mine),
    }


def pool_line(doc: dict[str, Any]) -> str | None:
    """The line `status` prints under its table for the document's `pool`, if any."""
    pool = doc.get("pool")
    if not isinstance(pool, dict):
        return None
    standing = "confirmed" if pool.get("confirmed") else f"NOT confirmed ({pool.get('error')})"
    return (
        f"pool {pool.get('name')}: this host {pool.get('host')}, "
        f"{pool.get('claimed_here')} guest(s) claimed here, {standing}"
    )
