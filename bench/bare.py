"""Bare Celery baseline: a no-op ETA task that records how late it ran."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/7")
RESULTS = os.environ.get("BENCH_RESULTS_KEY", "bench:bare:lateness")

app = Celery("bench_bare", broker=BROKER)
app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=True,
                worker_prefetch_multiplier=1, task_ignore_result=True,
                broker_connection_retry_on_startup=True)
_client: redis.Redis | None = None


@app.task(name="bench.noop")
def noop(due_ts: float, key: str) -> None:
    """Record lateness (seconds past the ETA) in a Redis list."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(BROKER)
    _client.rpush(key, time.time() - due_ts)
