"""Durable per-run event inboxes.

``resume_event`` writes the event here before it returns, so an event outlives
lost messages, crashed workers and runs that have not reached their wait yet.
The tick path applies events under the run's lease, in order, one at a time:
it first marks the entry *applying* with the run's ``updated_at``, commits the
resume, then drops the entry. After a crash between those steps the mark says
whether the resume was committed (the run changed since) or not (apply again).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Protocol, Sequence

from . import _scripts
from .batch import Op, ahead, collecting_ahead, defer


@dataclass
class Event:
    """One accepted event, waiting to be applied to its run."""

    event_id: str
    run_id: str
    wait_key: str | None
    payload: dict[str, Any]
    accepted_at: float
    seq: int = 0
    #: ``updated_at`` of the run when we began applying it; None until then.
    applying_since: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Event":
        return cls(**json.loads(raw))


def new_event_id() -> str:
    return uuid.uuid4().hex


class Inbox(Protocol):
    def put(self, event: Event, ops: Sequence[Op] = ()) -> None: ...
    def pending(self, run_id: str) -> list[Event]: ...
    def has(self, run_id: str, event_id: str) -> bool: ...
    def mark_applying(self, event: Event, updated_at: str | None) -> None: ...
    def done(self, run_id: str, event_id: str) -> None: ...
    def stale_runs(self, older_than: float, limit: int) -> list[str]: ...


class RedisInbox:
    """``<prefix>inbox:<run_id>`` hash (event_id -> JSON) and ``<prefix>inbox:runs`` zset
    (run_id scored by its oldest event's acceptance time, for the sweep)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._done = _scripts.register(client, "inbox_done")
        self._put = _scripts.register(client, "inbox_put")

    def _key(self, run_id: str) -> str:
        return f"{self.prefix}inbox:{run_id}"

    @property
    def _runs_key(self) -> str:
        return f"{self.prefix}inbox:runs"

    def put(self, event: Event, ops: Sequence[Op] = ()) -> None:
        """Store the event durably (``inbox_put.lua``), with ``ops`` in the same round trip."""
        keys = [self._key(event.run_id), self._runs_key, f"{self.prefix}inbox:seq"]
        args = [event.event_id, event.to_json(), event.run_id, event.accepted_at]
        pipe = self.client.pipeline(transaction=False)
        _scripts.call_in(pipe, self._put, keys, args)
        for op in ops:
            op(pipe)
        seq, *results = pipe.execute(raise_on_error=False)
        event.seq = int(_scripts.settle(seq, self._put, keys, args))
        _scripts.run_ops(self.client, ops, results)

    def pending(self, run_id: str) -> list[Event]:
        return self.parse(self.client.hvals(self._key(run_id)))

    def read_op(self, run_id: str) -> Any:
        """``pending`` as a pipeline step (the tick path reads it with the lease)."""
        key = self._key(run_id)
        return lambda pipe: pipe.hvals(key)

    @staticmethod
    def parse(raw: list[Any]) -> list[Event]:
        """Events from their stored ``<seq>|<json>`` values, oldest first."""
        events = []
        for value in raw:
            seq, _, text = (value.decode() if isinstance(value, bytes) else value).partition("|")
            event = Event.from_json(text)
            event.seq = int(seq)
            events.append(event)
        return sorted(events, key=lambda e: e.seq)

    def has(self, run_id: str, event_id: str) -> bool:
        return bool(self.client.hexists(self._key(run_id), event_id))

    def mark_applying(self, event: Event, updated_at: str | None) -> None:
        """Write the event's *applying* mark. Inside a tick it goes ahead of the resume's
        save, in the same pipeline (``batch.ahead``): the mark still lands first."""
        event.applying_since = updated_at or ""
        key, field, value = self._key(event.run_id), event.event_id, f"{event.seq}|{event.to_json()}"
        if collecting_ahead():
            ahead(self.client, lambda target: target.hset(key, field, value))
        else:
            self.client.hset(key, field, value)

    def done(self, run_id: str, event_id: str) -> None:
        """Drop an applied event. Inside a tick this rides the lease release: if we crash
        first, the event's *applying* mark tells the next tick it was applied."""
        keys, args = [self._key(run_id), self._runs_key], [event_id, run_id]
        defer(self.client, lambda pipe: _scripts.call_in(pipe, self._done, keys, args))

    def stale_runs(self, older_than: float, limit: int) -> list[str]:
        raw = self.client.zrangebyscore(self._runs_key, "-inf", older_than, start=0, num=limit)
        return [r.decode() if isinstance(r, bytes) else r for r in raw]


class LocalInbox:
    """The same, in this process's memory (embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, dict[str, Event]] = {}
        self._seq = 0

    def put(self, event: Event, ops: Sequence[Op] = ()) -> None:
        # ``ops`` stays empty here: in the embedded mode nothing defers its writes.
        with self._lock:
            self._seq += 1
            event.seq = self._seq
            self._events.setdefault(event.run_id, {})[event.event_id] = event

    def pending(self, run_id: str) -> list[Event]:
        with self._lock:
            return sorted(self._events.get(run_id, {}).values(), key=lambda e: e.seq)

    def has(self, run_id: str, event_id: str) -> bool:
        with self._lock:
            return event_id in self._events.get(run_id, {})

    def mark_applying(self, event: Event, updated_at: str | None) -> None:
        with self._lock:
            event.applying_since = updated_at or ""

    def done(self, run_id: str, event_id: str) -> None:
        with self._lock:
            events = self._events.get(run_id, {})
            events.pop(event_id, None)
            if not events:
                self._events.pop(run_id, None)

    def stale_runs(self, older_than: float, limit: int) -> list[str]:
        with self._lock:
            out = [
                run_id
                for run_id, events in self._events.items()
                if events and min(e.accepted_at for e in events.values()) <= older_than
            ]
        return out[:limit]


def now() -> float:
    return time.time()
