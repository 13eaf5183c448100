"""A Redis that forgets its scripts mid-tick must not make a tick apply an event to a stale
read of its run (regression: tick raised AbstractRuntime's StaleResumeError).

Found as a flaky failure of tests/test_regress_e_keyspace.py in CI (three test processes on
one Redis; tests/test_lease_and_sweep.py flushes that server's scripts): the tick of a run
with an early event raised ``StaleResumeError("Run is not waiting")``. Reproduced by running
that test's workload while another client ran SCRIPT FLUSH every 100 ms.

The cause (``context.py: WriteQueue.send_before``): a read made in a tick rides the pipeline
of the tick's queued writes, after them. The tick reached the wait (its save queued), then
``Runtime.resume`` loaded the run to apply the event: the pipeline was [EVALSHA save_run,
HMGET run]. With the scripts flushed, the save replied NOSCRIPT and ran nothing, the read
ran anyway and returned the run as it was before the save (RUNNING); the save was then run
again (``settle``), but the Runtime had the stale read and refused the resume. Fixed: a
read that went out behind a write the server answered NOSCRIPT is read again once that
write has run.

The flush is made here at the worst moment, deterministically: by the node that reaches
the wait, on a private ``redis-server`` (a restart does the same to every loaded script).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import Effect, EffectType, RunState, RunStatus, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

from abstractruntime_celery.driver import build
from devkit.redisproc import PrivateRedis
from tests._dispatchers import Recorder
from tests.conftest import make_settings

pytestmark = pytest.mark.timeout(60)


def _flush_then_wait(run: RunState, ctx: Any) -> StepPlan:
    """Reach the wait on ``vars.key``; the server forgets its scripts as this node runs."""
    redis.Redis.from_url(run.vars["flush"]).script_flush()
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": run.vars["key"]},
                                                  result_key="event"), next_node="done")


def _first_wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="first", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": run.vars["key"]},
                                                   result_key="first"), next_node="wait")


def _done(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="done", complete_output={"first": run.vars.get("first"), "event": run.vars.get("event")})


def _registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    reg.register(WorkflowSpec("flush-wait", "wait", {"wait": _flush_then_wait, "done": _done}))
    reg.register(WorkflowSpec("wait-flush-wait", "first",
                              {"first": _first_wait, "wait": _flush_then_wait, "done": _done}))
    return reg


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis_server = PrivateRedis(tmp_path / "redis", aof=False).start()
    try:
        yield redis_server
    finally:
        redis_server.stop()


def _driver(server: PrivateRedis, prefix: str) -> Any:
    # control_ttl_s: the Runtime's control probe answers from the tick's read (no read of its
    # own that would send the queued writes, and reload the scripts, before the resume's load)
    settings = make_settings(prefix, store_url=server.db_url(0), control_ttl_s=600.0)
    return build(settings, _registry(), Recorder(), distributed=True)


def test_an_early_event_is_applied_when_the_scripts_are_flushed_as_the_run_reaches_its_wait(
        server: PrivateRedis, prefix: str) -> None:
    driver = _driver(server, prefix)
    run_id = driver.start_run("flush-wait", vars={"key": "k", "flush": server.db_url(0)}, dispatch=False)
    driver.accept_event(run_id, "k", {"early": True}, dispatch=False)  # RUNNING: kept in the inbox

    outcome = driver.tick(run_id)  # reaches the wait (scripts flushed), then takes the event

    state = driver.load(run_id)
    assert outcome.status == "completed" and state.status == RunStatus.COMPLETED, (outcome, state.status)
    assert state.output == {"first": None, "event": {"early": True}}
    assert driver.coord.inbox.pending(run_id).events == []


def test_a_second_event_is_applied_in_the_same_tick_when_the_scripts_are_flushed_at_the_second_wait(
        server: PrivateRedis, prefix: str) -> None:
    driver = _driver(server, prefix)
    run_id = driver.start_run("wait-flush-wait", vars={"key": "k", "flush": server.db_url(0)}, dispatch=False)
    assert driver.tick(run_id).status == "waiting"
    driver.accept_event(run_id, "k", {"n": 1}, dispatch=False)
    driver.accept_event(run_id, "k", {"n": 2}, dispatch=False)  # for the second wait: an early one

    outcome = driver.tick(run_id)  # event 1, the second wait (scripts flushed), event 2

    state = driver.load(run_id)
    assert outcome.status == "completed" and state.status == RunStatus.COMPLETED, (outcome, state.status)
    assert state.output == {"first": {"n": 1}, "event": {"n": 2}}
    assert driver.coord.inbox.pending(run_id).events == []
