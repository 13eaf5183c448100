"""Adversarial probes of the sweep's cursor walk (``lua/zwalk.lua``, ``walk.zwalk``) that held:

* scores that do not print short (1/3, 0.1 + 0.2, the smallest subnormal, +-1.8e308, -0.0):
  the cursor's score goes Redis -> Python -> ``repr`` -> Lua and still matches its member;
* more ties than one page of the "member left" branch (128), with the cursor member and
  some before it removed between walks;
* members added behind and ahead of the cursor between walks, and removed at random: one
  full cycle (START to START) returns every member that stayed, once.
"""

from __future__ import annotations

import random
import uuid
from typing import Iterator

import pytest
import redis

from abstractruntime_celery.walk import START, zwalk
from tests.conftest import STORE_URL

ODD = [1 / 3, 0.1 + 0.2, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308, -0.0, 2.0 ** 53 + 2, 1e-300]


@pytest.fixture
def client(redis_up: None) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(STORE_URL, decode_responses=True)
    yield c


@pytest.fixture
def key(client: redis.Redis) -> Iterator[str]:
    k = f"ahzw{uuid.uuid4().hex[:8]}:z"
    yield k
    client.delete(k)


def _cycle(client: redis.Redis, key: str, limit: int, rng: random.Random, drop: float) -> tuple[list[str], set[str]]:
    """Walk from START until the walk wraps; between walks drop some members just taken.
    Returns what was returned and the members that were never dropped."""
    got: list[str] = []
    cursor = START
    dropped: set[str] = set()
    for _ in range(10_000):
        pairs, cursor = zwalk(client, key, low=float("-inf"), high=float("inf"), after=cursor, limit=limit)
        got += [m for m, _ in pairs]
        gone = [m for m, _ in pairs if rng.random() < drop]
        if gone:
            client.zrem(key, *gone)
            dropped.update(gone)
        if cursor == START:
            break
    return got, dropped


@pytest.mark.parametrize("seed", range(5))
def test_one_cycle_returns_each_member_once_with_odd_scores(client: redis.Redis, key: str, seed: int) -> None:
    rng = random.Random(seed)
    members = {f"{rng.choice('ab-_Z')}{i}": rng.choice(ODD) for i in range(60)}
    client.zadd(key, members)
    got, _ = _cycle(client, key, rng.randint(1, 7), rng, drop=0.6)
    assert sorted(got) == sorted(set(got)) == sorted(members)


def test_more_ties_than_a_page_after_the_cursor_member_and_those_before_it_left(client: redis.Redis, key: str) -> None:
    names = [f"r{i:04d}" for i in range(300)]
    client.zadd(key, {n: 7.0 for n in names})
    pairs, cursor = zwalk(client, key, low=float("-inf"), high=float("inf"), after=START, limit=150)
    assert [m for m, _ in pairs] == names[:150] and cursor == (7.0, names[149])
    client.zrem(key, *names[100:150])  # the cursor member and 49 before it leave
    pairs, cursor = zwalk(client, key, low=float("-inf"), high=float("inf"), after=cursor, limit=140)
    assert [m for m, _ in pairs] == names[150:290]
    pairs, cursor = zwalk(client, key, low=float("-inf"), high=float("inf"), after=cursor, limit=140)
    assert [m for m, _ in pairs] == names[290:] and cursor == START


def test_members_added_ahead_of_the_cursor_are_reached_in_the_same_cycle(client: redis.Redis, key: str) -> None:
    client.zadd(key, {f"a{i}": float(i) for i in range(10)})
    pairs, cursor = zwalk(client, key, low=float("-inf"), high=float("inf"), after=START, limit=4)
    client.zadd(key, {"a3x": 3.0, "a2x": 2.0, "late": 100.0})  # one tie after the cursor, one behind, one ahead
    seen = [m for m, _ in pairs]
    while cursor != START:
        pairs, cursor = zwalk(client, key, low=float("-inf"), high=float("inf"), after=cursor, limit=4)
        seen += [m for m, _ in pairs]
    assert "a3x" in seen and "late" in seen and "a2x" not in seen
    assert len(seen) == len(set(seen))
