"""Adversarial (round Q), round P's "only a save outside a node handler ends the failure row"
(``tick.py: _SavedFirst.get_node`` wraps the handler, ``TickContext.in_node`` / ``moves`` /
``moved``), scenarios that held:

* the wrapper around a node that is a bound method, a callable object, a functools.partial,
  or is reached through a WorkflowSpec subclass whose ``get_node`` calls ``self.get_node``
  (wrapped twice): each checkpoints then raises, and the run is FAILED after exactly
  ``tick_max_attempts`` tries (the checkpoint is never a move);
* ``in_node`` is back to 0 after a handler raised, also when wrapped twice;
* a node looping on itself (next_node == itself) that fails every other try is never FAILED
  (each successful iteration's save moves it), with and without a checkpoint in the node,
  with ``tick_max_steps`` 1 or the default; two failures in a row still fail it;
* a WAITING run whose deadline resolved in memory and whose next node failed (row 1, still
  WAITING in the store) then takes an event: the event's save starts a new row;
* the embedded mode (memory store, in-process coordination): a self-looping node failing two
  of every three tries completes 30 iterations; three in a row fail it.

Deterministic, in-process: a recording dispatcher; ``Driver.tick`` driven by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.context import TickContext, entered
from abstractruntime_celery.driver import build
from abstractruntime_celery.tick import saved_first
from tests._adv_p import Recorder, attempts, due, sqlite_extra
from tests.conftest import fx_count, make_settings
from tests.workflows_adv_q import registry

pytestmark = pytest.mark.timeout(60)


def _driver(prefix: str, tmp_path: Any, store: str = "redis", attempts_: int = 3, **extra: Any) -> Any:
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=attempts_,
                             **sqlite_extra(store, tmp_path), **extra)
    return build(settings, registry, Recorder(), distributed=True)


def _retry_until_ended(driver: Any, run_id: str, limit: int = 60) -> int:
    ticks = 0
    while driver.load(run_id).status not in (RunStatus.COMPLETED, RunStatus.FAILED) and ticks < limit:
        ticks += 1
        due(driver, run_id)
        try:
            driver.tick(run_id, reason="retry")
        except RuntimeError:
            pass
    return ticks


@pytest.mark.parametrize("wf", ["aq-bound", "aq-callable", "aq-partial", "aq-alias"])
def test_handler_shapes_checkpoint_then_fail_reach_failed(wf: str, prefix: str, fx: str, tmp_path: Any) -> None:
    driver = _driver(prefix, tmp_path)
    run_id = driver.start_run(wf, vars={"fx": fx}, dispatch=False)
    _retry_until_ended(driver, run_id, limit=6)
    assert driver.load(run_id).status == RunStatus.FAILED
    assert fx_count(fx, run_id, "tries") == 3


def test_in_node_back_to_zero_after_a_raise() -> None:
    seen: list[int] = []

    def boom(run: Any, rctx: Any) -> Any:
        seen.append(ctx.in_node)
        raise ValueError("boom")

    spec = saved_first(registry.get("aq-alias"))
    object.__setattr__(spec, "nodes", {"work": boom})  # (the clone's own attribute)
    ctx = TickContext("r-in-node")
    with entered(ctx):
        for node_id in ("work", "alias:work"):  # wrapped once; twice (the subclass re-enters get_node)
            with pytest.raises(ValueError):
                spec.get_node(node_id)(object(), None)
            assert ctx.in_node == 0
    assert seen == [1, 2]


@pytest.mark.parametrize("store,steps,ckpt", [("redis", None, False), ("redis", 1, True),
                                              ("sqlite", None, True), ("sqlite", 1, False)])
def test_self_loop_failing_every_other_try_completes(store: str, steps: Any, ckpt: bool, prefix: str, fx: str,
                                                     tmp_path: Any) -> None:
    extra = {"tick_max_steps": steps} if steps else {}
    driver = _driver(prefix, tmp_path, store, attempts_=2, **extra)
    run_id = driver.start_run("aq-loop", vars={"fx": fx, "pattern": "FS", "n": 5, "ckpt": ckpt}, dispatch=False)
    _retry_until_ended(driver, run_id)
    assert driver.load(run_id).status == RunStatus.COMPLETED
    assert fx_count(fx, run_id, "ok") == 5
    other = driver.start_run("aq-loop", vars={"fx": fx, "pattern": "SFF", "n": 5, "ckpt": ckpt}, dispatch=False)
    _retry_until_ended(driver, other)
    assert driver.load(other).status == RunStatus.FAILED and fx_count(fx, other, "tries") == 3


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_event_after_in_memory_deadline_failure_starts_a_new_row(store: str, prefix: str, fx: str,
                                                                 tmp_path: Any) -> None:
    driver = _driver(prefix, tmp_path, store, attempts_=2)
    run_id = driver.start_run("aq-wait-deadline-fail", vars={"fx": fx}, dispatch=False)
    driver.tick(run_id, reason="start")  # waits on "go", its deadline long past
    due(driver, run_id)
    with pytest.raises(RuntimeError, match="after is down"):
        driver.tick(run_id, reason="timer")  # the timeout resolves in memory; "after" fails
    assert driver.load(run_id).status == RunStatus.WAITING and attempts(driver, run_id) == "1"
    driver.accept_event(run_id, "go", {"x": 1}, dispatch=False)
    due(driver, run_id)
    with pytest.raises(RuntimeError, match="after is down"):
        driver.tick(run_id, reason="retry")  # the event lands (a move), "after" fails again
    state = driver.load(run_id)
    assert state.status == RunStatus.RUNNING and state.vars.get("ev") == {"x": 1}
    assert attempts(driver, run_id) == "1"


def test_embedded_memory_store_two_of_three_failing(prefix: str, fx: str) -> None:
    settings = make_settings(prefix, store_url="memory://", coord_url="", retry_backoff_s=30.0,
                             retry_jitter=False, tick_max_attempts=3)
    driver = build(settings, registry, Recorder(), distributed=False)

    def retry(run_id: str) -> None:
        for _ in range(120):
            if driver.load(run_id).status in (RunStatus.COMPLETED, RunStatus.FAILED):
                return
            driver.coord.marks._notes.pop(("backoff", run_id), None)  # the backoff is due
            try:
                driver.tick(run_id, reason="retry")
            except RuntimeError:
                pass

    run_id = driver.start_run("aq-loop", vars={"fx": fx, "pattern": "FFS", "n": 30, "ckpt": True}, dispatch=False)
    retry(run_id)
    assert driver.load(run_id).status == RunStatus.COMPLETED and fx_count(fx, run_id, "ok") == 30
    bad = driver.start_run("aq-loop", vars={"fx": fx, "pattern": "FFFS", "n": 3}, dispatch=False)
    retry(bad)
    assert driver.load(bad).status == RunStatus.FAILED and fx_count(fx, bad, "tries") == 3
