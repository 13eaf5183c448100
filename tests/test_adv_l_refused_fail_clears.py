"""Adversarial: at ``tick_max_attempts`` ``Ticker._failed`` marks the run FAILED
(``fail_run``: a queued, fenced and control-checked save) and queues
``clear_attempts(run_id, ctx)`` right behind it. Round K made that clear a normal queued
write guarded by the *lease* only (``lua/marks_clear.lua``), not by the save before it. When
a pause lands during that last failing tick, the FAILED save is refused
(``RunControlledError``: the pause stands) but the clear, in the same pipeline, still runs:
the lease is the tick's. The row of failures is erased by a tick that moved nothing, which
round K set out to stop ("a pause during a backoff no longer clears the failure notes"):
after the resume the always-failing node gets ``tick_max_attempts`` more tries
(``2 * tick_max_attempts`` in all) instead of the run failing on the next one. (Before round K
the clear rode after the release, unconditionally: the same.)

At fault: tick.py ``Ticker._failed`` (``clear_attempts`` queued after ``fail_run`` whatever its
save becomes) with coord/redis.py ``RedisMarks._clear`` (fenced by the lease only; shared Redis
store: nothing ties it to the commit, as ``if_saved.lua`` does for ``moved``).

Deterministic, in-process: the node itself pauses its run (``Control.pause``: outside the tick,
compare-and-set) on its last allowed try, then raises.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Optional

import pytest
from abstractruntime import RunStatus

import tests.workflows_adv_l as wf
from abstractruntime_celery.driver import build
from tests.conftest import fx_count, make_settings
from tests.workflows_adv_l import registry

pytestmark = pytest.mark.timeout(60)
MAX = 3


class Recorder:
    min_eta_s = 0.0

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        pass


def test_a_pause_during_the_last_failing_tick_does_not_restart_the_row(prefix: str, fx: str) -> None:
    settings = make_settings(prefix, tick_max_attempts=MAX, retry_backoff_s=30.0, retry_jitter=False)
    driver = build(settings, registry, Recorder(), distributed=True)

    def hook(run: Any) -> None:
        if fx_count(fx, run.run_id, "a") == MAX:
            driver.control.pause(run.run_id)  # lands during the last allowed try
        raise RuntimeError("a is down")

    wf.HOOK = hook
    try:
        run_id = driver.start_run("al-gated", vars={"fx": fx}, dispatch=False)
        for n in range(1, MAX + 1):
            driver.coord.marks.back_off(run_id, time.time() - 1)  # (each backoff is over)
            with pytest.raises(RuntimeError, match="a is down"):
                driver.tick(run_id, reason="start" if n == 1 else "retry")
        run = driver.load(run_id)
        assert run.status != RunStatus.FAILED and fx_count(fx, run_id, "a") == MAX  # the pause stood
        left = driver.coord.client.get(driver.coord.keys.attempts(run_id))
        driver.control.resume(run_id)
        tries = MAX
        while driver.load(run_id).status not in (RunStatus.FAILED, RunStatus.COMPLETED) and tries < 3 * MAX:
            driver.coord.marks.back_off(run_id, time.time() - 1)
            try:
                driver.tick(run_id, reason="retry")
            except RuntimeError:
                pass
            tries = fx_count(fx, run_id, "a")
    finally:
        wf.HOOK = None
    assert driver.load(run_id).status == RunStatus.FAILED
    assert tries == MAX + 1, (
        f"tick_max_attempts={MAX}: the node failed {MAX} times in a row, the last refused FAILED by a pause; after "
        f"the resume it ran {tries - MAX} more times before FAILED (attempts note after the paused tick: {left!r})")
