"""Walking a sorted index on from where the last walk stopped.

A pass of the sweep reads at most ``limit`` members after its cursor, then stores
the cursor; when a walk reaches the end it starts over. So members nobody moves
(paused runs, parents of live children, ...) never hide the ones behind them:
every member is reached within ``ceil(members / limit) + 1`` walks.

A cursor is ``(score, member)``: the last member taken and its score. Members of one
score are ordered by name, so a walk goes on after that name, whether or not the
member is still there (the runs a pass moved leave the index before the next one).
"""

from __future__ import annotations

from typing import Any, List, Protocol, Sequence, Tuple, TypeVar

from . import scripts

Cursor = Tuple[float, str]
START: Cursor = (float("-inf"), "")


class Scored(Protocol):
    score: float
    run_id: str


T = TypeVar("T", bound=Scored)


def zwalk(client: Any, key: str, *, low: float, high: float, after: Cursor,
          limit: int) -> Tuple[List[Tuple[str, float]], Cursor]:
    """Up to ``limit`` members of sorted set ``key`` with ``low <= score <= high`` that come
    after cursor ``after``, in (score, name) order, and the cursor to go on from: ``START``
    once the walk reached ``high`` (the next one starts over). One script call
    (``lua/zwalk.lua``).

    Raises:
        redis.ConnectionError: Redis cannot be reached (callers wrap it: ``redis_errors``).
    """
    score, last = after
    if low > score:
        score, last = low, ""
    args = ["-inf" if score == float("-inf") else repr(score), last,
            "+inf" if high == float("inf") else repr(high), int(limit)]
    raw = scripts.register(client, "zwalk")(keys=[key], args=args, client=client)
    pairs = [(_text(raw[i]), float(raw[i + 1])) for i in range(0, len(raw), 2)]
    if len(pairs) < limit:
        return pairs, START
    return pairs, (pairs[-1][1], pairs[-1][0])


def page(found: Sequence[T], after: Cursor, limit: int) -> tuple[list[T], Cursor]:
    """``zwalk`` over items already read (each with ``score`` and ``run_id``): the next
    ``limit`` after the cursor, and the cursor to go on from."""
    ordered = sorted(found, key=lambda c: (c.score, c.run_id))
    rest = [c for c in ordered if (c.score, c.run_id) > after][:limit]
    if len(rest) < limit:
        return rest, START
    return rest, (rest[-1].score, rest[-1].run_id)


def _text(member: Any) -> str:
    return member.decode() if isinstance(member, bytes) else str(member)
