"""The metrics the daemon exports, as plain values: which ones there are, and
their samples for one pass. No I/O, and no import of prometheus_client: the
exporter, `metricsexport`, does that, and `open_sink` imports it only when
metrics are configured.

Adding a metric is one entry in `GAUGES` (sampled from each pass) or in
`COUNTERS` / `HISTOGRAMS` (counted when something happens; the exporter's
`count` and `observe` take the entry). Label values are guest names and state
words, never error texts, so there is one series per guest and state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from xenreconcile import __version__
from xenreconcile.models import CreateAction, CreateResult, GuestPhase, GuestStatus, Plan, PoolGate

# States in which the guest is listed running (what `xenreconcile_guest_up` says).
UP_STATES = frozenset({GuestPhase.RUNNING, GuestPhase.DRIFT, GuestPhase.UNMANAGED})
# States in which nothing is known about whether the guest runs: no guest_up sample.
UNKNOWN_STATES = frozenset({GuestPhase.UNKNOWN})

Labels = tuple[str, ...]
Sample = tuple[Labels, float]


@dataclass(frozen=True, slots=True)
class PassView:
    """What one pass saw, as the metrics need it: every guest's status, whether
    the toolstack listing was trusted, the wall time of the pass (epoch seconds),
    the wall time of each guest's next retry, and pool mode's gate of the pass
    (None without pool mode)."""

    statuses: tuple[GuestStatus, ...]
    toolstack_up: bool
    wall_time: float
    next_retry_wall: dict[str, float]
    pool: PoolGate | None = None


def pass_view(plan: Plan, now: float, wall_now: float, pool: PoolGate | None = None) -> PassView:
    """Given a plan made at monotonic `now` (wall clock `wall_now`) and the pass's
    pool gate (None without pool mode), its PassView."""
    retries = {
        s.name: round(wall_now + (s.next_retry - now), 3)
        for s in plan.statuses
        if s.next_retry is not None
    }
    return PassView(plan.statuses, plan.trusted, wall_now, retries, pool)


@dataclass(frozen=True, slots=True)
class GaugeDef:
    """A gauge sampled from every pass: `samples` gives (label values, value)."""

    name: str
    help: str
    labels: Labels
    samples: Callable[[PassView], Iterable[Sample]]


@dataclass(frozen=True, slots=True)
class CounterDef:
    """A counter (its exported name ends in `_total`) counted by the exporter."""

    name: str
    help: str
    labels: Labels


@dataclass(frozen=True, slots=True)
class HistogramDef:
    """A histogram of seconds observed by the exporter."""

    name: str
    help: str
    buckets: tuple[float, ...]


def _guest_up(view: PassView) -> Iterable[Sample]:
    for s in view.statuses:
        if s.state not in UNKNOWN_STATES:
            yield (s.name,), 1.0 if s.state in UP_STATES else 0.0


def _guest_state(view: PassView) -> Iterable[Sample]:
    # Every state of every guest, 1 for its current one: series do not come and
    # go with each change, so `== 0` and `for:` in alert rules work.
    for s in view.statuses:
        for phase in GuestPhase:
            yield (s.name, phase.value), 1.0 if s.state is phase else 0.0


def _guest_attempts(view: PassView) -> Iterable[Sample]:
    return (((s.name,), float(s.attempts)) for s in view.statuses)


def _next_retry(view: PassView) -> Iterable[Sample]:
    return (((name,), at) for name, at in sorted(view.next_retry_wall.items()))


def _pool_confirmed(view: PassView) -> Iterable[Sample]:
    # Absent without pool mode, so a rule on it never fires on a single host.
    if view.pool is not None:
        yield (), 1.0 if view.pool.confirmed else 0.0


def _guest_claimed(view: PassView) -> Iterable[Sample]:
    # Only from a confirmed view: an unconfirmed one knows nothing of the claims,
    # and a 0 there would read as "claimed elsewhere".
    if view.pool is None or not view.pool.confirmed:
        return
    for s in view.statuses:
        yield (s.name,), 1.0 if s.name in view.pool.mine else 0.0


GAUGES: tuple[GaugeDef, ...] = (
    GaugeDef(
        "xenreconcile_guest_up",
        "1 when the guest is listed running by xl, 0 when not (absent while xl list fails).",
        ("guest",),
        _guest_up,
    ),
    GaugeDef(
        "xenreconcile_guest_state",
        "1 for the guest's state as xenreconcile status shows it, 0 for every other state.",
        ("guest", "state"),
        _guest_state,
    ),
    GaugeDef(
        "xenreconcile_guest_failed_attempts",
        "Consecutive failed creates of the guest (reset once it stays up stable_after).",
        ("guest",),
        _guest_attempts,
    ),
    GaugeDef(
        "xenreconcile_next_retry_timestamp_seconds",
        "When the next create of a failing guest is due (epoch seconds).",
        ("guest",),
        _next_retry,
    ),
    GaugeDef(
        "xenreconcile_toolstack_up",
        "1 when the last xl list was trusted, 0 when it failed (no action was taken).",
        (),
        lambda view: [((), 1.0 if view.toolstack_up else 0.0)],
    ),
    GaugeDef(
        "xenreconcile_last_pass_timestamp_seconds",
        "When the daemon last compared the guests directory with xl list (epoch seconds).",
        (),
        lambda view: [((), view.wall_time)],
    ),
    GaugeDef(
        "xenreconcile_pool_confirmed",
        "Pool mode: 1 when etcd answered and this host's lease is known alive (it may"
        " create), 0 when not (it keeps its guests and creates nothing).",
        (),
        _pool_confirmed,
    ),
    GaugeDef(
        "xenreconcile_guest_claimed",
        "Pool mode: 1 when this host holds the guest's claim, 0 when it does not"
        " (absent while the pool view is not confirmed).",
        ("guest",),
        _guest_claimed,
    ),
    GaugeDef(
        "xenreconcile_build_info",
        "Always 1; the version label says which xenreconcile runs.",
        ("version",),
        lambda _view: [((__version__,), 1.0)],
    ),
)

CREATES = CounterDef(
    "xenreconcile_creates",
    "xl create commands that ended, by guest and result (ok, failed, timeout).",
    ("guest", "result"),
)
COUNTERS: tuple[CounterDef, ...] = (CREATES,)

CREATE_DURATION = HistogramDef(
    "xenreconcile_create_duration_seconds",
    "How long xl create commands took, whatever their result.",
    (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0),
)
HISTOGRAMS: tuple[HistogramDef, ...] = (CREATE_DURATION,)


def create_outcome(result: CreateResult) -> str:
    """The `result` label of a create: `ok`, `timeout` or `failed`."""
    if result.ok:
        return "ok"
    return "timeout" if result.timed_out else "failed"


def gauge_samples(view: PassView) -> dict[str, list[Sample]]:
    """Every gauge's samples for `view`, by metric name."""
    return {gauge.name: list(gauge.samples(view)) for gauge in GAUGES}


# --- the daemon's door to the exporter ------------------------------------------------------


class MetricsSink(Protocol):
    """Where the loop hands what the metrics need (`metricsexport.MetricsExporter`)."""

    def pass_done(self, view: PassView) -> None: ...
    def create_done(self, action: CreateAction, result: CreateResult) -> None: ...
    def close(self) -> None: ...


class NoMetrics:
    """The sink when no metrics are configured: does nothing."""

    def pass_done(self, view: PassView) -> None:
        """Nothing to export."""

    def create_done(self, action: CreateAction, result: CreateResult) -> None:
        """Nothing to count."""

    def close(self) -> None:
        """Nothing to stop."""


def open_sink(listen: str | None, textfile: str | None, log: Any) -> MetricsSink:
    """The exporter for `metrics_listen` / `metrics_textfile`, or NoMetrics when
    both are unset. prometheus_client is imported only here, only then; when it
    is missing that is logged and the daemon runs on without metrics."""
    if listen is None and textfile is None:
        return NoMetrics()
    try:
        from xenreconcile.metricsexport import MetricsExporter  # noqa: PLC0415
    except ImportError as exc:
        log.error("metrics_unavailable", error=f"prometheus_client cannot be imported: {exc}")
        return NoMetrics()
    return MetricsExporter(listen, textfile, log)
