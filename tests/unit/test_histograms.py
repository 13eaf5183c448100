"""Histogram fields as the tick writes them and the collector reads them back (no service)."""

from __future__ import annotations

from abstractruntime_celery.metrics.histograms import INF, TICK, read


def test_an_observation_lands_in_the_first_bucket_whose_bound_holds_it() -> None:
    assert TICK.bucket_of(0.0) == "tick:0.001"
    assert TICK.bucket_of(0.001) == "tick:0.001"  # upper bounds are inclusive (Prometheus "le")
    assert TICK.bucket_of(0.0011) == "tick:0.0025"
    assert TICK.bucket_of(300.0) == "tick:300.0"
    assert TICK.bucket_of(300.5) == f"tick:{INF}"


def test_read_accumulates_buckets_and_turns_microseconds_into_seconds() -> None:
    raw = {"tick:0.001": "2", "tick:0.5": "1", f"tick:{INF}": "1", "tick:count": "4", "tick:sum_us": "1500000",
           "timer:1.0": "9"}  # (another histogram's field is not counted)
    snap = read(raw, TICK)
    bounds = dict(snap.buckets)
    assert bounds["0.001"] == 2 and bounds["0.25"] == 2 and bounds["0.5"] == 3 and bounds["300.0"] == 3
    assert snap.buckets[-1] == (INF, 4) and snap.count == 4 and snap.sum_s == 1.5
    assert read({}, TICK).count == 0 and read({}, TICK).buckets[-1] == (INF, 0)
