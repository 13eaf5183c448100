"""Bare Celery baseline: no-op tasks that record how late they ran, or count themselves."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/7")

app = Celery("bench_bare", broker=BROKER)
app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=True,
                task_reject_on_worker_lost=True, worker_prefetch_multiplier=1, task_ignore_result=True,
                broker_connection_retry_on_startup=True)
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(BROKER)
    return _client


@app.task(name="bench.noop")
def noop(due_ts: float, key: str) -> None:
    """Record lateness (seconds past ``due_ts``: the ETA, or the send time) in a Redis list."""
    _redis().rpush(key, time.time() - due_ts)


@app.task(name="bench.count")
def count(key: str) -> None:
    """A no-op that counts itself (throughput)."""
    _redis().incr(key)
