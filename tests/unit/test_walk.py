"""The sweep's cursor walk in memory (``walk.page``): every member is reached within the
bound, even when the members a walk took leave the index before the next walk (the runs a
sweep moved), and when many share one score. The Redis twin: tests/test_walk_redis.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime_celery.walk import START, page

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
