"""The Redis run store's queries: AbstractRuntime's ``QueryableRunStore`` and its
optional fast paths, and the sweep's cursor walk, all over the index sorted sets.

Every candidate an index gives is re-checked against its record, so a stale index
entry can never return a wrong run. Every query first sends the tick's queued
writes (``_sent_before``), so a read in a tick sees what the tick wrote.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import redis

from abstractruntime.core.models import RunState, RunStatus, WaitReason

from ...errors import CorruptRunError, PayloadError
from ...isotime import to_epoch
from ...keys import Keys
from .codec import ACTIVE, HAS_RUN_INDEX, decode, is_turn_root, latest_occurrence_of, mailbox_names_of, row_matches, value_of
from ...walk import Cursor, zwalk
from .connection import redis_errors

logger = logging.getLogger(__name__)



class RunQueries:
    """Mixed into ``RedisRunStore``: needs ``_r``, ``keys`` and ``_sent_before``."""

    _r: redis.Redis
    keys: Keys

    def _sent_before(self, then: Optional[Callable[[Any], Any]] = None) -> Any:  # pragma: no cover
        raise NotImplementedError

    # --- reading many runs -----------------------------------------------------------

    def _fetch(self, ids: Sequence[str], field: str = "doc") -> List[Tuple[str, Any]]:
        """``(run_id, field value)`` for each id, one round trip; unreadable keys give the error."""
        if not ids:
            return []
        with redis_errors(self._r):
            pipe = self._r.pipeline(transaction=False)
            for rid in ids:
                pipe.hget(self.keys.run(rid), field)
            try:
                values = pipe.execute(raise_on_error=False)
            except UnicodeDecodeError:
                # A record that is not UTF-8 fails the whole pipeline: read one by one,
                # so that one bad record is skipped and does not hide the others.
                values = [self._fetch_one(rid, field) for rid in ids]
        return list(zip(ids, values))

    def _fetch_one(self, rid: str, field: str) -> Any:
        try:
            return self._r.hget(self.keys.run(rid), field)
        except (redis.exceptions.ResponseError, UnicodeDecodeError) as exc:
            return exc

    @staticmethod
    def _decode_many(pairs: Iterable[Tuple[str, Any]]) -> List[RunState]:
        out: List[RunState] = []
        for rid, doc in pairs:
            if doc is None:
                continue  # index entry of a run deleted since the index read
            if isinstance(doc, Exception):
                logger.warning("Skipping run %r: %s", rid, doc)
                continue
            try:
                out.append(decode(rid, doc))
            except CorruptRunError as exc:
                logger.warning("Skipping corrupt run record: %s", exc)
        return out

    def _chunks(self, key: str, *, desc: bool, first: int) -> Iterator[List[str]]:
        """The members of index ``key`` in score order, in growing chunks (the one walker)."""
        start, chunk = 0, min(max(first, 16), 1000)
        while True:
            with redis_errors(self._r):
                if desc:
                    ids = self._r.zrevrange(key, start, start + chunk - 1)
                else:
                    ids = self._r.zrange(key, start, start + chunk - 1)
            if not ids:
                return
            yield ids
            start += len(ids)
            chunk = min(chunk * 2, 2000)

    def _walk(self, key: str, *, accept: Callable[[Any], bool], limit: int, desc: bool = True,
              field: str = "doc", parse: Callable[[str, Any], List[Any]] | None = None) -> List[Any]:
        """Items of index ``key`` in score order that pass ``accept``, up to ``limit``:
        runs (``field="doc"``) or, with ``parse``, what it makes of another field."""
        out: List[Any] = []
        parse = parse or (lambda rid, raw: self._decode_many([(rid, raw)]))
        for ids in self._chunks(key, desc=desc, first=limit):
            for rid, raw in self._fetch(ids, field):
                for item in parse(rid, raw):
                    if accept(item):
                        out.append(item)
                        if len(out) >= limit:
                            return out
        return out

    def smallest_index(self, keys: List[str]) -> str:
        """The index of ``keys`` with the fewest members: the one a filtered walk reads.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        if len(keys) == 1:
            return keys[0]
        with redis_errors(self._r):
            pipe = self._r.pipeline(transaction=False)
            for k in keys:
                pipe.zcard(k)
            sizes = pipe.execute()
        return min(zip(sizes, keys))[1]

    # --- QueryableRunStore -------------------------------------------------------------

    def list_runs(self, *, status: Optional[RunStatus] = None, wait_reason: Optional[WaitReason] = None,
                  workflow_id: Optional[str] = None, limit: int = 100) -> List[RunState]:
        """Runs matching every given filter, ``updated_at`` descending (index walk, not a scan).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._sent_before()
        st = value_of(status) if status is not None else None
        wr = value_of(wait_reason) if wait_reason is not None else None
        keys: List[str] = []
        if st is not None:
            keys.append(self.keys.index("ix-status", st))
        if workflow_id is not None:
            keys.append(self.keys.index("ix-wf", workflow_id))
        if wr is not None:
            keys.append(self.keys.index("ix-reason", wr))

        def accept(run: RunState) -> bool:
            return ((st is None or value_of(run.status) == st)
                    and (workflow_id is None or run.workflow_id == workflow_id)
                    and (wr is None or (run.waiting is not None and value_of(run.waiting.reason) == wr)))

        key = self.smallest_index(keys) if keys else self.keys.all_runs
        return self._walk(key, accept=accept, limit=max(1, int(limit or 100)))

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> List[RunState]:
        """WAITING runs (UNTIL, or EVENT with ``until``) due at ``now_iso``, earliest first.

        O(log N + due): one ZRANGEBYSCORE on the due set. ``now_iso`` may carry any
        offset; a future ``now_iso`` gives "due within the horizon".

        Raises:
            PayloadError: ``now_iso`` is not an ISO-8601 time.
            StoreUnavailableError: Redis cannot be reached.
        """
        self._sent_before()
        try:
            now = to_epoch(now_iso)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"now_iso {now_iso!r} is not an ISO-8601 time") from exc
        with redis_errors(self._r):
            ids = self._r.zrangebyscore(self.keys.due, "-inf", repr(now), start=0, num=max(1, int(limit or 100)))
        return [run for run in self._decode_many(self._fetch(ids))
                if run.status == RunStatus.WAITING and run.waiting is not None and run.waiting.until]

    def list_children(self, *, parent_run_id: str, status: Optional[RunStatus] = None) -> List[RunState]:
        """Child runs of ``parent_run_id``, ``created_at`` then ``run_id`` ascending.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._sent_before()
        parent = str(parent_run_id or "").strip()
        if not parent:
            return []
        with redis_errors(self._r):
            ids = self._r.zrange(self.keys.index("ix-parent", parent), 0, -1)
        runs = [r for r in self._decode_many(self._fetch(ids)) if r.parent_run_id == parent]
        return [r for r in runs if status is None or r.status == status]

    # --- optional fast paths the Runtime looks up -----------------------------------------

    def _members_by_score(self, keys: List[str]) -> List[str]:
        """Members of several sorted sets, highest score first, deduplicated."""
        with redis_errors(self._r):
            pipe = self._r.pipeline(transaction=False)
            for k in keys:
                pipe.zrange(k, 0, -1, withscores=True)
            results = pipe.execute()
        best: Dict[str, float] = {}
        for pairs in results:
            for member, score in pairs:
                if score > best.get(member, float("-inf")):
                    best[member] = score
        return [m for m, _ in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))]

    def _verified(self, ids: List[str], accept: Callable[[RunState], bool], limit: int) -> List[RunState]:
        out: List[RunState] = []
        for i in range(0, len(ids), 500):
            out.extend(r for r in self._decode_many(self._fetch(ids[i:i + 500])) if accept(r))
            if len(out) >= limit:
                break
        out.sort(key=lambda r: r.updated_at or "", reverse=True)
        return out[:limit]

    @staticmethod
    def _event_key_of(run: RunState) -> Optional[str]:
        if run.status != RunStatus.WAITING or run.waiting is None or run.waiting.reason != WaitReason.EVENT:
            return None
        wk = run.waiting.wait_key
        return wk if isinstance(wk, str) and wk else None

    def list_event_waiters(self, *, wait_keys: List[str], limit: int = 100) -> List[RunState]:
        """Runs parked in WAITING(EVENT) on any of ``wait_keys``, ``updated_at`` descending.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._sent_before()
        wanted = [str(k) for k in (wait_keys or []) if isinstance(k, str) and k]
        if not wanted:
            return []
        ids = self._members_by_score([self.keys.index("ix-evt", k) for k in wanted])
        keyset = set(wanted)
        return self._verified(ids, lambda r: self._event_key_of(r) in keyset, max(1, int(limit or 100)))

    def list_event_waiters_by_prefix(self, *, prefix: str, limit: int = 100) -> List[RunState]:
        """Runs parked in WAITING(EVENT) on a wait_key starting with ``prefix`` (lex index).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._sent_before()
        pre = str(prefix or "")
        if not pre:
            return []
        low, high = b"[" + pre.encode("utf-8"), b"(" + pre.encode("utf-8") + b"\xff"
        with redis_errors(self._r):
            members = self._r.zrangebylex(self.keys.event_keys, low, high)
        ids = list(dict.fromkeys(m.rsplit("\0", 1)[-1] for m in members))

        def accept(run: RunState) -> bool:
            wk = self._event_key_of(run)
            return wk is not None and wk.startswith(pre)

        return self._verified(ids, accept, max(1, int(limit or 100)))

    def list_mailbox_runs(self, *, names: List[str], limit: int = 10_000) -> List[RunState]:
        """Active (RUNNING/WAITING) runs declaring any of ``names`` in ``vars.events_mailbox``.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._sent_before()
        wanted = {str(n).strip() for n in (names or []) if isinstance(n, str) and str(n).strip()}
        if not wanted:
            return []
        ids = self._members_by_score([self.keys.index("ix-mbox", n) for n in sorted(wanted)])

        def accept(run: RunState) -> bool:
            return value_of(run.status) in ACTIVE and bool(mailbox_names_of(run.vars) & wanted)

        return self._verified(ids, accept, max(1, int(limit or 10_000)))

    def next_wait_deadline(self) -> Optional[str]:
        """The earliest ``waiting.until`` among WAITING runs (as stored), or None. O(log N).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._sent_before()
        with redis_errors(self._r):
            for rid in self._r.zrange(self.keys.due, 0, 7):
                try:
                    status, until = self._r.hmget(self.keys.run(rid), ["status", "until"])
                except redis.exceptions.ResponseError:
                    continue
                if status == RunStatus.WAITING.value and until:
                    return str(until)
        return None

    # --- run index (summaries without loading documents) ---------------------------------

    def list_run_index(self, *, status: Optional[RunStatus] = None, workflow_id: Optional[str] = None,
                       session_id: Optional[str] = None, root_only: bool = False, limit: int = 100,
                       oldest_first: bool = False, automation_id: Any = None, role: Any = None,
                       session_kind: Any = None) -> List[Dict[str, Any]]:
        """Index rows (no RunState parse), newest first unless ``oldest_first``.

        Raises:
            NotImplementedError: the installed abstractruntime has no run-index helpers.
            StoreUnavailableError: Redis cannot be reached.
        """
        self._sent_before()
        if not HAS_RUN_INDEX:
            raise NotImplementedError("list_run_index needs abstractruntime with core.run_attribution")
        st = value_of(status) if status is not None else None
        sid = str(session_id).strip() if session_id is not None else None
        keys = [self.keys.index(family, value) for family, value in
                (("ix-status", st), ("ix-wf", workflow_id), ("ix-session", sid)) if value is not None]

        def accept(row: Dict[str, Any]) -> bool:
            if ((st is not None and row.get("status") != st)
                    or (workflow_id is not None and row.get("workflow_id") != str(workflow_id))
                    or (sid is not None and str(row.get("session_id") or "").strip() != sid)):
                return False
            if root_only and not is_turn_root(parent_run_id=row.get("parent_run_id"), role=row.get("role")):
                return False
            return row_matches(row, automation_id=automation_id, role=role, session_kind=session_kind)

        key = self.smallest_index(keys) if keys else self.keys.all_runs
        return self._walk(key, accept=accept, limit=max(1, int(limit or 100)), desc=not oldest_first,
                          field="row", parse=_parse_row)

    def session_kinds(self, session_id: str) -> frozenset:
        """The ``session_kind`` values of the session's runs (empty: no runs).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        sid = str(session_id or "").strip()
        if not sid or not HAS_RUN_INDEX:
            return frozenset()
        rows = self.list_run_index(session_id=sid, limit=1_000_000)
        return frozenset(r.get("session_kind") for r in rows if r.get("session_kind"))

    def latest_occurrence_row(self, automation_id: str) -> Optional[Dict[str, Any]]:
        """Index row of the automation's highest-numbered occurrence, or None.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        if not HAS_RUN_INDEX:
            return None
        rows = self.list_run_index(automation_id=str(automation_id), role="occurrence", limit=1_000_000)
        return latest_occurrence_of(rows)

    # --- the sweep's walk ----------------------------------------------------------------

    def walk(self, key: str, *, low: float, high: float, after: Cursor, limit: int,
             fields: Sequence[str]) -> Tuple[List[Tuple[str, float, List[Any]]], Cursor]:
        """``zwalk`` over index ``key``, with ``fields`` of each run's record (not the
        document), in one more round trip: what the sweep needs to decide, cheaply.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._sent_before()
        with redis_errors(self._r):
            pairs, cursor = zwalk(self._r, key, low=low, high=high, after=after, limit=limit)
        if not pairs:
            return [], cursor
        with redis_errors(self._r):
            pipe = self._r.pipeline(transaction=False)
            for member, _ in pairs:
                pipe.hmget(self.keys.run(member), list(fields))
            values = pipe.execute(raise_on_error=False)
        return [(m, s, v if isinstance(v, list) else [None] * len(fields)) for (m, s), v in zip(pairs, values)], cursor


def _parse_row(rid: str, raw: Any) -> List[Dict[str, Any]]:
    if not raw or isinstance(raw, Exception):
        return []
    try:
        row = json.loads(raw)
    except ValueError:
        logger.warning("Skipping run %r: corrupt index row", rid)
        return []
    return [row] if isinstance(row, dict) else []
