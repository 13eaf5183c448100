"""Shared helpers for the Redis store tests: a real Redis, unique prefixes, clean-up.

Tests use db 11 and 12 of the suite's Redis (``tests.conftest.REDIS``: the one place the
address is decided) and a fresh key prefix each, and delete only their own keys (never
FLUSHALL, never db 0).
"""

from __future__ import annotations

from typing import Iterator
from uuid import uuid4

import pytest
import redis

from devkit.cleanup import delete_prefix  # noqa: F401  (the store tests import it from here)
from devkit.redisproc import free_port  # noqa: F401

from tests.conftest import REDIS

DB_MAIN = 11
DB_SECOND = 12


def redis_url(db: int = DB_MAIN) -> str:
    return f"{REDIS}/{db}"


def unique_prefix() -> str:
    return f"t{uuid4().hex[:8]}:"


def redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(redis_url(0), socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


requires_redis = pytest.mark.skipif(not redis_up(), reason=f"no Redis at {REDIS}")



@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    from abstractruntime_celery.stores.redis.connection import connect

    yield connect(redis_url(DB_MAIN))


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    p = unique_prefix()
    yield p
    delete_prefix(redis_client, p)


def cas_increment_worker(url: str, prefix: str, run_id: str, increments: int) -> tuple[int, int]:
    """Child process body for the CAS contention test: load, +1, save(expected_version), retry.

    Returns (successful increments, conflicts seen).
    """
    from abstractruntime_celery.errors import VersionConflictError
    from abstractruntime_celery.stores.redis.connection import connect
    from abstractruntime_celery.stores.redis.runs import RedisRunStore

    store = RedisRunStore(connect(url), prefix=prefix)
    done = conflicts = 0
    while done < increments:
        run, version = store.load_with_version(run_id)
        assert run is not None and version is not None
        run.vars["counter"] = int(run.vars["counter"]) + 1
        try:
            store.save(run, expected_version=version)
        except VersionConflictError:
            conflicts += 1
            continue
        done += 1
    return done, conflicts
