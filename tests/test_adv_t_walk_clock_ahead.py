"""Adversarial (retention): one sweep by a worker whose clock is ahead stops retention.

The stores without an index of ended runs (JSON files, SQLite, memory) begin a retention
walk at most every ``retention.every_s``, and note when the last one began in the sweep
cursors (in Redis with ``coord_url``: shared by the cluster). A worker whose clock is a
year ahead sweeps once and notes a time a year from now; every later sweep, on a right
clock, finds "less than every_s since the last walk" (a negative age) and begins none,
so no ended run is deleted for a year.
"""

from __future__ import annotations

import time
from typing import Any

import time_machine

from abstractruntime_celery.sweep import sweep
from tests.conftest import STORE_URL
from tests.test_retention import _driver, _finished


def test_a_sweep_on_a_clock_far_ahead_does_not_stop_retention_on_the_others(prefix: str, tmp_path: Any) -> None:
    driver = _driver(prefix, retention_s=1000.0, store_url=f"sqlite:///{tmp_path}/runs.db", coord_url=STORE_URL)
    with time_machine.travel(time.time() + 365 * 86400, tick=True):  # one worker's clock is a year ahead
        sweep(driver, force=True)
    [rid] = _finished(driver, 1)
    run = driver.run_store.load(rid)
    run.updated_at = "2000-01-01T00:00:00+00:00"  # ended long ago
    driver.run_store.save(run)
    for _ in range(3):  # the right clocks sweep on
        sweep(driver, force=True)
    assert driver.run_store.load(rid) is None, "retention stopped after one sweep on a clock a year ahead"
