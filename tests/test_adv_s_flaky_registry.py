"""A registry that fails at call time (adversarial, round S).

The start checks list the registry's ids (``list_ids``) and never call ``get``. A
registry whose ``get`` raises (a lazy catalogue: files, a service, a database behind it)
passes them; a start message that meets one failing lookup fails its task, is
acknowledged, and no run is ever made for it, where a workflow the registry does not know
(``UnknownWorkflowError``) sends the message back with a backoff (``keep_start``). A tick
that met one failed its task the same way: acknowledged, the run left to the sweep.

Fixed: ``registry.lookup_workflow`` tells a lookup that raises (``RegistryError``) from a
workflow the registry does not know, and the start and tick tasks send such a message back
after a backoff (``outage.retry_later``, same task id: still one run), with one log line
naming the cause; it is never acknowledged and dropped.

Real Redis, a real in-process Celery worker.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.app import make_app as plain_app
from abstractruntime_celery.dispatch import START_TASK
from abstractruntime_celery.tasks import install
from devkit.procs import wait_for
from tests.conftest import BROKER_URL, make_app
from tests.workflows import registry
from tests.workflows_adv_s import FlakyCatalogue

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def said() -> Iterator[list[str]]:
    """The lines logged by ``outage`` (the worker's logging set-up leaves caplog's root handler out)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler, logger = Keep(), logging.getLogger("abstractruntime_celery.outage")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def test_a_start_meeting_a_registry_lookup_that_fails_once_still_makes_its_run(
        settings: Any, said: list[str]) -> None:
    from celery.contrib.testing.worker import start_worker

    settings = replace(settings, retry_backoff_s=0.1, retry_backoff_max_s=0.2)
    catalogue = FlakyCatalogue(fails=0)
    app = install(plain_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None),
                  registry=catalogue, settings=settings)
    caller = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry,
                                      auto_start=False)  # (its own app: the worker keeps the catalogue)
    task_id = f"start-{uuid.uuid4().hex}"
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            catalogue.fails = 1  # (once the worker is up: its next lookup fails)
            app.send_task(START_TASK, args=["steps", {"n": 1}], task_id=task_id, queue=settings.queue)
            done = wait_for(lambda: (lambda r: r if r is not None and r.status == RunStatus.COMPLETED else None)(
                caller.driver.run_store.load(task_id)), 8.0, "the started run to complete")
        assert done.output == {"i": 1}
        assert catalogue.fails == 0
        assert said and "registry lookup of 'steps' failed (RuntimeError: workflow catalogue unreachable)" \
            in said[0] and f"start of run {task_id}" in said[0], said
    finally:
        caller.stop()


def test_a_tick_meeting_a_registry_lookup_that_fails_once_still_moves_its_run(
        settings: Any, said: list[str]) -> None:
    from celery.contrib.testing.worker import start_worker

    settings = replace(settings, retry_backoff_s=0.1, retry_backoff_max_s=0.2)
    catalogue = FlakyCatalogue(fails=0)
    app = install(plain_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None),
                  registry=catalogue, settings=settings)
    caller = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry,
                                      auto_start=False)
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            catalogue.fails = 1
            run_id = caller.start(workflow=registry.get("steps"), vars={"n": 1})  # (created here: a tick message)
            state = caller.wait_for(run_id, timeout=8.0, until=lambda r: r.status != RunStatus.RUNNING)
        assert state.status == RunStatus.COMPLETED and state.output == {"i": 1}
        assert catalogue.fails == 0
        assert said and f"tick of run {run_id}: registry lookup of 'steps' failed" in said[0], said
    finally:
        caller.stop()
