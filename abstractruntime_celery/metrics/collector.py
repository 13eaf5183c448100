"""The cluster's metrics, read from Redis at scrape time by a custom collector.

Nothing is kept in the serving process: counters come from ``{p}stats`` (the numbers
``abstractruntime-celery stats`` prints), histograms from ``{p}hist``
(``histograms.py``), gauges from the indexes the store keeps anyway (ZCARD/ZCOUNT:
a bounded cost whatever the number of runs). One scrape is one pipeline, one round
trip. Every worker (and every prefork child) writes to the same keys, so any one
endpoint shows the whole cluster.
"""

from __future__ import annotations

import re
import time
from dataclasses import fields
from typing import Any, Iterator

from abstractruntime import RunStatus
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..isotime import to_epoch
from ..keys import Keys
from ..stats import SchedulerStats
from . import histograms

NS = "abstractruntime_celery"

#: What each counter of ``{p}stats`` means, for its HELP line (others: their name).
COUNTER_HELP: dict[str, str] = {
    "runs_started": "Runs created.",
    "runs_resumed": "Waiting runs a tick moved on (a timer, an event, a child's result).",
    "runs_failed": "Errors reported (stats.errors), failed runs among them.",
    "poll_cycles": "Sweeps completed (the seed's poll cycles).",
    "ticks": "Ticks that held a run's lease and read it.",
    "transitions": "Ticks whose commit moved a run.",
    "duplicates": "Deliveries that found nothing to do.",
    "early": "Deliveries before their run was due (a timer early, a retry before its backoff).",
    "lease_busy": "Deliveries that found the run's lease held by another tick.",
    "lease_lost": "Ticks that lost their lease mid-tick (their writes refused).",
    "controlled": "Tick saves refused because a cancel or pause landed mid-tick.",
    "events_refused": "Events refused at the door (paused run, full inbox, ...).",
    "events_quarantined": "Unreadable inbox entries moved aside.",
    "events_accepted": "Events accepted into an inbox.",
    "events_applied": "Events applied to their run.",
    "event_ticks_unsent": "Stored events whose tick the broker refused (the sweep re-sends it).",
    "timers_armed": "Timer messages sent with a broker ETA.",
    "orphans_recovered": "RUNNING runs without a lease the sweep ticked again.",
    "parents_resumed": "Parents resumed with their child's result.",
    "unknown_workflow": "Ticks of a run whose workflow the worker does not know.",
    "wrong_store": "Tick messages put back: sent for another key prefix or store than this worker's.",
    "tick_errors": "Ticks whose node raised.",
    "sweeps": "Sweeps started.",
    "sweeps_skipped": "Sweeps skipped (another held the interval's lock).",
}
#: Counters shown even before they first count (dashboards find every series).
KNOWN_COUNTERS: tuple[str, ...] = tuple(f.name for f in fields(SchedulerStats)
                                       if isinstance(f.default, int) and not isinstance(f.default, bool))
_NOT_A_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class ClusterCollector(Collector):
    """Yields every metric of the cluster under ``keys``' prefix, read from ``client``.
    ``overdue_after_s``: a deadline this far past counts as overdue (the sweep interval:
    both its ETA message and a sweep have missed it)."""

    def __init__(self, client: Any, keys: Keys, overdue_after_s: float) -> None:
        self.client = client
        self.keys = keys
        self.overdue_after_s = overdue_after_s

    def read(self) -> dict[str, Any]:
        """Everything one scrape shows, in one round trip.

        Raises:
            redis.RedisError: Redis did not answer (the scrape fails: no stale numbers).
        """
        k, now = self.keys, time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(k.stats)
        pipe.hgetall(k.hist)
        for status in RunStatus:
            pipe.zcard(k.index("ix-status", status.value))
        pipe.zcard(k.due)
        pipe.zcount(k.due, "-inf", now)
        pipe.zcount(k.due, "-inf", now - self.overdue_after_s)
        pipe.zcard(k.inbox_runs)
        pipe.zrange(k.inbox_runs, 0, 0, withscores=True)
        stats, hist, *rest = pipe.execute()
        n = len(RunStatus)
        runs = {status.value: int(count) for status, count in zip(RunStatus, rest[:n])}
        pending, due, overdue, inbox_runs, oldest = rest[n:]
        return {
            "now": now,
            "stats": {_text(f): _text(v) for f, v in stats.items()},
            "hist": {_text(f): _text(v) for f, v in hist.items()},
            "runs": runs, "timers_pending": int(pending), "timers_due": int(due), "timers_overdue": int(overdue),
            "inbox_runs": int(inbox_runs), "inbox_oldest": float(oldest[0][1]) if oldest else None,
        }

    def collect(self) -> Iterator[Metric]:
        data = self.read()
        now, stats = data["now"], dict(data["stats"])
        last_poll = stats.pop("last_poll_at", None)
        for name in dict.fromkeys([*KNOWN_COUNTERS, *sorted(stats)]):
            try:
                value = int(stats.get(name, 0) or 0)
            except ValueError:
                continue  # not a counter
            metric = f"{NS}_{_NOT_A_NAME.sub('_', name)}"
            yield CounterMetricFamily(metric, COUNTER_HELP.get(name, f"Cluster counter {name}."), value=value)
        for h in histograms.ALL:
            snap = histograms.read(data["hist"], h)
            yield HistogramMetricFamily(h.metric, h.help, buckets=snap.buckets, sum_value=snap.sum_s)
        runs = GaugeMetricFamily(f"{NS}_runs", "Runs in the store, by status (the status index).",
                                 labels=["status"])
        for status, count in data["runs"].items():
            runs.add_metric([status], count)
        yield runs
        yield GaugeMetricFamily(f"{NS}_timers_pending", "Waiting runs with a deadline (the due index).",
                                value=data["timers_pending"])
        yield GaugeMetricFamily(f"{NS}_timers_due", "Waiting runs whose deadline has passed, not yet taken up.",
                                value=data["timers_due"])
        yield GaugeMetricFamily(f"{NS}_timers_overdue", "Deadlines passed more than a sweep interval ago, "
                                "not yet taken up (paused runs' too).", value=data["timers_overdue"])
        yield GaugeMetricFamily(f"{NS}_inbox_runs", "Runs with unapplied events in their inbox.",
                                value=data["inbox_runs"])
        oldest = data["inbox_oldest"]
        yield GaugeMetricFamily(f"{NS}_inbox_oldest_event_age_seconds",
                                "Age of the oldest unapplied event (0: none).",
                                value=max(0.0, now - oldest) if oldest is not None else 0.0)
        age = GaugeMetricFamily(f"{NS}_last_sweep_age_seconds",
                                "Seconds since a sweep last completed (absent: none has).")
        if last_poll:
            try:
                age.add_metric([], max(0.0, now - to_epoch(last_poll)))
            except ValueError:
                pass
        yield age
