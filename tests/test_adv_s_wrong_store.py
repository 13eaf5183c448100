"""A worker that reads another store than its callers (adversarial, round S).

A worker whose ``key_prefix`` (or store database) differs from the callers' passes every
start check: its registry loads, its store and coordination answer, its prefix holds no
other layout. It says "ready" and takes the callers' tick messages, finds no such run,
logs one warning ("tick for unknown run ... dropped") and acknowledges them. The runs stay
RUNNING for ever: the only sweep that could move them is one on the callers' prefix.

Real Redis, a real in-process Celery worker (the start checks of a ``celery worker``
process would not see it either: nothing in them compares the two).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import RunWaitTimeout, create_scheduled_runtime
from tests.conftest import make_app
from tests.workflows import registry

pytestmark = pytest.mark.timeout(60)


@pytest.mark.xfail(strict=True, raises=RunWaitTimeout,
                   reason="a worker on another key prefix than its callers starts ready and drops their ticks as "
                          "'unknown run': their runs never move")
def test_a_worker_on_another_prefix_does_not_drop_the_callers_runs(settings: Any, prefix: str) -> None:
    from celery.contrib.testing.worker import start_worker

    worker_settings = replace(settings, key_prefix=f"{prefix}typo:")
    worker_app = make_app(worker_settings)
    caller = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry,
                                      auto_start=False)
    try:
        with start_worker(worker_app, pool="threads", concurrency=2, perform_ping_check=False,
                          queues=[settings.queue], shutdown_timeout=10, loglevel="WARNING"):
            run_id = caller.start(workflow=registry.get("steps"), vars={"n": 1})
            state = caller.wait_for(run_id, timeout=5.0, until=lambda r: r.status != RunStatus.RUNNING)
        assert state.status == RunStatus.COMPLETED
    finally:
        caller.stop()
