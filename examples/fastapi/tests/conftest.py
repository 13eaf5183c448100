"""The FastAPI example's fixtures: its environment (the suite's Redis databases 9 broker,
10 store, 14 side effects; a fresh key prefix and queue), and a real Celery worker in this
process (threads) on the example's own Celery app.

``apishop`` reads its environment once, at import: the fixture sets it only while importing
it (once per session), so nothing of it reaches other tests."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from devkit.cleanup import cleanup_broker, delete_prefix

EXAMPLE = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("ARC_TEST_REDIS", "redis://127.0.0.1:6379")


@pytest.fixture(scope="session")
def api_env() -> Iterator[dict[str, str]]:
    prefix = f"fa{uuid.uuid4().hex[:8]}:"
    env = {"ABSTRACTRUNTIME_CELERY_BROKER_URL": f"{REDIS}/9", "ABSTRACTRUNTIME_CELERY_STORE_URL": f"{REDIS}/10",
           "ABSTRACTRUNTIME_CELERY_KEY_PREFIX": prefix, "ABSTRACTRUNTIME_CELERY_QUEUE": f"{prefix}q",
           "ABSTRACTRUNTIME_CELERY_ORPHAN_GRACE_S": "1",
           "APISHOP_OUTBOX_URL": f"{REDIS}/14", "APISHOP_OUTBOX_KEY": f"{prefix}outbox"}
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith("ABSTRACTRUNTIME_CELERY_")] + ["CELERY_BROKER_URL"]:
            mp.delenv(name, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        # ``apishop``, as the worker imports it from this directory
        mp.setattr(sys, "path", [*sys.path, str(EXAMPLE)])
        import apishop.main  # noqa: F401 - reads the environment now
    yield env
    cleanup_broker(f"{REDIS}/9", f"{prefix}q")
    delete_prefix(redis.Redis.from_url(f"{REDIS}/10"), prefix)
    redis.Redis.from_url(f"{REDIS}/14").delete(f"{prefix}outbox")


@pytest.fixture(scope="module")
def api_worker(api_env: dict[str, str]) -> Iterator[Any]:
    """A real Celery worker (threads pool) consuming the example's queue, in this process.
    Per module: two in-process workers alive at once in one process do not stop cleanly
    (Celery's worker state is global), so none outlives the module that started it."""
    from celery.contrib.testing.worker import start_worker

    from apishop.celery import app as celery_app

    with start_worker(celery_app, pool="threads", concurrency=2, perform_ping_check=False,
                      queues=[api_env["ABSTRACTRUNTIME_CELERY_QUEUE"]], shutdown_timeout=10,
                      loglevel="WARNING") as worker:
        yield worker
