"""Adversarial (round P): on Redis, a node that loses its lease, queues a save of its run and
then raises resets the run's failure row every time, though none of its saves ever landed:
the run is never failed (neither as "lease lost N times" nor by ``tick_max_attempts``).

Round O: ``Ticker._failed`` flushes the tick's queued writes before it counts the attempt,
suppressing a refusal ("raised later"). But ``progressed`` was computed by the caller before
that flush, from ``ctx.last_saved_updated``, which ``RedisRunStore._write`` sets when a save
is *queued*, not when it lands. So the refused save (lease lost) still makes the failure
"fresh": ``add_attempt(fresh=True)`` sets the row to 1. The tick then raises the node's error,
so ``_refused`` (which would count the lost lease) never runs. A node that outlives its lease
(the case ``_refused`` exists for), checkpoints, then raises (its downstream timed out) loops
forever at the first backoff step; its checkpoint never lands.

(SQLite with Redis coordination held: there the node's save is sent at once and raises
``LeaseLostError``, which ``_refused`` counts; kept as a passing test.)

At fault: tick.py ``Ticker._step`` / ``Ticker._failed`` (``progressed`` from queued, not landed,
saves; the flush's refusal is suppressed and not counted).

Deterministic, in-process: a recording dispatcher; ``Driver.tick`` by hand; the node deletes
its own lease key (as its expiry under a frozen worker would) through ``HOOKS``.
"""

from __future__ import annotations

from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._adv_p import Recorder, attempts, due, sqlite_extra
from tests.conftest import fx_count, make_settings
from tests.workflows_adv_p import HOOKS, registry

pytestmark = pytest.mark.timeout(60)


def _drive(store: str, prefix: str, fx: str, tmp_path: Any) -> tuple[Any, str]:
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=3,
                             **sqlite_extra(store, tmp_path))
    driver = build(settings, registry, Recorder(), distributed=True)
    run_id = driver.start_run("ap-save-then-fail", vars={"fx": fx}, dispatch=False)
    HOOKS[run_id] = lambda rid: driver.coord.client.delete(driver.coord.keys.lease(rid))
    try:
        for _ in range(5):  # 5 tries, each losing its lease, with tick_max_attempts=3
            due(driver, run_id)
            try:
                driver.tick(run_id, reason="retry")
            except RuntimeError:
                pass  # the node's error
            if driver.load(run_id).status == RunStatus.FAILED:
                break
    finally:
        HOOKS.pop(run_id, None)
    return driver, run_id


def test_redis_lost_lease_then_failing_node_is_never_failed(prefix: str, fx: str, tmp_path: Any) -> None:
    driver, run_id = _drive("redis", prefix, fx, tmp_path)
    state = driver.load(run_id)
    assert state.status == RunStatus.FAILED or state.vars.get("progress") is None  # nothing landed
    assert state.status == RunStatus.FAILED, (
        f"{fx_count(fx, run_id, 'tries')} tries lost their lease and failed, none of their saves landed, "
        f"and the run is {state.status.value} with attempts note {attempts(driver, run_id)!r}")


def test_sqlite_lost_lease_then_failing_node_is_failed(prefix: str, fx: str, tmp_path: Any) -> None:
    driver, run_id = _drive("sqlite", prefix, fx, tmp_path)
    assert driver.load(run_id).status == RunStatus.FAILED
