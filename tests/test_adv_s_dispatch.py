"""The broker refuses the tick of a stored event (adversarial, round S).

Round S found: ``resume_event`` stored the event, then raised ``DispatchError`` (a
``ConnectionError``) because its tick could not be sent. A caller whose policy retries a
call that raised ``ConnectionError`` (the most common retry rule there is) stored a second
event, and a run with two waits on one key (``twice``) took the first for its first wait
and the retry for its second: one answer applied twice.

Fixed: once the event is stored, the call has succeeded; a refused tick is logged and
counted, and the sweep re-sends it after ``event_redeliver_s`` (as a webhook answers 2xx
once its event is durable). Starts still raise ``DispatchError``: a start again with the
same ``run_id`` finds the run.

Real broker (a private redis-server that is down, then started on its port), real store,
a real in-process Celery worker.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.app import make_app as plain_app
from abstractruntime_celery.tasks import install
from devkit.redisproc import PrivateRedis, free_port
from tests.workflows import registry

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 20.0


def test_a_resume_event_whose_tick_the_broker_refuses_is_stored_applied_once_and_not_retried(
        settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Fixed: ``resume_event`` returns once the event is stored (a warning names it); the
    sweep sends its tick when the broker is back. A caller has no error to retry, and the
    run that waits twice on ``k`` takes the one answer once."""
    from celery.contrib.testing.worker import start_worker

    from abstractruntime_celery.sweep import sweep

    settings = replace(settings, event_redeliver_s=0.5)
    broker = PrivateRedis(tmp_path / "broker", port=free_port(), aof=False)
    app = install(plain_app(broker.db_url(0), name=f"arc-{settings.queue}", config_module=None),
                  registry=registry, settings=settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    try:
        run_id = sr.driver.start_run("twice", dispatch=False)
        sr.driver.tick(run_id, follow_up=False)  # parks on its first wait on "k"
        with caplog.at_level("WARNING", logger="abstractruntime_celery.driver"):
            handle = sr.resume_event(run_id=run_id, wait_key="k", payload={"answer": 1}, wait=False)
        assert handle.run_id == run_id
        assert any(run_id in r.getMessage() and "not sent" in r.getMessage() for r in caplog.records), caplog.text
        assert len(sr.driver.coord.inbox.pending(run_id).events) == 1  # stored, once
        assert sr.stats.extra.get("event_ticks_unsent") == 1
        broker.start()
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            deadline = time.monotonic() + TIMEOUT
            while "a" not in sr.get_state(run_id).vars:  # the sweep re-sends the event's tick
                assert time.monotonic() < deadline, "the sweep never brought the event forward"
                sweep(sr.driver, force=True)
                time.sleep(0.2)
            state = sr.wait_for(run_id, timeout=TIMEOUT, until=lambda r: not sr.driver.coord.inbox.pending(run_id).events
                                and not sr.driver.coord.leases.is_held(run_id))
            sweep(sr.driver, force=True)  # one more pass: nothing left to bring forward
            time.sleep(1.0)
            state = sr.get_state(run_id)
        assert state.status == RunStatus.WAITING and state.vars.get("a") == {"answer": 1}, (state.status, state.vars)
        assert "b" not in state.vars, state.vars  # one answer, applied once
    finally:
        sr.stop()
        broker.stop()
