"""The sweep's cursor walk (``walk.py``): every member is reached within the bound, even
when the members a walk took leave the index before the next walk (the runs a sweep moved),
and when many share one score. In memory (``page``), and in Redis (``zwalk``)."""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from typing import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime_celery.walk import START, page, zwalk
from tests.conftest import REDIS

NAMES = st.text(alphabet="ab-_AZ09", min_size=1, max_size=6)


@dataclass
class Item:
    run_id: str
    score: float


def walks_to_reach_all(members: dict[str, float], limit: int, leaves: set[str], take) -> int:
    """Walk until every member was taken once; members in ``leaves`` leave when taken."""
    left, seen, after, n = dict(members), set(), START, 0
    while seen != set(members):
        n += 1
        assert n <= math.ceil(len(members) / limit) + 1, (n, len(members), limit)
        got, after = take(left, after, limit)
        seen |= set(got)
        for name in got:
            if name in leaves:
                left.pop(name, None)
    return n


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, st.sampled_from([1.0, 2.0, 3.5]), min_size=1, max_size=40),
       st.integers(1, 7), st.data())
def test_page_reaches_every_member_within_the_bound_while_taken_ones_leave(
        members: dict[str, float], limit: int, data: st.DataObject) -> None:
    leaves = data.draw(st.sets(st.sampled_from(sorted(members))))

    def take(left: dict[str, float], after, n: int):
        got, cursor = page([Item(k, v) for k, v in left.items()], after, n)
        return [i.run_id for i in got], cursor

    walks_to_reach_all(members, limit, leaves, take)


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
