"""``DispatchError`` after a stored event, and a caller that retries (adversarial, round S).

``resume_event`` stores the event, then its tick cannot be sent: ``DispatchError`` (a
``ConnectionError``) names the stored event. A caller whose policy retries a call that
raised ``ConnectionError`` (the most common retry rule there is, and the one a
``DispatchError`` is built to match) calls ``resume_event`` again with the same payload:
a second event is stored, and ``resume_event`` has no idempotency key to say it is the
same one. A run with two waits on one key (``twice``) takes the first for its first wait
and the retry for its second: one answer applied twice. Starts are safe here (``run_id=``
finds the run); events are not. (The README's Errors section says the caller "must not send
the event again"; nothing enforces it, and the error's type invites the retry.)

Real broker (a private redis-server that is down, then started on its port), real store,
a real in-process Celery worker.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import DispatchError, create_scheduled_runtime
from abstractruntime_celery.app import make_app as plain_app
from abstractruntime_celery.tasks import install
from devkit.redisproc import PrivateRedis, free_port
from tests.workflows import registry

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 20.0


@pytest.mark.xfail(strict=True, reason="resume_event has no idempotency key: a caller retrying it after "
                                       "DispatchError (a ConnectionError) stores and applies the event twice "
                                       "(the README says 'must not send the event again')")
def test_a_resume_event_retried_after_dispatch_error_is_applied_once(settings: Any, tmp_path: Path) -> None:
    from celery.contrib.testing.worker import start_worker

    settings = replace(settings, event_redeliver_s=0.5)
    broker = PrivateRedis(tmp_path / "broker", port=free_port(), aof=False)
    app = install(plain_app(broker.db_url(0), name=f"arc-{settings.queue}", config_module=None),
                  registry=registry, settings=settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    try:
        run_id = sr.driver.start_run("twice", dispatch=False)
        sr.driver.tick(run_id, follow_up=False)  # parks on its first wait on "k"
        with pytest.raises(DispatchError):
            sr.resume_event(run_id=run_id, wait_key="k", payload={"answer": 1}, wait=False)
        broker.start()
        # the caller retries the call that raised a ConnectionError, as retry policies do
        sr.resume_event(run_id=run_id, wait_key="k", payload={"answer": 1}, wait=False)
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            state = sr.wait_for(run_id, timeout=TIMEOUT,
                                until=lambda r: r.status == RunStatus.COMPLETED or (
                                    r.status == RunStatus.WAITING and "a" in r.vars
                                    and not sr.driver.coord.inbox.pending(run_id).events))
        assert state.status == RunStatus.WAITING and state.vars.get("a") == {"answer": 1}, (state.status, state.vars)
        assert "b" not in state.vars, state.vars  # one answer, applied once
    finally:
        sr.stop()
        broker.stop()
