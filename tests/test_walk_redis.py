"""The sweep's cursor walk in Redis (``walk.zwalk``, ``lua/zwalk.lua``): members of one score
are walked in byte order whatever the server's locale, and a walk goes on after a member
that left the index (the runs a sweep moved)."""

from __future__ import annotations

import math
import random
import uuid
from typing import Iterator

import pytest
import redis

from abstractruntime_celery.walk import zwalk
from tests.conftest import REDIS
from tests.unit.test_walk import walks_to_reach_all


@pytest.fixture
def client(redis_up: None) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(f"{REDIS}/14", decode_responses=True)
    yield r
    r.close()


def test_zwalk_orders_ties_by_bytes_and_goes_on_after_members_that_left(client: redis.Redis) -> None:
    key = f"test-walk:{uuid.uuid4().hex}"
    rng = random.Random(7)
    members = {f"{rng.choice('aB_-9Z')}{i:03d}": (5.0 if i < 45 else float(i)) for i in range(70)}
    client.zadd(key, members)
    try:
        leaves = {m for m in members if rng.random() < 0.6}

        def take(left: dict[str, float], after, n: int):
            pairs, cursor = zwalk(client, key, low=float("-inf"), high=float("inf"), after=after, limit=n)
            names = [m for m, _ in pairs]
            assert names == sorted(names, key=lambda m: (members[m], m.encode()))
            client.zrem(key, *[m for m in names if m in leaves] or ["-"])
            return names, cursor

        assert walks_to_reach_all(members, 8, leaves, take) <= math.ceil(70 / 8) + 1
    finally:
        client.delete(key)
