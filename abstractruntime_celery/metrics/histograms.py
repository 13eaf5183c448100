"""Cluster-wide histograms, kept in Redis beside the counters (``{p}hist``).

A tick records what it measured (its duration, a timer's lateness, an event's resume
latency) as counts in the same Counter its stats counters go in; they all leave with
its lease release, inside the release script that carries its counters already
(``lua/lease_release.lua``, any number of hashes); an event's resume latency rides the save
that applies the event instead (``lua/save_run.lua`` option ``hist``), so an apply refused
(a pause or cancel landed first) is not counted. So observing adds no round trip and
no command to the tick path (only HINCRBYs inside that script). Each observation is three increments of the ``{p}hist``
hash: its bucket (non-cumulative; the collector accumulates), ``count``, and the sum
in whole microseconds (integers: the counts are HINCRBYs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..context import TickContext

#: Latency buckets, in seconds (upper bounds; an overflow bucket ``+Inf`` follows).
LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                      1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
INF = "+Inf"


@dataclass(frozen=True)
class Histogram:
    """One histogram: ``name`` is the field prefix in ``{p}hist``; ``metric`` the
    Prometheus name it is exposed under."""

    name: str
    metric: str
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS

    def bucket_of(self, seconds: float) -> str:
        """The field of the bucket ``seconds`` falls in (``le`` semantics: upper bound included)."""
        for bound in self.buckets:
            if seconds <= bound:
                return f"{self.name}:{bound!r}"
        return f"{self.name}:{INF}"


TICK = Histogram("tick", "abstractruntime_celery_tick_duration_seconds",
                 "Time a leased tick held its run: from the lease's round trip to the release.")
TIMER_LATENESS = Histogram("timer", "abstractruntime_celery_timer_lateness_seconds",
                           "How late a due wait was taken up: the tick's clock minus the wait's until "
                           "(0 when on time).")
RESUME_LATENCY = Histogram("resume", "abstractruntime_celery_resume_latency_seconds",
                           "Time from an event accepted (resume_event) to the tick applying it.")
ALL: tuple[Histogram, ...] = (TICK, TIMER_LATENESS, RESUME_LATENCY)


class Histograms:
    """Records observations into a tick's counts (Redis coordination); without a Redis
    (the embedded mode) it records nothing: there is no cluster to scrape."""

    def __init__(self, client: Any, key: Optional[str]) -> None:
        self.client = client
        self.key = key

    def observe(self, ctx: TickContext, histogram: Histogram, seconds: float) -> None:
        """Count one observation in ``ctx``'s counts (sent with its lease release).
        Negative values (clock skew between workers) count as 0."""
        if self.client is None or self.key is None:
            return
        for name, amount in observation(histogram, seconds).items():
            ctx.queue.count(self.client, self.key, name, amount)


def observation(histogram: Histogram, seconds: float) -> dict[str, int]:
    """The ``{p}hist`` increments of one observation: its bucket, ``count`` and ``sum_us``
    (negative values, clock skew between workers, count as 0). A save that must carry it
    (an event's resume latency, only if the save applying it lands) takes these. Raises nothing."""
    seconds = max(0.0, float(seconds))
    return {histogram.bucket_of(seconds): 1, f"{histogram.name}:count": 1,
            f"{histogram.name}:sum_us": int(round(seconds * 1e6))}


def for_coordination(coord: Any) -> Histograms:
    """The recorder for ``coord`` (a ``Coordination``): Redis when it has a client."""
    client = getattr(coord, "client", None)
    return Histograms(client, coord.keys.hist if client is not None else None)


@dataclass
class Snapshot:
    """One histogram as read back: cumulative ``(upper bound, count)`` pairs ending with
    ``+Inf``, the sum in seconds, and the count."""

    buckets: list[tuple[str, int]]
    sum_s: float
    count: int


def read(raw: Mapping[str, Any], histogram: Histogram) -> Snapshot:
    """``histogram`` from the fields of ``{p}hist`` (HGETALL, decoded): missing buckets are 0."""
    def num(field: str) -> int:
        value = raw.get(field)
        return int(value) if value not in (None, "") else 0

    buckets: list[tuple[str, int]] = []
    total = 0
    for bound in histogram.buckets:
        total += num(f"{histogram.name}:{bound!r}")
        buckets.append((repr(bound), total))
    total += num(f"{histogram.name}:{INF}")
    buckets.append((INF, total))
    return Snapshot(buckets, num(f"{histogram.name}:sum_us") / 1e6, total)
