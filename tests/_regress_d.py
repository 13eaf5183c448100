"""Helpers of the regression tests in tests/test_regress_*.py: a Celery app and an
in-process worker on the regression workflows, a dispatcher that records what it is asked
to send, and a wait for a queue to be drained."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterator, Optional

import redis

from tests._procs import queue_len, unacked_for, wait_for
from tests.conftest import BROKER_URL
from tests.workflows_regress_d import registry

REGISTRY_PATH = "tests.workflows_regress_d:registry"


class Recorder:
    """A dispatcher that sends nothing and remembers every tick it was asked to send:
    the broker "loses" every message, and a test reads what the sweep wanted to send."""

    min_eta_s = 0.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None) -> None:
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


def wait_drained(queue: str, timeout: float = 60.0) -> None:
    """Every message of ``queue`` was delivered and acked (our tasks ack late: when they returned)."""
    client = redis.Redis.from_url(BROKER_URL)
    wait_for(lambda: queue_len(BROKER_URL, queue) == 0 and not unacked_for(client, [queue]),
             timeout, f"queue {queue} to drain")
