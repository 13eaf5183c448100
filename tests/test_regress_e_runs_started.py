"""``runs_started`` counts runs created, not start messages (regression, branch regress-e).

Before: a start message delivered again (a killed worker's message comes back) with an
explicit ``run_id`` ticked the run the first delivery had created, and counted it as
started once more.
"""

from __future__ import annotations

import uuid
from typing import Any

from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from devkit.procs import wait_for
from tests.conftest import make_app, make_settings
from tests.workflows import registry

START_TASK = "abstractruntime.start"


def test_a_start_delivered_twice_with_an_explicit_run_id_counts_one_run_started(prefix: str) -> None:
    settings = make_settings(prefix)
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        run_id = f"job-{uuid.uuid4().hex[:8]}"
        for _ in range(3):   # what the start task does on each delivery of one message
            rid, _outcome = sr.driver.start_and_tick("event", vars={"key": "k"}, run_id=run_id)
            assert rid == run_id
        assert sr.get_state(run_id).status == RunStatus.WAITING
        assert sr.stats.runs_started == 1
    finally:
        sr.stop()


def test_a_start_message_with_a_run_id_delivered_twice_to_a_worker_counts_one_run_started(
        settings: Any, celery_app: Any, worker: Any) -> None:
    sr = create_scheduled_runtime(app=celery_app, settings=settings, registry=registry, auto_start=False)
    try:
        run_id = f"job-{uuid.uuid4().hex[:8]}"
        task_id = uuid.uuid4().hex
        # one message, delivered again once the first delivery is done (a killed worker's comes back)
        celery_app.send_task(START_TASK, args=["event", {"key": "k"}, run_id], queue=settings.queue, task_id=task_id)
        wait_for(lambda: (sr.driver.run_store.load(run_id) is not None
                          and sr.get_state(run_id).status == RunStatus.WAITING
                          and not sr.driver.coord.leases.is_held(run_id)), 30, f"run {run_id} to wait")
        ticks = sr.stats.ticks
        celery_app.send_task(START_TASK, args=["event", {"key": "k"}, run_id], queue=settings.queue, task_id=task_id)
        wait_for(lambda: sr.stats.ticks > ticks, 30, "the second delivery to be handled")
        assert sr.get_state(run_id).status == RunStatus.WAITING
        assert sr.stats.runs_started == 1
    finally:
        sr.stop()
