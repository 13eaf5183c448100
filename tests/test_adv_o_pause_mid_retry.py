"""Adversarial (round O): a pause that lands during a retry which has already committed
progress leaves the failure row of the node that was retried.

A node ("fail") fails ``tick_max_attempts - 1`` times. Its retry succeeds and commits (the
tick's queued save goes out before the next node runs), then a pause lands while the next
node runs (a client's ``pause``, as from another process at that moment). The tick's later
save is refused (``RunControlledError``) and the tick ends quietly: the clear of the failure
notes rides only the tick's *last* commit (``lua/if_saved.lua``), so the attempts of "fail"
stay although a commit of that tick moved the run past it. After ``resume``, the first
failure of another node ("flaky", which fails once) is counted on top of them and the run is
FAILED at once, a node that fails once in a run that is then healthy.

README / reliability rounds J-L: the failure notes count failures *in a row*; a tick that
moved the run clears them with its commit.

At fault: tick.py ``Ticker._step`` / ``_refused`` (``clear_marks`` is set only after the
Runtime's tick returns, and a refused tail drops it although an earlier save of the same tick
held).

Deterministic, in-process: a recording dispatcher; ``Driver.tick`` delivers by hand; the pause
is made by the node itself through ``HOOKS`` (outside the tick, as control calls are).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_o import HOOKS, registry

pytestmark = pytest.mark.timeout(60)


def _due(driver: Any, run_id: str) -> None:
    """The backoff's end has come (its note says now)."""
    client, key = driver.coord.client, driver.coord.keys.backoff(run_id)
    if client.exists(key):
        client.set(key, repr(time.time() - 1.0), px=client.pttl(key))


def test_a_pause_during_a_retry_that_moved_the_run_keeps_the_old_failure_row(prefix: str, fx: str) -> None:
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=3)
    rec = Recorder()
    driver = build(settings, registry, rec, distributed=True)
    run_id = driver.start_run("ao-fail-pause-flaky", vars={"fx": fx, "fail_times": 2, "flaky_fails": 1},
                              dispatch=False)
    HOOKS[run_id] = lambda rid: driver.control.pause(rid)
    try:
        for _ in range(2):  # "fail" fails twice (attempts 2 of 3)
            _due(driver, run_id)
            with pytest.raises(RuntimeError, match="downstream"):
                driver.tick(run_id, reason="retry")
        _due(driver, run_id)
        driver.tick(run_id, reason="retry")  # "fail" passes and commits; a pause lands in "flaky"
        assert fx_count(fx, run_id, "tries") == 3 and fx_count(fx, run_id, "flaky") == 1
        state = driver.load(run_id)
        assert state.current_node == "flaky" or state.status == RunStatus.WAITING
        driver.control.resume(run_id)
        try:
            driver.tick(run_id, reason="resumed")  # "flaky" fails once: its first failure
        except RuntimeError:
            pass
        state = driver.load(run_id)
        assert fx_count(fx, run_id, "flaky") == 2
        assert state.status != RunStatus.FAILED, (
            f"the run is FAILED ({state.error}) on the first failure of 'flaky': the two failures "
            "of 'fail', passed and committed since, were still counted")
    finally:
        HOOKS.pop(run_id, None)


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_a_lost_lease_after_a_retry_that_moved_the_run_fails_it(store: str, prefix: str, fx: str,
                                                                  tmp_path: Any) -> None:
    """The same with the lease lost (expired under a frozen worker, say) in the node after the
    committed retry: ``_refused`` adds an attempt to the row of "fail" and, at
    ``tick_max_attempts``, fails the run, though "fail" passed and committed in that tick.
    (SQLite with Redis coordination too: there the save that lands clears the row.)"""
    extra: dict[str, Any] = {}
    if store == "sqlite":
        extra = {"store_url": f"sqlite:///{tmp_path}/runs.db", "coord_url": STORE_URL}
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=3, **extra)
    rec = Recorder()
    driver = build(settings, registry, rec, distributed=True)
    run_id = driver.start_run("ao-fail-pause-flaky", vars={"fx": fx, "fail_times": 2, "flaky_fails": 0},
                              dispatch=False)
    HOOKS[run_id] = lambda rid: driver.coord.client.delete(driver.coord.keys.lease(rid))
    try:
        for _ in range(2):
            _due(driver, run_id)
            with pytest.raises(RuntimeError, match="downstream"):
                driver.tick(run_id, reason="retry")
        _due(driver, run_id)
        out = driver.tick(run_id, reason="retry")  # "fail" passes and commits; the lease is lost in "flaky"
        assert out.skipped == "lease_lost" and fx_count(fx, run_id, "tries") == 3
        state = driver.load(run_id)
        assert state.status != RunStatus.FAILED, (
            f"the run is FAILED ({state.error}) by one lost lease after 'fail' passed and committed")
    finally:
        HOOKS.pop(run_id, None)
