"""Adversarial: the embedded mode (``create_scheduled_runtime()`` with no app) around stop,
``auto_start=False`` and restarts.

Guarantees attacked: stop()/auto_start=False never strand an accepted event or a tick;
``stop(timeout)`` returns promptly; ``run(max_steps=N)`` returns after N steps; timers
never fire before their ``until`` and are never lost across a stop and a start.

``ScheduledRuntime.start`` says "Create a run without ticking it here (workers or the
embedded pool pick it up)". Called while the embedded pool is stopped, it sends no tick at
all (not even one held for the next ``start()``, as every other tick sent while stopped
is): once started, the pool leaves the run to the orphan sweep, ``orphan_grace_s`` later
(one minute by default; one hour here).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import Settings, create_scheduled_runtime
from tests.workflows_adv_g import registry

TIMEOUT = 20.0


def _embedded(**overrides: Any) -> Any:
    settings = Settings(orphan_grace_s=3600.0, **overrides)
    return create_scheduled_runtime(settings=settings, registry=registry, auto_start=False)


@pytest.mark.timeout(60)
def test_a_run_started_while_the_embedded_pool_is_stopped_is_ticked_once_the_pool_starts() -> None:
    sr = _embedded()
    try:
        run_id = sr.start(workflow=registry.get("rd-quick"), vars={})
        sr.start_scheduler()
        state = sr.wait_for(run_id, timeout=TIMEOUT, until=lambda r: r.status != RunStatus.RUNNING)
        assert state.status == RunStatus.COMPLETED
    finally:
        sr.stop()


@pytest.mark.timeout(60)
def test_a_run_started_between_stop_and_start_is_ticked_once_the_pool_starts_again() -> None:
    sr = _embedded()
    sr.start_scheduler()
    try:
        sr.stop()
        run_id = sr.start(workflow=registry.get("rd-quick"), vars={})
        sr.start_scheduler()
        state = sr.wait_for(run_id, timeout=TIMEOUT, until=lambda r: r.status != RunStatus.RUNNING)
        assert state.status == RunStatus.COMPLETED
    finally:
        sr.stop()


@pytest.mark.timeout(60)
def test_stop_returns_within_its_timeout_while_a_node_runs_for_much_longer() -> None:
    # Holds: stop(1) with a 12 s node in the pool returns in well under 10 s.
    sr = create_scheduled_runtime(settings=Settings(), registry=registry)
    try:
        run_id, handle = sr.run(registry.get("slow"), vars={"sleep": 12.0}, wait=False)
        started = time.monotonic()
        sr.stop(timeout=1.0)
        took = time.monotonic() - started
        assert took < 10.0, f"stop(timeout=1) took {took:.1f}s"
    finally:
        sr.stop()


@pytest.mark.timeout(60)
def test_a_timer_held_across_stop_and_start_fires_once_and_never_before_its_until() -> None:
    # Holds: the timer tick held at stop() fires early after start() (a no-op), re-arms, and
    # the run wakes at or after its until, once.
    sr = create_scheduled_runtime(settings=Settings(), registry=registry)
    try:
        run_id, state = sr.run(registry.get("timer"), vars={"delay": 2.0})
        assert state.status == RunStatus.WAITING
        sr.stop()
        time.sleep(0.3)
        sr.start_scheduler()
        done = sr.wait_for(run_id, timeout=TIMEOUT, until=lambda r: r.status != RunStatus.WAITING)
        assert done.status == RunStatus.COMPLETED
        until = datetime.fromisoformat(done.output["until"]).timestamp()
        assert done.output["woke_at"] >= until, f"woke {until - done.output['woke_at']:.3f}s before its until"
    finally:
        sr.stop()


@pytest.mark.timeout(60)
def test_run_and_tick_with_max_steps_return_after_exactly_that_many_steps() -> None:
    # Holds: run(max_steps=N) and tick(max_steps=N) are the seed's tick(max_steps=N); the run
    # left RUNNING is not driven further by the call.
    sr = _embedded()
    try:
        run_id, state = sr.run(registry.get("steps"), vars={"n": 50}, max_steps=5)
        assert state.status == RunStatus.RUNNING and state.vars["i"] == 5
        state = sr.tick(run_id, max_steps=7)
        assert state.status == RunStatus.RUNNING and state.vars["i"] == 12
    finally:
        sr.stop()


@pytest.mark.timeout(60)
def test_run_and_tick_with_max_steps_zero_take_no_step_as_the_seeds_runtime_tick() -> None:
    sr = _embedded()
    try:
        run_id, state = sr.run(registry.get("steps"), vars={"n": 500}, max_steps=0)
        assert state.status == RunStatus.RUNNING and state.vars.get("i", 0) == 0, \
            f"run(max_steps=0) took {state.vars.get('i', 0)} steps"
        state = sr.tick(run_id, max_steps=0)
        assert state.vars.get("i", 0) == 0, f"tick(max_steps=0) took {state.vars.get('i', 0)} steps"
    finally:
        sr.stop()
