"""Walking a sorted index on from where the last walk stopped.

A pass of the sweep reads at most ``limit`` members after its cursor, then stores
the cursor; when a walk reaches the end it starts over. So members nobody moves
(paused runs, parents of live children, ...) never hide the ones behind them:
every member is reached within ``ceil(members / limit) + 1`` walks.

A cursor is ``(score, skip)``: the last score taken, and how many members with
exactly that score were taken (members of one score are ordered by name, so ties
larger than ``limit`` are walked too).
"""

from __future__ import annotations

from typing import Any, List, Protocol, Sequence, Tuple, TypeVar

Cursor = Tuple[float, int]
START: Cursor = (float("-inf"), 0)


class Scored(Protocol):
    score: float
    run_id: str


T = TypeVar("T", bound=Scored)


def zwalk(client: Any, key: str, *, low: float, high: float, after: Cursor,
          limit: int) -> Tuple[List[Tuple[str, float]], Cursor]:
    """Up to ``limit`` members of sorted set ``key`` with ``low <= score <= high`` that come
    after cursor ``after``, in score order, and the cursor to go on from: ``START`` once
    the walk reached ``high`` (the next one starts over). One ZRANGEBYSCORE.

    A walk that goes on from where the last one stopped reaches every member within
    ``ceil(members / limit) + 1`` walks, however many members nobody removes.

    Raises:
        redis.ConnectionError: Redis cannot be reached (callers wrap it: ``redis_errors``).
    """
    score, skip = after
    lo = max(low, score)
    if lo > score:
        skip = 0
    raw = client.zrangebyscore(key, "-inf" if lo == float("-inf") else repr(lo),
                               "+inf" if high == float("inf") else repr(high),
                               start=skip, num=limit, withscores=True)
    pairs = [(m.decode() if isinstance(m, bytes) else str(m), float(s)) for m, s in raw]
    if len(pairs) < limit:
        return pairs, START
    last = pairs[-1][1]
    ties = sum(1 for _, s in pairs if s == last)
    return pairs, (last, ties + (skip if last == lo else 0))


def page(found: Sequence[T], after: Cursor, limit: int) -> tuple[list[T], Cursor]:
    """``zwalk`` over items already read (each with ``score`` and ``run_id``): the next
    ``limit`` after the cursor, and the cursor to go on from."""
    ordered = sorted(found, key=lambda c: (c.score, c.run_id))
    score, skip = after
    rest = [c for c in ordered if c.score >= score]
    same = [c for c in rest if c.score == score]
    page = same[skip:] + [c for c in rest if c.score > score]
    page = page[:limit]
    if len(page) < limit:
        return page, START
    last = page[-1].score
    ties = sum(1 for c in page if c.score == last)
    return page, (last, ties + (skip if last == score else 0))


