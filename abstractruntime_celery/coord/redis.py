"""The coordination state of a fleet, in Redis: leases, inboxes, the timer book, stats,
marks, and the sweep's lock and cursors. Each atomic change is one script of ``lua/``
or one pipeline; key names come from ``keys.py``. The protocols these classes meet
(and what each piece is for) are in ``lease.py``, ``inbox.py``, ``timers.py``,
``stats.py``, ``marks.py`` and ``coord/__init__.py``; the in-process twin is ``coord/local.py``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

from redis.exceptions import NoScriptError

from .. import scripts
from ..context import Fence, Op, TickContext, atomic, settle
from ..errors import (DuplicateDeliveryError, InboxFullError, LeaseBusyError, LeaseLostError, RunNotWaitingError,
                      StoreError)
from ..inbox import Delivery, Event, InboxRead, OneAnswer, RunMovedError, Unreadable
from ..keys import Keys
from ..lease import Lease
from ..marks import BACKOFF_SLACK_S, DAY_S, parse_backoff
from ..stats import MAX_ERRORS, SchedulerStats, build_snapshot, clip_error, now_iso
from ..walk import START, Cursor

log = logging.getLogger(__name__)


#: How long a "tick asked" word lives: longer than any tick holds a lease (its holder takes
#: it on release; the next holder clears it on acquire), so none is lost under a long tick.
PENDING_TTL_MS = 3600 * 1000


class RedisLeases:
    """Leases in Redis: ``{p}lease:<id>`` (token), ``{p}pending:<id>`` (a tick asked while it
    was held) and ``{p}next:<id>`` (the id of the run's one pending tick of its own)."""

    def __init__(self, client: Any, keys: Keys, ttl_s: float, note_ttl_s: float | None = None) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        #: How long the next-tick note lives (``lost_tick_after_s``): a message not delivered by
        #: then is taken for lost, and the sweep may send the run another.
        self.note_ttl_s = note_ttl_s if note_ttl_s is not None else 4 * ttl_s
        self._acquire = scripts.register(client, "lease_acquire")
        self._release = scripts.register(client, "lease_release")
        self._renew = scripts.register(client, "lease_renew")
        self._claim = scripts.register(client, "tick_claim")
        # Tokens of reserved leases whose acquire has not been sent yet (see ``reserve``):
        # the keeper thread must not renew them (there is nothing in Redis to renew).
        self._unsent: set[str] = set()
        self._unsent_lock = threading.Lock()

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def _call(self, run_id: str, token: str, message_id: str) -> tuple[list[str], list[Any]]:
        keys = [self.keys.lease(run_id), self.keys.pending(run_id), self.keys.next_tick(run_id)]
        return keys, [token, self._ttl_ms, message_id, PENDING_TTL_MS]

    def acquire(self, run_id: str, message_id: str = "") -> Lease | None:
        """Take the lease, or return None (and leave a pending word) if another holds it.
        ``message_id``: the message this tick runs for (it may be the run's pending tick)."""
        return self.acquire_reading(run_id, (), message_id)[0]

    def acquire_reading(self, run_id: str, reads: Sequence[Op],
                        message_id: str = "") -> tuple[Lease | None, list[Any]]:
        """Take the lease and run ``reads`` in the same round trip; their results (or
        errors, as values: the caller holds the lease and must release it) follow."""
        token = uuid.uuid4().hex
        keys, args = self._call(run_id, token, message_id)
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            scripts.call_in(pipe, self._acquire, keys, args)
            for read in reads:
                read(pipe)
            try:
                got, *results = pipe.execute(raise_on_error=False)
            except UnicodeDecodeError:  # a read met bytes that are not UTF-8 (a corrupt entry)
                held = self.client.get(keys[0]) == token
                return (Lease(run_id, keys[0], token) if held else None), None
            if not isinstance(got, NoScriptError):
                break
            # The server forgot its scripts (a restart): the acquire ran nothing, but the reads
            # ran without the lease. Load the script and do it all again.
            scripts.preload(self.client)  # all of them: a server with some cached runs a MULTI out of order
        if isinstance(got, Exception):
            raise got
        return (Lease(run_id, keys[0], token) if int(got) == 1 else None), results

    def reserve(self, ctx: TickContext, run_id: str) -> Lease:
        """Take the lease of a run that most likely does not exist yet (a start) without a
        round trip of its own: the acquire is queued first in the tick's write queue and
        goes with its first write. The tick sends that write before any node runs
        (the create is a commit), so no node runs unless the acquire succeeded."""
        token = uuid.uuid4().hex
        keys, args = self._call(run_id, token, ctx.message_id or "")
        script = self._acquire

        def taken(got: Any) -> None:
            self._sent(token)
            if int(got) != 1:
                raise LeaseBusyError(run_id)

        with self._unsent_lock:
            self._unsent.add(token)
        ctx.queue.add(self.client, lambda target: scripts.call_in(target, script, keys, args), taken)
        return Lease(run_id, keys[0], token)

    def _sent(self, token: str) -> None:
        with self._unsent_lock:
            self._unsent.discard(token)

    def renew(self, lease: Lease) -> bool:
        """Extend the lease; False if it was lost (expired and maybe taken). A reserved lease
        not sent yet is kept as it is: its acquire, when it goes, sets a full time to live."""
        with self._unsent_lock:
            if lease.token in self._unsent:
                return True
        return bool(int(self._renew(keys=[lease.key], args=[lease.token, self._ttl_ms])))

    def release(self, lease: Lease, ctx: TickContext) -> bool:
        """Give the lease back, in one round trip with the tick's queued writes: the writes
        before the release script, counters and cleanups after it. True (also noted in
        ``ctx.send_own``) if the run must now get a tick of its own, with message id
        ``ctx.next_id``: it needs one (``ctx.want_more``) or one was asked while we held the
        lease, and none is pending already (``lua/lease_release.lua``).

        Raises:
            Exception: a queued write was refused (LeaseLostError, RunControlledError, ...)
                or failed; the lease is released (if still ours) all the same.
        """
        keys = [lease.key, self.keys.pending(lease.run_id), self.keys.next_tick(lease.run_id), *ctx.release_clears]
        note_ttl_s = ctx.note_ttl_s if ctx.note_ttl_s is not None else self.note_ttl_s
        args = [lease.token, "1" if ctx.want_more else "0", ctx.next_id, max(1, int(note_ttl_s * 1000)),
                len(ctx.release_clears)]
        for index, ((_, key), (_, counts)) in enumerate(ctx.queue.counts.items(), start=1):
            keys.append(key)  # the tick's counters ride the release script: no command of their own
            args += [x for name, n in counts.items() if n for x in (index, name, n)]
        self._sent(lease.token)  # sent now at the latest (its check runs below)
        items = ctx.queue.take(self.client)
        after, ctx.queue.after, ctx.queue.counts = ctx.queue.after, [], {}
        pipe = self.client.pipeline(transaction=atomic(len(items) + 1 + len(after)))
        for item in items:
            item.op(pipe)
        scripts.call_in(pipe, self._release, keys, args)
        for item in after:
            item.op(pipe)
        results = pipe.execute(raise_on_error=False)
        n = len(items)
        refused: Exception | None = None
        try:  # first, in order: a NOSCRIPT'd save must run again while we still hold the lease
            ctx.queue.settle(self.client, items, results[:n])
        except Exception as exc:
            refused = exc
        released, send = (int(x) for x in scripts.settle(results[n], self._release, keys, args))
        ctx.send_own = send == 1
        for item, result in zip(after, results[n + 1:]):
            try:
                settle(self.client, [item], [result])
            except Exception as exc:  # counters and bookkeeping: the run's state is already saved
                log.warning("a deferred write of run %s failed: %s", lease.run_id, exc)
        if released < 0:
            log.warning("lease on run %s was lost before release", lease.run_id)
        if refused is not None:
            raise refused
        return ctx.send_own

    def is_held(self, run_id: str) -> bool:
        return bool(self.client.exists(self.keys.lease(run_id)))

    def claim(self, run_ids: Sequence[str]) -> dict[str, str]:
        """The runs of ``run_ids`` that no tick holds and none is queued for, each with the
        id of the tick message to send it now (noted as its pending tick: ``lua/tick_claim.lua``).
        One round trip."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        ttl, pipe = max(1, int(self.note_ttl_s * 1000)), self.client.pipeline(transaction=False)
        calls = []
        for run_id in ids:
            keys, args = [self.keys.lease(run_id), self.keys.next_tick(run_id)], [uuid.uuid4().hex, ttl]
            scripts.call_in(pipe, self._claim, keys, args)
            calls.append((run_id, keys, args))
        replies = pipe.execute(raise_on_error=False)
        return {run_id: str(args[0]) for (run_id, keys, args), reply in zip(calls, replies)
                if int(scripts.settle(reply, self._claim, keys, args)) == 1}

    def holds(self, key: str, token: str) -> bool:
        """True if the lease key still holds ``token`` (the fence of non-Redis stores)."""
        value = self.client.get(key)
        if isinstance(value, bytes):
            value = value.decode()
        return value == token


def _parse_body(raw: Any) -> Optional[dict[str, Any]]:
    if raw is None or raw == "":
        return None
    data = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    return data


class RedisInbox:
    """The inbox in Redis (see ``keys.py``: inbox, inbox-body, inbox-runs, event-seq)."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._put = scripts.register(client, "inbox_put")
        self._read = scripts.register(client, "inbox_read")
        self._done = scripts.register(client, "inbox_done")
        self._mark = scripts.register(client, "inbox_mark")

    def put(self, event: Event, payload: bytes, limits: tuple[int, int], ops: Sequence[Any] = (),
            answer: Optional[OneAnswer] = None, delivery: Optional[Delivery] = None) -> None:
        """Store the event durably (``inbox_put.lua``), with ``ops`` in the same round trip.
        ``answer``: the event answers the run's current wait (the seed's rule: a wait is
        answered once); refuse it if an event for that wait is already queued, or if the
        run's record no longer has the version the caller checked. ``delivery``: store it
        only if no delivery with its key was stored (the mark is written in the same script).

        Raises:
            InboxFullError: the run's inbox holds ``limits[0]`` events or would exceed
                ``limits[1]`` payload bytes (nothing was stored).
            RunNotWaitingError: ``answer`` and the wait already has its event.
            RunMovedError: ``answer`` and the run's version is not ``answer.version`` (the
                caller checks the run again).
            DuplicateDeliveryError: ``delivery`` was stored before (nothing was stored now).
            StoreError: a key the put writes holds another type (nothing was written).
        """
        k = self.keys
        keys = [k.inbox(event.run_id), k.inbox_body(event.run_id), k.inbox_runs, k.event_seq, k.stats]
        args = [event.event_id, event.header(), payload, event.run_id, event.accepted_at, limits[0], limits[1],
                "1" if answer is not None else "0", answer.wait_key if answer is not None else "", ""]
        if answer is not None and answer.run_key is not None and answer.version is not None:
            keys.append(answer.run_key)
            args[-1] = str(answer.version)
        elif answer is not None and answer.lease is not None:
            keys.append(answer.lease[0])
            args.append(answer.lease[1])
        if delivery is not None:
            args += [""] * (11 - len(args)) + [delivery.record, max(1, int(delivery.retention_s * 1000))]
            keys.append(delivery.key)
        pipe = self.client.pipeline(transaction=False)
        scripts.call_in(pipe, self._put, keys, args)
        for op in ops:
            op(pipe)
        reply, *results = pipe.execute(raise_on_error=False)
        code, value = scripts.settle(reply, self._put, keys, args)
        scripts.run_after(self.client, ops, results)
        if int(code) == -1:
            raise InboxFullError(event.run_id, f"holds {value} unapplied events, the limit (max_inbox_events)")
        if int(code) == -2:
            raise InboxFullError(event.run_id, f"would hold {value} bytes of payloads, over the limit of "
                                               f"{limits[1]} (max_inbox_bytes)")
        if int(code) == -3:
            raise RunNotWaitingError(event.run_id, "waiting", "already has an event queued for its wait")
        if int(code) == -5:
            raise RunMovedError(event.run_id)
        if int(code) == 2 and delivery is not None:
            raise DuplicateDeliveryError(delivery.key, str(value))
        if int(code) == -6:
            raise StoreError(f"Redis key {value!r} holds another type than the inbox writes; "
                             f"event for run '{event.run_id}' not stored")
        event.seq = int(value)

    def delivered(self, key: str) -> Optional[str]:
        """The record of the delivery stored under ``key``, or None."""
        value = self.client.get(key)
        return value.decode() if isinstance(value, bytes) else value

    def read_op(self, run_id: str, run_key: Optional[str]) -> Any:
        """The tick's read of the inbox as a pipeline step (``inbox_read.lua``): every header,
        and the payload of the event the run can take now when ``run_key`` is given."""
        keys = [self.keys.inbox(run_id), self.keys.inbox_body(run_id)] + ([run_key] if run_key else [])
        script = self._read
        return lambda pipe: scripts.call_in(pipe, script, keys, [])

    def parse_read(self, run_id: str, raw: Any) -> InboxRead:
        """The reply of ``read_op``; the chosen event carries its payload.

        Raises:
            Exception: the Redis error of the read.
        """
        if isinstance(raw, Exception):
            raise raw
        headers, chosen, body = raw
        read = self._parse(run_id, headers)
        if chosen:
            for event in read.events:
                if event.event_id == chosen:
                    try:
                        event.payload = _parse_body(body)
                    except ValueError as exc:
                        read.unreadable.append(Unreadable(run_id, event.event_id, str(body), str(exc)))
                        read.events.remove(event)
                    break
        return read

    def _parse(self, run_id: str, pairs: Sequence[Any]) -> InboxRead:
        """Events from ``HGETALL`` of the inbox (field, value, ...); an entry that is not an
        event of this version, or whose header names another id than its field, is unreadable."""
        events, bad = [], []
        for field, raw in zip(pairs[0::2], pairs[1::2]):
            event_id = field.decode(errors="replace") if isinstance(field, bytes) else str(field)
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            try:
                event = Event.from_header(text)
                if event.event_id != event_id or event.run_id != run_id:
                    raise ValueError(f"names event {event.event_id!r} of run {event.run_id!r}")
                events.append(event)
            except (ValueError, KeyError, TypeError) as exc:
                bad.append(Unreadable(run_id, event_id, text, f"{type(exc).__name__}: {exc}"))
        return InboxRead(sorted(events, key=lambda e: e.seq), bad)

    def pending(self, run_id: str) -> InboxRead:
        """Every event of the run (headers only); undecodable entries are moved aside first.

        Raises:
            StoreUnavailableError, redis errors: Redis cannot be reached.
        """
        try:
            return self.parse_read(run_id, self.read_op(run_id, None)(self.client))
        except UnicodeDecodeError:
            bad = self.repair(run_id)
            read = self.parse_read(run_id, self.read_op(run_id, None)(self.client))
            read.unreadable += [Unreadable(b.run_id, b.event_id, b.raw, b.error, moved=True) for b in bad]
            return read

    def repair(self, run_id: str) -> list[Unreadable]:
        """Move every entry of the run's inbox that is not UTF-8 (corruption: we never write
        one) to ``{p}quarantine:<id>``, as its raw bytes; returns them (already moved)."""
        raw = self._raw_client()
        inbox, body = self.keys.inbox(run_id), self.keys.inbox_body(run_id)
        bad: list[Unreadable] = []
        for key in (inbox, body):
            for field, value in raw.hgetall(key).items():
                try:
                    field.decode("utf-8"), value.decode("utf-8")
                except UnicodeDecodeError:
                    event_id = field.decode("utf-8", "backslashreplace")
                    pipe = raw.pipeline(transaction=True)
                    pipe.hset(self.keys.quarantine(run_id), event_id, value)
                    pipe.hdel(inbox, field)
                    pipe.hdel(body, field)
                    pipe.execute()
                    bad.append(Unreadable(run_id, event_id, value.decode("utf-8", "backslashreplace"),
                                          "not UTF-8", moved=True))
        if bad and not raw.hlen(inbox):
            raw.zrem(self.keys.inbox_runs, run_id)
        return bad

    def _raw_client(self) -> Any:
        """A client on the same server that returns bytes (to read what does not decode)."""
        if getattr(self, "_raw", None) is None:
            import redis

            kwargs = dict(self.client.connection_pool.connection_kwargs, decode_responses=False)
            self._raw = redis.Redis(connection_pool=redis.ConnectionPool(
                connection_class=self.client.connection_pool.connection_class, **kwargs))
        return self._raw

    def load_payload(self, event: Event) -> Optional[dict[str, Any]]:
        """Raises ValueError if the stored payload is not a JSON object."""
        return _parse_body(self.client.hget(self.keys.inbox_body(event.run_id), event.event_id))

    def has(self, run_id: str, event_id: str) -> bool:
        return bool(self.client.hexists(self.keys.inbox(run_id), event_id))

    def mark_applying(self, event: Event, updated_at: Optional[str], fence: Optional[Fence] = None) -> None:
        """Write the event's *applying* mark now (before the commit it precedes), or clear it
        (``updated_at`` None), fenced by the run's lease (``lua/inbox_mark.lua``).

        Raises:
            LeaseLostError: ``fence`` no longer holds; nothing was written.
        """
        event.applying_since = updated_at
        entry = f"{event.seq}|{event.header()}"
        if fence is None:
            self.client.hset(self.keys.inbox(event.run_id), event.event_id, entry)
        elif self._mark(keys=[self.keys.inbox(event.run_id), fence.key], args=[event.event_id, entry, fence.token]) == 0:
            raise LeaseLostError(event.run_id)

    def done(self, run_id: str, event_ids: Sequence[str]) -> None:
        """Drop events now (after their commit, or of a run that has ended)."""
        if not event_ids:
            return
        k = self.keys
        keys = [k.inbox(run_id), k.inbox_body(run_id), k.inbox_runs]
        self._done(keys=keys, args=[run_id, *event_ids])

    def quarantine(self, bad: Unreadable) -> None:
        """Move an unreadable entry out of the inbox (to ``{p}quarantine:<id>``), so it stops
        failing every tick; the caller reports it (``stats.errors``, ``on_run_failed``)."""
        self.client.hset(self.keys.quarantine(bad.run_id), bad.event_id, bad.raw)
        self.done(bad.run_id, [bad.event_id])


class RedisTimerBook:
    """``{p}timer:<id>`` = the ``until`` a timer message is in flight for."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.keys = keys
        self._client = client
        self._arm = scripts.register(client, "timer_arm")

    def arm(self, run_id: str, until: str, ttl_s: float, ctx: TickContext | None = None) -> bool:
        """True if no message was in flight for this (run, until); records that one now is.
        In a tick, it rides the round trip that sends the tick's queued writes."""
        keys, args = [self.keys.timer(run_id), self.keys.stats], [until, max(1000, int(ttl_s * 1000))]
        script = self._arm

        def call(target: Any) -> Any:
            return scripts.call_in(target, script, keys, args)

        reply = ctx.queue.send_before(self._client, call) if ctx is not None else call(self._client)
        return bool(int(scripts.settle(reply, script, keys, args)))

    def arm_after_release(self, ctx: TickContext, run_id: str, until: str, ttl_s: float,
                          eta: datetime | None) -> None:
        """``arm`` in the release pipeline of ``ctx``: if the note is taken, the message is
        sent after the release (with the tick's other messages)."""
        keys, args = [self.keys.timer(run_id), self.keys.stats], [until, max(1000, int(ttl_s * 1000))]
        script = self._arm

        def armed(reply: Any) -> None:
            if int(reply) == 1:
                ctx.sends.append((run_id, "timer", eta, None))

        ctx.queue.add_after(self._client, lambda target: scripts.call_in(target, script, keys, args), armed)

    def fired(self, run_id: str, ctx: TickContext | None = None) -> None:
        """A timer message was delivered: none is in flight any more (so a later wait
        with the same ``until`` is armed again). In a tick, it goes with the release."""
        key = self.keys.timer(run_id)
        if ctx is not None:
            ctx.queue.add_after(self._client, lambda pipe: pipe.delete(key))
        else:
            self._client.delete(key)


class RedisStats:
    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.key = keys.stats
        self.errors_key = keys.stats_errors

    def incr(self, name: str, by: int = 1, ctx: TickContext | None = None) -> None:
        """Add now, or in a tick with the tick's other counts, sent with its release."""
        if ctx is not None:
            ctx.queue.count(self.client, self.key, name, by)
        else:
            self.client.hincrby(self.key, name, by)

    def error(self, message: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.key, "runs_failed", 1)
        pipe.lpush(self.errors_key, f"{now_iso()}: {clip_error(message)}")
        pipe.ltrim(self.errors_key, 0, MAX_ERRORS - 1)
        pipe.execute()

    def polled(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.key, "poll_cycles", 1)
        pipe.hset(self.key, "last_poll_at", now_iso())
        pipe.execute()

    def snapshot(self) -> SchedulerStats:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key)
        pipe.lrange(self.errors_key, 0, MAX_ERRORS - 1)
        raw, errs = pipe.execute()
        decoded = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                   for k, v in raw.items()}
        last = decoded.pop("last_poll_at", None)
        counts = {k: int(v) for k, v in decoded.items()}
        errors = [e.decode() if isinstance(e, bytes) else e for e in reversed(errs)]
        return build_snapshot(counts, last, errors)


class RedisMarks:
    """``{p}attempts:<id>`` and ``{p}unknown:<id>``."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._add_if: Any = None  # lua/add_attempt.lua, registered on first use (a rare path)

    def add_attempt(self, run_id: str, fresh: bool = False, run_key: str | None = None) -> int:
        """Count one more failed tick; returns the count (0: ``run_key`` is gone, nothing counted)."""
        if run_key is not None:
            if self._add_if is None:
                self._add_if = scripts.register(self.client, "add_attempt")
            return int(self._add_if(keys=[self.keys.attempts(run_id), run_key], args=["1" if fresh else "", DAY_S],
                                    client=self.client))
        key, pipe = self.keys.attempts(run_id), self.client.pipeline(transaction=True)
        if fresh:
            pipe.set(key, 1)
        else:
            pipe.incr(key)
        pipe.expire(key, DAY_S)
        return int(pipe.execute()[0])

    def back_off(self, run_id: str, until: float) -> None:
        ttl_ms = max(1, int((until - time.time() + BACKOFF_SLACK_S) * 1000))
        self.client.set(self.keys.backoff(run_id), repr(until), px=ttl_ms)

    def backoff_until(self, run_id: str) -> float | None:
        return parse_backoff(self.client.get(self.keys.backoff(run_id)))

    def clear_attempts(self, run_id: str, ctx: TickContext | None = None) -> None:
        self._clear(run_id, ctx, self.keys.attempts(run_id))

    def unknown_since(self, run_id: str) -> float:
        """When this run was first seen with an unregistered workflow (now, if just now)."""
        key, now = self.keys.unknown(run_id), time.time()
        self.client.set(key, now, nx=True, ex=30 * DAY_S)
        return float(self.client.get(key) or now)

    def clear_unknown(self, run_id: str, ctx: TickContext | None = None) -> None:
        self._clear(run_id, ctx, self.keys.unknown(run_id))

    def moved(self, run_id: str, ctx: TickContext | None = None) -> None:
        self._clear(run_id, ctx, self.keys.attempts(run_id), self.keys.unknown(run_id), self.keys.backoff(run_id))

    def _clear(self, run_id: str, ctx: TickContext | None, *notes: str) -> None:
        """Now; in a tick, by its lease release and only if the lease is still the tick's
        (``lua/lease_release.lua``): a tick that lost its lease never erases the notes of
        the tick that took over."""
        if ctx is None or ctx.fence(run_id) is None:
            self.client.delete(*notes)
        else:
            ctx.release_clears.extend(n for n in notes if n not in ctx.release_clears)


class RedisSweepLock:
    """At most one sweep per interval across the cluster, even with two beats: ``{p}sweep-lock``,
    never released, expires after ``hold_s`` (a second beat in the same interval skips)."""

    def __init__(self, client: Any, key: str) -> None:
        self.client = client
        self.key = key

    def try_take(self, hold_s: float) -> bool:
        return bool(self.client.set(self.key, uuid.uuid4().hex, nx=True, px=max(1, int(hold_s * 1000))))


class RedisSweepCursors:
    """``{p}sweep-cursor`` hash: pass name -> ``<score>|<last member>``; one round trip at each end."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.key = keys.sweep_cursor
        self.stats = keys.stats

    def begin(self) -> dict[str, Cursor]:
        """Count the sweep and read every pass's cursor."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.stats, "sweeps", 1)
        pipe.hgetall(self.key)
        _, raw = pipe.execute()
        return {name: _cursor(value) for name, value in raw.items()}

    def end(self, cursors: dict[str, Cursor]) -> None:
        """Write the cursors, and what the seed's stats say of a poll cycle."""
        pipe = self.client.pipeline(transaction=False)
        if cursors:
            pipe.hset(self.key, mapping={name: f"{c[0]!r}|{c[1]}" for name, c in cursors.items()})
        pipe.hincrby(self.stats, "poll_cycles", 1)
        pipe.hset(self.stats, "last_poll_at", datetime.now(timezone.utc).isoformat())
        pipe.execute()


def _cursor(raw: Any) -> Cursor:
    try:
        score, _, member = str(raw).partition("|")
        return float(score), member
    except (TypeError, ValueError):
        return START

