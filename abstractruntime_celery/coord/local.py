"""The coordination state of the embedded mode, in this process's memory: the same
pieces as ``coord/redis.py`` (leases, inboxes, the timer book, stats, marks, the
sweep's lock and cursors), for one process that is the whole cluster.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
import time
import uuid
from typing import Any, Callable, Optional, Sequence

from ..context import Fence, Op, TickContext
from ..errors import DuplicateDeliveryError, InboxFullError, RunNotWaitingError
from ..inbox import Delivery, Event, InboxRead, OneAnswer, RunMovedError, Unreadable
from ..keys import Keys
from ..lease import Lease
from ..stats import MAX_ERRORS, SchedulerStats, Stats, build_snapshot, clip_error, now_iso
from ..walk import Cursor


class LocalLeases:
    """Leases in this process only: the embedded mode, where one process is the cluster.
    The same rules as ``lua/lease_acquire.lua`` and ``lua/lease_release.lua``."""

    def __init__(self, keys: Keys, ttl_s: float, note_ttl_s: float | None = None) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self.note_ttl_s = note_ttl_s if note_ttl_s is not None else 4 * ttl_s
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[str, float]] = {}
        self._pending: set[str] = set()
        self._next: dict[str, tuple[str, float]] = {}

    def _live(self, run_id: str) -> tuple[str, float] | None:
        entry = self._leases.get(run_id)
        if entry is not None and entry[1] <= time.monotonic():
            del self._leases[run_id]
            return None
        return entry

    def acquire(self, run_id: str, message_id: str = "") -> Lease | None:
        with self._lock:
            note = self._next.get(run_id)
            if message_id and note is not None and note[0] == message_id:
                del self._next[run_id]  # the run's pending tick is delivered
            if self._live(run_id) is not None:
                self._pending.add(run_id)
                return None
            token = uuid.uuid4().hex
            self._leases[run_id] = (token, time.monotonic() + self.ttl_s)
            self._pending.discard(run_id)
            return Lease(run_id, self.keys.lease(run_id), token)

    def acquire_reading(self, run_id: str, reads: Sequence[Op],
                        message_id: str = "") -> tuple[Lease | None, list[Any]]:
        return self.acquire(run_id, message_id), []

    def renew(self, lease: Lease) -> bool:
        with self._lock:
            entry = self._live(lease.run_id)
            if entry is None or entry[0] != lease.token:
                return False
            self._leases[lease.run_id] = (lease.token, time.monotonic() + self.ttl_s)
            return True

    def release(self, lease: Lease, ctx: TickContext) -> bool:
        """As ``RedisLeases.release``. Raises what a queued write raises (none queue here:
        the embedded stores write at once), after the lease is given back."""
        try:
            if ctx.queue.refused is None:
                ctx.queue.flush()
            for item in ctx.queue.after:
                reply = item.op(item.client)
                if item.check is not None:
                    item.check(reply)
        finally:
            ctx.queue.after, ctx.queue.counts = [], {}
            return self._give_back(lease, ctx)

    def _give_back(self, lease: Lease, ctx: TickContext) -> bool:
        with self._lock:
            entry = self._live(lease.run_id)
            if entry is None or entry[0] != lease.token:
                return False
            del self._leases[lease.run_id]
            asked = lease.run_id in self._pending
            self._pending.discard(lease.run_id)
            note = self._next.get(lease.run_id)
            if note is not None and note[1] <= time.monotonic():
                note = None
            ctx.send_own = (ctx.want_more or asked) and note is None
            if ctx.send_own:
                ttl = ctx.note_ttl_s if ctx.note_ttl_s is not None else self.note_ttl_s
                self._next[lease.run_id] = (ctx.next_id, time.monotonic() + ttl)
            return ctx.send_own

    def is_held(self, run_id: str) -> bool:
        with self._lock:
            return self._live(run_id) is not None

    def claim(self, run_ids: Sequence[str]) -> dict[str, str]:
        """As ``RedisLeases.claim``."""
        out: dict[str, str] = {}
        with self._lock:
            now = time.monotonic()
            for run_id in dict.fromkeys(run_ids):
                note = self._next.get(run_id)
                if self._live(run_id) is not None or (note is not None and note[1] > now):
                    continue
                out[run_id] = uuid.uuid4().hex
                self._next[run_id] = (out[run_id], now + self.note_ttl_s)
        return out

    def holds(self, key: str, token: str) -> bool:
        run_id = key[len(self.keys.lease("")):]
        with self._lock:
            entry = self._live(run_id)
            return entry is not None and entry[0] == token


class LocalInbox:
    """The same, in this process's memory (embedded mode)."""

    def __init__(self, holds: Callable[[str, str], bool] = lambda key, token: True) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, dict[str, tuple[Event, dict[str, Any]]]] = {}
        self._seq = 0
        self._holds = holds  # (the leases' check, for an answer given under a lease)
        #: Delivery marks (webhooks): key -> (monotonic expiry, record).
        self._deliveries: dict[str, tuple[float, str]] = {}
        self._purge_at = 1024

    def put(self, event: Event, payload: bytes, limits: tuple[int, int], ops: Sequence[Any] = (),
            answer: Optional[OneAnswer] = None, delivery: Optional[Delivery] = None) -> None:
        """Raises InboxFullError, RunNotWaitingError and DuplicateDeliveryError as ``RedisInbox.put``."""
        with self._lock:
            seen = self._seen_locked(delivery.key) if delivery is not None else None
            if delivery is not None and seen is not None:
                raise DuplicateDeliveryError(delivery.key, seen)
            box = self._events.setdefault(event.run_id, {})
            if event.event_id in box:
                return
            if answer is not None and answer.lease is not None and not self._holds(*answer.lease):
                raise RunMovedError(event.run_id)  # the caller's lease expired: the run may have moved
            if answer is not None and any(e.wait_key in (None, answer.wait_key) for e, _ in box.values()):
                raise RunNotWaitingError(event.run_id, "waiting", "already has an event queued for its wait")
            if len(box) >= limits[0]:
                raise InboxFullError(event.run_id, f"holds {len(box)} unapplied events, the limit (max_inbox_events)")
            size = sum(e.size for e, _ in box.values()) + len(payload)
            if size > limits[1]:
                raise InboxFullError(event.run_id, f"would hold {size} bytes of payloads, over the limit of "
                                                   f"{limits[1]} (max_inbox_bytes)")
            self._seq += 1
            event.seq = self._seq
            box[event.event_id] = (event, json.loads(payload))
            if delivery is not None:
                self._deliveries[delivery.key] = (time.monotonic() + delivery.retention_s, delivery.record)

    def delivered(self, key: str) -> Optional[str]:
        with self._lock:
            return self._seen_locked(key)

    def _seen_locked(self, key: str) -> Optional[str]:
        """The record of a delivery still within its retention. Expired marks are dropped
        when the book has doubled since the last clean-up (amortised, never a full scan per call)."""
        now = time.monotonic()
        if len(self._deliveries) >= self._purge_at:
            for stale in [k for k, (until, _) in self._deliveries.items() if until <= now]:
                del self._deliveries[stale]
            self._purge_at = max(1024, 2 * len(self._deliveries))
        found = self._deliveries.get(key)
        return found[1] if found is not None and found[0] > now else None

    def pending(self, run_id: str) -> InboxRead:
        with self._lock:
            items = sorted(self._events.get(run_id, {}).values(), key=lambda pair: pair[0].seq)
        return InboxRead([_copy(event, payload) for event, payload in items], [])

    def load_payload(self, event: Event) -> Optional[dict[str, Any]]:
        with self._lock:
            pair = self._events.get(event.run_id, {}).get(event.event_id)
        return dict(pair[1]) if pair is not None else None

    def has(self, run_id: str, event_id: str) -> bool:
        with self._lock:
            return event_id in self._events.get(run_id, {})

    def mark_applying(self, event: Event, updated_at: Optional[str], fence: Optional[Fence] = None) -> None:
        with self._lock:  # (in this process the lease is held by the caller's thread: no fence)
            event.applying_since = updated_at
            pair = self._events.get(event.run_id, {}).get(event.event_id)
            if pair is not None:
                pair[0].applying_since = event.applying_since

    def done(self, run_id: str, event_ids: Sequence[str]) -> None:
        with self._lock:
            box = self._events.get(run_id, {})
            for event_id in event_ids:
                box.pop(event_id, None)
            if not box:
                self._events.pop(run_id, None)

    def quarantine(self, bad: Unreadable) -> None:
        self.done(bad.run_id, [bad.event_id])

    def repair(self, run_id: str) -> list[Unreadable]:
        return []  # in memory nothing is ever undecodable

    def stale_runs(self, older_than: float) -> list[str]:
        """Runs with an event accepted at or before ``older_than`` (the embedded sweep)."""
        with self._lock:
            return [run_id for run_id, box in self._events.items()
                    if box and min(e.accepted_at for e, _ in box.values()) <= older_than]


def _copy(event: Event, payload: dict[str, Any]) -> Event:
    copy = Event(**{**event.__dict__})
    copy.payload = dict(payload)
    return copy


class LocalTimerBook:
    def __init__(self, on_armed: Any = None) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, tuple[str, float]] = {}
        self._on_armed = on_armed  # counts timers_armed (the Redis book counts in its script)

    def arm(self, run_id: str, until: str, ttl_s: float, ctx: TickContext | None = None) -> bool:
        with self._lock:
            cur = self._armed.get(run_id)
            if cur is not None and cur[0] == until and cur[1] > time.monotonic():
                return False
            self._armed[run_id] = (until, time.monotonic() + ttl_s)
        if self._on_armed is not None:
            self._on_armed()
        return True

    def arm_after_release(self, ctx: TickContext, run_id: str, until: str, ttl_s: float,
                          eta: Any) -> None:
        """In this process nothing rides a pipeline: note it now, send after the release."""
        if self.arm(run_id, until, ttl_s):
            ctx.sends.append((run_id, "timer", eta, None))

    def fired(self, run_id: str, ctx: TickContext | None = None) -> None:
        with self._lock:
            self._armed.pop(run_id, None)


class LocalStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._errors: list[str] = []
        self._last: str | None = None

    def incr(self, name: str, by: int = 1, ctx: TickContext | None = None) -> None:
        with self._lock:
            self._counts[name] += by

    def error(self, message: str) -> None:
        with self._lock:
            self._counts["runs_failed"] += 1
            self._errors.append(f"{now_iso()}: {clip_error(message)}")
            del self._errors[:-MAX_ERRORS]

    def polled(self) -> None:
        with self._lock:
            self._counts["poll_cycles"] += 1
            self._last = now_iso()

    def snapshot(self) -> SchedulerStats:
        with self._lock:
            return build_snapshot(dict(self._counts), self._last, list(self._errors))


class LocalMarks:
    """The same notes in a dict."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notes: dict[tuple[str, str], float] = {}

    def add_attempt(self, run_id: str, fresh: bool = False, run_key: str | None = None) -> int:
        with self._lock:
            self._notes[("attempts", run_id)] = (0 if fresh else self._notes.get(("attempts", run_id), 0)) + 1
            return int(self._notes[("attempts", run_id)])

    def back_off(self, run_id: str, until: float) -> None:
        with self._lock:
            self._notes[("backoff", run_id)] = until

    def backoff_until(self, run_id: str) -> float | None:
        with self._lock:
            return self._notes.get(("backoff", run_id))

    def clear_attempts(self, run_id: str, ctx: TickContext | None = None) -> None:
        with self._lock:
            self._notes.pop(("attempts", run_id), None)

    def unknown_since(self, run_id: str) -> float:
        with self._lock:
            return self._notes.setdefault(("unknown", run_id), time.time())

    def clear_unknown(self, run_id: str, ctx: TickContext | None = None) -> None:
        with self._lock:
            self._notes.pop(("unknown", run_id), None)

    def moved(self, run_id: str, ctx: TickContext | None = None) -> None:
        with self._lock:
            for kind in ("attempts", "unknown", "backoff"):
                self._notes.pop((kind, run_id), None)


class LocalSweepLock:
    """The same, in this process."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def try_take(self, hold_s: float) -> bool:
        with self._lock:
            now = time.monotonic()
            if now < self._until:
                return False
            self._until = now + hold_s
            return True


class LocalSweepCursors:
    def __init__(self, stats: Stats) -> None:
        self._cursors: dict[str, Cursor] = {}
        self._stats = stats

    def begin(self) -> dict[str, Cursor]:
        self._stats.incr("sweeps")
        return dict(self._cursors)

    def end(self, cursors: dict[str, Cursor]) -> None:
        self._cursors.update(cursors)
        self._stats.polled()

