"""Helpers of the regression tests in tests/test_regress_*.py: a Celery app and an
in-process worker on the regression workflows, a dispatcher that records what it is asked
to send, and a wait for a queue to be drained."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

import redis

from devkit.cleanup import cleanup_broker, queue_len, unacked_for
from devkit.procs import Cluster, wait_for
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, _delete_prefix, make_settings
from tests.workflows_regress_d import registry

REGISTRY_PATH = "tests.workflows_regress_d:registry"


class Recorder:
    """A dispatcher that sends nothing and remembers every tick it was asked to send:
    the broker "loses" every message, and a test reads what the sweep wanted to send."""

    min_eta_s = 0.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        self.sent.append((run_id, reason))

    def run_ids(self) -> set[str]:
        return {run_id for run_id, _ in self.sent}


def make_app(settings: Any) -> Any:
    """A Celery app with our tasks, on the regression workflows and ``settings``."""
    from abstractruntime_celery.app import make_app as _make_app
    from abstractruntime_celery.tasks import install

    app = _make_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None)
    install(app, registry=registry, settings=settings)
    return app


@contextmanager
def in_process_worker(app: Any, settings: Any, concurrency: int = 4) -> Iterator[Any]:
    """A real Celery worker (threads) in this process, consuming ``settings.queue``;
    on the way out the queue is deleted from the broker."""
    from celery.contrib.testing.worker import start_worker

    try:
        with start_worker(app, pool="threads", concurrency=concurrency, perform_ping_check=False,
                          queues=[settings.queue], shutdown_timeout=10, loglevel="WARNING") as w:
            yield w
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(settings.queue)


def wait_drained(queue: str, timeout: float = 60.0, steady: int = 1) -> None:
    """Every message of ``queue`` was delivered and acked (our tasks ack late: when they
    returned), seen ``steady`` times in a row, 50 ms apart (a message between its list and
    kombu's unacked hash is in neither for an instant)."""
    client = redis.Redis.from_url(BROKER_URL)
    streak = [0]

    def drained() -> bool:
        empty = queue_len(BROKER_URL, queue) == 0 and not unacked_for(client, [queue])
        streak[0] = streak[0] + 1 if empty else 0
        return streak[0] >= steady

    wait_for(drained, timeout, f"queue {queue} to drain")


@contextmanager
def regress_cluster(tmp_path: Path, request: Any, **overrides: Any) -> Iterator[Cluster]:
    """An empty cluster of ``celery`` subprocesses (start workers and beat on it) on the
    regression workflows, with its own prefix and queue; on the way out every process
    group is killed, logs are printed if the test failed, and its keys are deleted."""
    prefix = f"rd{uuid.uuid4().hex[:8]}:"
    base = dict(lease_ttl_s=3.0, orphan_grace_s=2.0, registry=REGISTRY_PATH)
    base.update(overrides)
    c = Cluster(make_settings(prefix, **base), BROKER_URL, FX_URL, tmp_path)
    failed_before = request.session.testsfailed
    try:
        yield c
    finally:
        c.stop_all()
        if request.session.testsfailed > failed_before:
            c.dump_logs()
        cleanup_broker(BROKER_URL, c.settings.queue)
        _delete_prefix(STORE_URL, prefix)
        _delete_prefix(FX_URL, f"{prefix}fx")
