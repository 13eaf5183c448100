"""``RedisLedgerStore``: AbstractRuntime's append-only step ledger on Redis.

One list per run (``{p}ledger:<id>``, RPUSH, so the 1-based list position is
the record's seq) and one hash of idempotency_key -> first COMPLETED record
(``{p}ledger-done:<id>``), written by the same script as the append, so the
runtime's crash-replay probe (``find_completed_result``) is O(1). Records are
the same dicts the built-in ledgers write (``steprecord_to_dict``).

Inside a tick (``context.current()``) an append is fenced by the tick's lease on
its run and queued, not sent: it goes first in the pipeline of the tick's next
save, ledger read or lease release, so the order of writes is kept and a round
trip is saved per append.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Dict, List, Optional, Tuple

import redis

from abstractruntime.core.models import StepRecord, StepStatus
from abstractruntime.storage.base import LedgerStore

from ... import scripts
from ...codec import encode_text
from ...context import current
from ...errors import LeaseLostError, PayloadError, RunControlledError
from ...keys import Keys
from .connection import connect, redis_errors

logger = logging.getLogger(__name__)

try:
    from abstractruntime.storage.serialize import dumps_compact as _dumps, steprecord_to_dict as _to_dict
except ImportError:  # pragma: no cover - older abstractruntime

    def _to_dict(record: StepRecord) -> Dict[str, Any]:
        return dataclasses.asdict(record)

    def _dumps(obj: Any) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))



def _refused(run_id: str, reply: Any) -> None:
    """Raise what a refusing reply of ``append_ledger.lua`` means; nothing for an append.

    Raises:
        LeaseLostError: the lease was lost.
        RunControlledError: a cancel or pause landed (the save it goes with is refused too).
    """
    if isinstance(reply, list):
        raise RunControlledError(run_id, str(reply[1]), str(reply[2]) == "1")
    if int(reply) < 0:
        raise LeaseLostError(run_id)


def _parse(raw: Any) -> Optional[Dict[str, Any]]:
    try:
        obj = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


class RedisLedgerStore(LedgerStore):
    """Append-only per-run ledger on Redis lists.

    In a tick, an append from a process that lost the run's lease is refused
    (``LeaseLostError``). ``max_record_bytes`` bounds one serialised record.
    ``client`` may decode replies or return bytes (records are parsed either way).
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "arc:", max_record_bytes: int = 16 * 1024 * 1024) -> None:
        self._r = client
        self.keys = Keys(prefix)
        self._max_bytes = int(max_record_bytes)
        self._append_script = scripts.register(client, "append_ledger")

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "arc:", **kwargs: Any) -> "RedisLedgerStore":
        """A ledger on ``url`` (pooled per process).

        Raises:
            ValueError: the URL is malformed.
        """
        return cls(connect(url), prefix=prefix, **kwargs)

    def _sent_before(self, then: Any = None) -> Any:
        """``then`` after the tick's queued writes, in one round trip (outside a tick: just ``then``)."""
        ctx = current()
        with redis_errors(self._r):
            if ctx is None:
                return then(self._r) if then is not None else None
            return ctx.queue.send_before(self._r, then)

    def shares_connection(self, client: Any) -> bool:
        """True if ``client`` talks to this ledger's Redis through the same pool."""
        return getattr(client, "connection_pool", None) is self._r.connection_pool

    def ledger_key(self, run_id: str) -> str:
        return self.keys.ledger(run_id)

    def done_key(self, run_id: str) -> str:
        return self.keys.ledger_done(run_id)

    def _encode(self, run_id: str, record_dict: Dict[str, Any]) -> bytes:
        """The record as stored: upstream's compact JSON, in UTF-8 (``codec.encode_text``).

        Raises:
            PayloadError: not JSON, text UTF-8 cannot encode (a lone surrogate), or over
                ``max_record_bytes``.
        """
        what = f"Ledger record of run '{run_id}'"
        try:
            text = _dumps(record_dict)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"{what} is not JSON-serialisable: {exc}") from exc
        except RecursionError as exc:
            raise PayloadError(f"{what} is nested too deeply to serialise") from exc
        payload = encode_text(text, what=what)
        if len(payload) > self._max_bytes:
            raise PayloadError(
                f"Ledger record of run '{run_id}' is {len(payload)} bytes, over the "
                f"{self._max_bytes}-byte limit (max_record_bytes)"
            )
        return payload

    def _push(self, run_id: str, payload: bytes, record: StepRecord) -> int:
        """Append now and return the record's seq, or queue it in a tick and return 0."""
        keys = [self.ledger_key(run_id), self.done_key(run_id)]
        ctx = current()
        fence = ctx.fence(run_id) if ctx is not None else None
        guard = ctx.guard(run_id) if ctx is not None and fence is not None else None
        key = record.idempotency_key if isinstance(record.idempotency_key, str) else ""
        status = str(getattr(record.status, "value", record.status) or "")
        args: list[Any] = [payload, key, status, fence.token if fence is not None else ""]
        if fence is not None:
            keys.append(fence.key)
        if fence is not None and guard is not None:
            keys.append(self.keys.run(run_id))
            args += [guard[0], "1" if guard[1] else "0"]
        if ctx is not None:
            script = self._append_script

            def refused(seq: Any) -> None:
                if isinstance(seq, list) and run_id != ctx.run_id:
                    ctx.controlled.add(run_id)  # a child ticked inline was cancelled or paused
                _refused(run_id, seq)

            ctx.queue.add(self._r, lambda target: scripts.call_in(target, script, keys, args), refused)
            if ctx.run_id == run_id and key and status == StepStatus.COMPLETED.value:
                ctx.done.setdefault(key, payload.decode("utf-8"))
            return 0
        with redis_errors(self._r):
            reply = self._append_script(keys=keys, args=args)
        _refused(run_id, reply)
        return int(reply)

    def append(self, record: StepRecord) -> None:
        """Append one record (and index it if it is a COMPLETED idempotent step).

        Inside a tick the append is queued and sent ahead of the tick's next write
        (see the module docstring); a failure then surfaces there.

        Raises:
            ValueError: ``record.run_id`` is empty.
            PayloadError: the record is not JSON or is over ``max_record_bytes``.
            LeaseLostError: the fence's lease key no longer holds our token.
            StoreUnavailableError: Redis cannot be reached.
        """
        run_id = str(record.run_id or "").strip()
        if not run_id:
            raise ValueError("StepRecord.run_id must be non-empty")
        self._push(run_id, self._encode(run_id, _to_dict(record)), record)

    def append_chained(self, record: StepRecord, compute_hash: Any) -> None:
        """Append with the hash chain linked to the current tail, atomically (WATCH/MULTI).

        Used by ``HashChainedLedgerStore``: two appenders can never link to one head.

        Raises:
            As ``append``.
        """
        run_id = str(record.run_id or "").strip()
        if not run_id:
            raise ValueError("StepRecord.run_id must be non-empty")
        lkey = self.ledger_key(run_id)
        self._sent_before()
        with redis_errors(self._r):
            while True:
                with self._r.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(lkey)
                        tail = _parse(pipe.lindex(lkey, -1)) if pipe.llen(lkey) else None
                        prev = tail.get("record_hash") if tail else None
                        record.prev_hash = prev
                        record_dict = _to_dict(record)
                        record.record_hash = compute_hash(record_dict, prev)
                        record_dict["record_hash"] = record.record_hash
                        payload = self._encode(run_id, record_dict)
                        pipe.multi()
                        pipe.rpush(lkey, payload)
                        key = record.idempotency_key if isinstance(record.idempotency_key, str) else ""
                        if key and getattr(record.status, "value", record.status) == StepStatus.COMPLETED.value:
                            pipe.hsetnx(self.done_key(run_id), key, payload)
                        pipe.execute()
                        return
                    except redis.exceptions.WatchError:
                        continue

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        """Every record of the run in append order (unreadable entries skipped, with a warning).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        rid = str(run_id or "").strip()
        if not rid:
            return []
        raws = self._sent_before(lambda c: c.lrange(self.ledger_key(rid), 0, -1))
        out: List[Dict[str, Any]] = []
        for i, raw in enumerate(raws):
            obj = _parse(raw)
            if obj is None:
                logger.warning("Skipping unreadable ledger record %d of run %r", i + 1, rid)
                continue
            out.append(obj)
        return out

    def find_completed_result(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        """``result`` of the first COMPLETED record with this key, or None. O(1).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        key = str(idempotency_key or "")
        rid = str(run_id or "").strip()
        if not key or not rid:
            return None
        ctx = current()
        own = ctx is not None and ctx.run_id == rid
        raw = ctx.done.get(key) if own and ctx is not None else None
        if raw is None and own and ctx is not None and ctx.done_empty:
            return None  # empty when the lease was taken; only this tick adds (see context.py)
        if raw is None:
            raw = self._sent_before(lambda c: c.hget(self.done_key(rid), key))
        rec = _parse(raw) if raw is not None else None
        return rec.get("result") if rec is not None else None

    def last_record(self, run_id: str) -> Optional[Dict[str, Any]]:
        """The run's last record (the hash-chain head), or None.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        raw = self._sent_before(lambda c: c.lindex(self.ledger_key(str(run_id)), -1))
        return _parse(raw) if raw is not None else None

    def count(self, run_id: str) -> int:
        """Number of records of the run.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        return int(self._sent_before(lambda c: c.llen(self.ledger_key(str(run_id)))))

    def count_many(self, run_ids: List[str]) -> Dict[str, int]:
        """Record counts of several runs (runs without records are left out), one round trip.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        ids = [str(r or "").strip() for r in (run_ids or []) if str(r or "").strip()]
        if not ids:
            return {}
        self._sent_before()
        with redis_errors(self._r):
            pipe = self._r.pipeline(transaction=False)
            for rid in ids:
                pipe.llen(self.ledger_key(rid))
            counts = pipe.execute()
        return {rid: int(n) for rid, n in zip(ids, counts) if n}

    def list_after(self, *, run_id: str, after: int, limit: int = 1000) -> Tuple[List[Dict[str, Any]], int]:
        """Records with seq > ``after`` (seq is 1-based), and the new cursor.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        a = max(0, int(after or 0))
        lim = max(1, int(limit or 1000))
        rid = str(run_id or "").strip()
        if not rid:
            return [], a
        raws = self._sent_before(lambda c: c.lrange(self.ledger_key(rid), a, a + lim - 1))
        out = [obj for obj in (_parse(r) for r in raws) if obj is not None]
        return out, a + len(raws)

    def delete(self, run_id: str) -> int:
        """Delete the run's ledger; return how many records it had.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        rid = str(run_id or "").strip()
        if not rid:
            return 0
        self._sent_before()
        with redis_errors(self._r):
            pipe = self._r.pipeline(transaction=True)
            pipe.llen(self.ledger_key(rid))
            pipe.delete(self.ledger_key(rid), self.done_key(rid))
            n, _ = pipe.execute()
        return int(n)
