"""Listing runs for operators, a page at a time, newest first, with a cursor.

On the Redis store a page walks one index sorted set downwards from the cursor
(``ix-parent:<id>`` by creation time when a parent is given, else the smallest of
``ix-status``/``ix-wf``/``ix-reason`` or ``ix-all``, by update time) and checks each
candidate against the fields of its record: no document is decoded, and a page costs
a bounded number of round trips however many runs the index holds. Other stores are
read whole (their queries) and paged in memory with the same cursor.

A cursor is ``<score>:<run id>``: the last run of the page. Runs that change while
an operator pages may move to the front (their score grows); none is shown twice
on one page.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from abstractruntime import RunState, RunStatus, WaitReason

from .errors import PayloadError
from .isotime import to_epoch
from .runstate import paused
from .stores.redis import RedisRunStore
from .stores.redis.connection import redis_errors

#: Most index entries one page reads before it stops (with a cursor) to keep a page cheap.
SCAN_CAP = 5000
#: Candidates fetched per round trip.
CHUNK = 200
_FIELDS = ["status", "paused", "wf", "reason", "wkey", "until", "parent", "updated", "created"]


@dataclass
class RunRow:
    """One line of ``runs list``."""

    run_id: str
    workflow_id: str
    status: str
    paused: bool
    reason: str
    wait_key: str
    until: str
    parent: str
    updated: float
    created: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Page:
    rows: list[RunRow]
    #: Where the next page starts (None: this was the last one).
    next: Optional[str]


@dataclass(frozen=True)
class Filters:
    status: Optional[str] = None
    workflow: Optional[str] = None
    reason: Optional[str] = None
    parent: Optional[str] = None

    def match(self, row: RunRow) -> bool:
        return ((self.status is None or row.status == self.status)
                and (self.workflow is None or row.workflow_id == self.workflow)
                and (self.reason is None or (row.reason == self.reason and row.status == RunStatus.WAITING.value))
                and (self.parent is None or row.parent == self.parent))


def parse_cursor(text: Optional[str]) -> Optional[tuple[float, str]]:
    """Raises PayloadError for a cursor this module did not print."""
    if not text:
        return None
    score, sep, run_id = text.partition(":")
    try:
        if not sep or not run_id:
            raise ValueError(text)
        return float(score), run_id
    except ValueError:
        raise PayloadError(f"--after {text[:80]!r} is not a cursor printed by 'runs list' (<score>:<run id>)") from None


def list_page(store: Any, filters: Filters, *, limit: int, after: Optional[str]) -> Page:
    """One page of runs matching ``filters``, newest first, after cursor ``after``.

    Raises:
        PayloadError: ``after`` is not a cursor.
        StoreUnavailableError: the store cannot be reached.
    """
    cursor = parse_cursor(after)
    limit = max(1, int(limit))
    if isinstance(store, RedisRunStore):
        return _redis_page(store, filters, limit, cursor)
    return _generic_page(store, filters, limit, cursor)


def _redis_page(store: RedisRunStore, filters: Filters, limit: int, cursor: Optional[tuple[float, str]]) -> Page:
    keys, client = store.keys, store.client
    if filters.parent is not None:
        key = keys.index("ix-parent", filters.parent)
    else:
        candidates = [keys.index(f, v) for f, v in (("ix-status", filters.status), ("ix-wf", filters.workflow),
                                                     ("ix-reason", filters.reason)) if v is not None]
        key = store.smallest_index(candidates) if candidates else keys.all_runs
    rows: list[RunRow] = []
    scanned = 0
    with redis_errors(client):
        while scanned < SCAN_CAP:
            batch = _below(client, key, cursor, CHUNK)
            if not batch:
                return Page(rows, None)
            pipe = client.pipeline(transaction=False)
            for member, _ in batch:
                pipe.hmget(keys.run(member), _FIELDS)
            for (member, score), values in zip(batch, pipe.execute()):
                scanned += 1
                cursor = (score, member)
                row = _row(member, values)
                if row is not None and filters.match(row):
                    rows.append(row)
                    if len(rows) >= limit:
                        return Page(rows, _cursor_text(cursor))
            if len(batch) < CHUNK:
                return Page(rows, None)
    return Page(rows, _cursor_text(cursor) if cursor else None)


def _below(client: Any, key: str, cursor: Optional[tuple[float, str]], n: int) -> list[tuple[str, float]]:
    """Up to ``n`` members after ``cursor`` in (score, member) descending order."""
    if cursor is None:
        return [(m, float(s)) for m, s in client.zrevrangebyscore(key, "+inf", "-inf", start=0, num=n, withscores=True)]
    score, last = cursor
    out: list[tuple[str, float]] = []
    offset = 0
    while len(out) < n:
        chunk = client.zrevrangebyscore(key, repr(score), "-inf", start=offset, num=n, withscores=True)
        out += [(m, float(s)) for m, s in chunk if not (float(s) == score and m >= last)]
        if len(chunk) < n:
            break
        offset += len(chunk)
    return out[:n]


def _row(run_id: str, values: Any) -> Optional[RunRow]:
    if not isinstance(values, list) or values[0] is None:
        return None  # deleted since the index was read
    status, is_paused, wf, reason, wkey, until, parent, updated, created = values
    return RunRow(run_id, wf or "", status, is_paused == "1", reason or "", wkey or "", until or "", parent or "",
                  _float(updated), _float(created))


def _generic_page(store: Any, filters: Filters, limit: int, cursor: Optional[tuple[float, str]]) -> Page:
    if filters.parent is not None:
        runs = store.list_children(parent_run_id=filters.parent)
        scored = [(_epoch(r.created_at), r) for r in runs]
    else:
        runs = store.list_runs(status=RunStatus(filters.status) if filters.status else None,
                               wait_reason=WaitReason(filters.reason) if filters.reason else None,
                               workflow_id=filters.workflow, limit=10_000_000)
        scored = [(_epoch(r.updated_at), r) for r in runs]
    rows = [(score, row_of(r)) for score, r in scored]
    rows = [(s, r) for s, r in rows if filters.match(r)]
    rows.sort(key=lambda sr: (sr[0], sr[1].run_id), reverse=True)
    if cursor is not None:
        rows = [(s, r) for s, r in rows if (s, r.run_id) < cursor]
    page = rows[:limit]
    more = len(rows) > limit
    return Page([r for _, r in page], _cursor_text((page[-1][0], page[-1][1].run_id)) if more else None)


def row_of(run: RunState) -> RunRow:
    """A run's line, from its state."""
    waiting = run.waiting
    return RunRow(run.run_id, str(run.workflow_id), run.status.value, paused(run),
                  waiting.reason.value if waiting is not None else "",
                  str(waiting.wait_key or "") if waiting is not None and run.status == RunStatus.WAITING else "",
                  str(waiting.until or "") if waiting is not None else "", str(run.parent_run_id or ""),
                  _epoch(run.updated_at), _epoch(run.created_at))


def _cursor_text(cursor: tuple[float, str]) -> str:
    return f"{cursor[0]!r}:{cursor[1]}"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _epoch(iso: Any) -> float:
    try:
        return to_epoch(str(iso))
    except (TypeError, ValueError):
        return 0.0
