"""Adversarial (retention): clocks of different processes disagree.

The end time retention counts from is the run's ``updated_at``, written with the clock of
the worker that ended the run (``save_run.lua`` scores ``{p}ended`` with it; the other
stores read it back), and the cutoff is ``time.time()`` of the process that sweeps. So a
worker whose clock is behind by more than ``retention_s`` has its runs deleted by the next
sweep, a moment after they ended; one whose clock is ahead keeps them that much longer.
Redis ``TIME`` (one clock for every process) is not used for either side.

The worker's clock is moved with time-machine around its tick only; the sweep runs on the
real clock, as a second process would.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import time_machine
from abstractruntime import RunStatus

from abstractruntime_celery.sweep import sweep
from tests.test_retention import _driver

RETENTION_S = 3600.0
SKEW_S = 2 * RETENTION_S


@pytest.mark.xfail(strict=True, reason="retention counts from the ending worker's clock: a worker whose clock "
                                       "is behind by more than retention_s has its runs deleted at once")
@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_a_run_ended_by_a_worker_whose_clock_is_behind_is_not_deleted_at_once(prefix: str, tmp_path: Any,
                                                                                store: str) -> None:
    overrides: dict[str, Any] = {"retention_s": RETENTION_S}
    if store == "sqlite":
        overrides["store_url"] = f"sqlite:///{tmp_path}/runs.db"
    driver = _driver(prefix, **overrides)
    with time_machine.travel(time.time() - SKEW_S, tick=True):  # the worker's clock is 2 h behind
        rid = driver.start_run("quick", dispatch=False)
        driver.tick(rid)
    assert driver.load(rid).status == RunStatus.COMPLETED
    report = sweep(driver, force=True)  # a second later, on a right clock
    assert driver.run_store.load(rid) is not None, \
        f"a run that ended a second ago was deleted (retention_s={RETENTION_S:g}); sweep: {report}"


@pytest.mark.xfail(strict=True, reason="retention counts from the ending worker's clock: a worker whose clock "
                                       "is ahead keeps its runs that much longer (a year ahead: a year)")
def test_a_run_ended_by_a_worker_whose_clock_is_ahead_is_deleted_retention_s_after_it_ended(prefix: str) -> None:
    driver = _driver(prefix, retention_s=RETENTION_S)
    with time_machine.travel(time.time() + SKEW_S, tick=True):  # the worker's clock is 2 h ahead
        rid = driver.start_run("quick", dispatch=False)
        driver.tick(rid)
    assert driver.load(rid).status == RunStatus.COMPLETED
    with time_machine.travel(time.time() + RETENTION_S + 60, tick=True):  # a right clock, retention_s later
        report = sweep(driver, force=True)
    assert driver.run_store.load(rid) is None, f"kept {RETENTION_S:g}s after it ended; sweep: {report}"
