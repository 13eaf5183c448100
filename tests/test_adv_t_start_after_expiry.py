"""Adversarial (retention): a start message delivered again after its run was deleted.

A start message without a ``run_id`` makes its run id from the message's task id, so a
start delivered twice (a worker killed before its ack: Redis gives the message back after
``visibility_timeout``, RabbitMQ at once) makes one run, and the README says starting again
with the same ``run_id`` "never makes a second run". The stored run is the only record that
the start was done. Retention deletes it ``retention_s`` after it ended, with nothing left
behind: a start delivered again later makes a second run and runs its nodes again. Nothing
refuses a ``retention_s`` shorter than the broker's redelivery window (Redis: 1 h by
default), nor remembers the ids of deleted runs.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery.dispatch import START_TASK
from abstractruntime_celery.driver import build
from abstractruntime_celery.sweep import sweep
from abstractruntime_celery.tasks import start_run_id
from devkit.procs import wait_for
from tests._regress_d import in_process_worker, make_app, wait_drained
from tests.conftest import FX_URL, fx_count, make_settings
from tests.workflows_regress_d import registry

TIMEOUT = 30.0


@pytest.mark.xfail(strict=True, reason="retention deletes the only record that a start message was done: "
                                       "the same message delivered again after retention_s runs the workflow again")
@pytest.mark.timeout(90)
def test_a_start_message_delivered_again_after_its_run_was_deleted_does_not_run_it_again(prefix: str) -> None:
    settings = make_settings(prefix, retention_s=0.5)
    fx = f"{prefix}fx"
    app = make_app(settings)
    driver = build(settings, registry)
    task_id = uuid.uuid4().hex  # a redelivered message keeps its task id
    run_id = start_run_id(task_id)
    try:
        with in_process_worker(app, settings):
            app.send_task(START_TASK, args=["rd-quick", {"fx": fx}], task_id=task_id, queue=settings.queue)
            wait_for(lambda: getattr(driver.run_store.load(run_id), "status", None) == RunStatus.COMPLETED,
                     TIMEOUT, f"run {run_id} to complete")
            wait_drained(settings.queue)
            assert fx_count(fx, run_id, "ran") == 1
            time.sleep(settings.retention_s + 0.1)
            deadline = time.monotonic() + TIMEOUT
            while driver.run_store.load(run_id) is not None:  # retention deletes it
                assert time.monotonic() < deadline, "retention never deleted the run"
                sweep(driver, force=True)
            # the same message again (its worker died before the ack; the broker gives it back)
            app.send_task(START_TASK, args=["rd-quick", {"fx": fx}], task_id=task_id, queue=settings.queue)
            wait_drained(settings.queue)
        assert fx_count(fx, run_id, "ran") == 1, "one start message ran its workflow twice"
        assert driver.run_store.load(run_id) is None, "one start message made a second run"
    finally:
        redis.Redis.from_url(FX_URL).delete(fx)
