"""Durable per-run event inboxes.

``resume_event`` writes the event here before it returns, so an event outlives
lost messages, crashed workers and runs that have not reached their wait yet.
A tick applies events under the run's lease, one at a time, oldest first.

An event leaves the inbox only in the commit that applies it, or after it:

* with the Redis run store, the save that commits the resume drops the event
  in the same script (``lua/save_run.lua``); a refused save drops nothing;
* with the other stores the drop follows the commit. An *applying* mark,
  written before the resume, holds the run's ``updated_at``: if a crash comes
  between the commit and the drop, the next holder of the lease sees the run
  changed since and knows the event was applied. Every lease holder that saves
  the run resolves such marks first (``tick.py``, ``control.py``).

Each event is a small header (``{p}inbox:<id>``: wait key, order, size) and a
payload (``{p}inbox-body:<id>``): a tick reads every header but only the
payload it applies. Limits (events and bytes per run) are checked in the same
atomic step that stores the event.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

from . import scripts
from .errors import InboxFullError
from .keys import Keys

log = logging.getLogger(__name__)

#: How much of an unreadable entry a quarantine record keeps.
QUARANTINE_QUOTE = 200


@dataclass
class Event:
    """One accepted event, waiting to be applied to its run."""

    event_id: str
    run_id: str
    wait_key: Optional[str]
    accepted_at: float
    #: Answers only an EVENT, USER or JOB wait under exactly ``wait_key`` (strict mode).
    strict: bool = False
    size: int = 0
    seq: int = 0
    #: ``updated_at`` of the run when we began applying it (stores without an atomic drop).
    applying_since: Optional[str] = None
    #: The payload, once read (a tick reads only the one it applies).
    payload: Optional[dict[str, Any]] = None

    def header(self) -> str:
        return json.dumps({"event_id": self.event_id, "run_id": self.run_id, "wait_key": self.wait_key,
                           "accepted_at": self.accepted_at, "strict": self.strict, "size": self.size,
                           "applying_since": self.applying_since}, separators=(",", ":"))

    @classmethod
    def from_header(cls, raw: str) -> "Event":
        """Raises ValueError, KeyError or TypeError for an entry of another format."""
        seq, sep, text = raw.partition("|")
        data = json.loads(text)
        if not sep or not isinstance(data, dict):
            raise ValueError("not '<seq>|<header JSON>'")
        wait_key = data["wait_key"]
        if wait_key is not None and not isinstance(wait_key, str):
            raise TypeError("wait_key is not a string")
        return cls(event_id=str(data["event_id"]), run_id=str(data["run_id"]), wait_key=wait_key,
                   accepted_at=float(data["accepted_at"]), strict=bool(data.get("strict", False)),
                   size=int(data.get("size", 0)), seq=int(seq), applying_since=data.get("applying_since"))


@dataclass
class Unreadable:
    """An inbox entry that is not an event of this version (or is corrupt)."""

    run_id: str
    event_id: str
    raw: str
    error: str


@dataclass
class InboxRead:
    """What a tick read of one inbox with its lease."""

    events: list[Event]
    unreadable: list[Unreadable]


def new_event_id() -> str:
    return uuid.uuid4().hex


def quote(text: Any, limit: int = 120) -> str:
    """``repr`` of a caller-supplied value, cut to ``limit`` characters (for error records)."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[:limit]}...(+{len(shown) - limit} chars)"


class Inbox(Protocol):
    def put(self, event: Event, payload: bytes, limits: tuple[int, int], ops: Sequence[Any] = ()) -> None: ...
    def pending(self, run_id: str) -> InboxRead: ...
    def load_payload(self, event: Event) -> Optional[dict[str, Any]]: ...
    def has(self, run_id: str, event_id: str) -> bool: ...
    def mark_applying(self, event: Event, updated_at: Optional[str]) -> None: ...
    def done(self, run_id: str, event_ids: Sequence[str]) -> None: ...
    def quarantine(self, bad: Unreadable) -> None: ...


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

    def put(self, event: Event, payload: bytes, limits: tuple[int, int], ops: Sequence[Any] = ()) -> None:
        """Store the event durably (``inbox_put.lua``), with ``ops`` in the same round trip.

        Raises:
            InboxFullError: the run's inbox holds ``limits[0]`` events or would exceed
                ``limits[1]`` payload bytes (nothing was stored).
        """
        k = self.keys
        keys = [k.inbox(event.run_id), k.inbox_body(event.run_id), k.inbox_runs, k.event_seq, k.stats]
        args = [event.event_id, event.header(), payload, event.run_id, event.accepted_at, limits[0], limits[1]]
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
        event.seq = int(value)

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
        return self.parse_read(run_id, self.read_op(run_id, None)(self.client))

    def load_payload(self, event: Event) -> Optional[dict[str, Any]]:
        """Raises ValueError if the stored payload is not a JSON object."""
        return _parse_body(self.client.hget(self.keys.inbox_body(event.run_id), event.event_id))

    def has(self, run_id: str, event_id: str) -> bool:
        return bool(self.client.hexists(self.keys.inbox(run_id), event_id))

    def mark_applying(self, event: Event, updated_at: Optional[str]) -> None:
        """Write the event's *applying* mark now (before the commit it precedes)."""
        event.applying_since = updated_at or ""
        self.client.hset(self.keys.inbox(event.run_id), event.event_id, f"{event.seq}|{event.header()}")

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


def describe(bad: Unreadable) -> str:
    return (f"Run {bad.run_id}: inbox entry {quote(bad.event_id, 60)} is unreadable "
            f"({bad.error}); quarantined: {quote(bad.raw, QUARANTINE_QUOTE)}")


class LocalInbox:
    """The same, in this process's memory (embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, dict[str, tuple[Event, dict[str, Any]]]] = {}
        self._seq = 0

    def put(self, event: Event, payload: bytes, limits: tuple[int, int], ops: Sequence[Any] = ()) -> None:
        """Raises InboxFullError as ``RedisInbox.put``."""
        with self._lock:
            box = self._events.setdefault(event.run_id, {})
            if event.event_id in box:
                return
            if len(box) >= limits[0]:
                raise InboxFullError(event.run_id, f"holds {len(box)} unapplied events, the limit (max_inbox_events)")
            size = sum(e.size for e, _ in box.values()) + len(payload)
            if size > limits[1]:
                raise InboxFullError(event.run_id, f"would hold {size} bytes of payloads, over the limit of "
                                                   f"{limits[1]} (max_inbox_bytes)")
            self._seq += 1
            event.seq = self._seq
            box[event.event_id] = (event, json.loads(payload))

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

    def mark_applying(self, event: Event, updated_at: Optional[str]) -> None:
        with self._lock:
            event.applying_since = updated_at or ""
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

    def stale_runs(self, older_than: float) -> list[str]:
        """Runs with an event accepted at or before ``older_than`` (the embedded sweep)."""
        with self._lock:
            return [run_id for run_id, box in self._events.items()
                    if box and min(e.accepted_at for e, _ in box.values()) <= older_than]


def _copy(event: Event, payload: dict[str, Any]) -> Event:
    copy = Event(**{**event.__dict__})
    copy.payload = dict(payload)
    return copy
