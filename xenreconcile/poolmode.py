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


def pool_gate(
    agent: PoolAgent | None, desired: DesiredState, listing: tuple[Domain, ...] | None
) -> PoolGate | None:
    """The gate of one pass (None without pool mode)."""
    if agent is None:
        return None
    return agent.gate(frozenset(g.name for g in desired.guests), listing)
