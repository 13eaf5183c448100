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
from typing import Any, Protocol

from . import _scripts


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
    def put(self, event: Event) -> None: ...
    def pending(self, run_id: str) -> list[Event]: ...
    def has(self, run_id: str, event_id: str) -> bool: ...
    def mark_applying(self, event: Event, updated_at: str | None) -> None: ...
    def done(self, run_id: str, event_id: str) -> bool: ...
    def stale_runs(self, older_than: float, limit: int) -> list[str]: ...


class RedisInbox:
    """``<prefix>inbox:<run_id>`` hash (event_id -> JSON) and ``<prefix>inbox:runs`` zset
    (run_id scored by its oldest event's acceptance time, for the sweep)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._done = _scripts.register(client, "inbox_done")

    def _key(self, run_id: str) -> str:
        return f"{self.prefix}inbox:{run_id}"

    @property
    def _runs_key(self) -> str:
        return f"{self.prefix}inbox:runs"

    def put(self, event: Event) -> None:
        """Store the event durably (one MULTI/EXEC)."""
        event.seq = int(self.client.incr(f"{self.prefix}inbox:seq"))
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._key(event.run_id), event.event_id, event.to_json())
        pipe.zadd(self._runs_key, {event.run_id: event.accepted_at}, nx=True)
        pipe.execute()

    def pending(self, run_id: str) -> list[Event]:
        return self.parse(self.client.hvals(self._key(run_id)))

    def read_op(self, run_id: str) -> Any:
        """``pending`` as a pipeline step (the tick path reads it with the lease)."""
        key = self._key(run_id)
        return lambda pipe: pipe.hvals(key)

    @staticmethod
    def parse(raw: list[Any]) -> list[Event]:
        return sorted((Event.from_json(r) for r in raw), key=lambda e: e.seq)

    def has(self, run_id: str, event_id: str) -> bool:
        return bool(self.client.hexists(self._key(run_id), event_id))

    def mark_applying(self, event: Event, updated_at: str | None) -> None:
        event.applying_since = updated_at or ""
        self.client.hset(self._key(event.run_id), event.event_id, event.to_json())

    def done(self, run_id: str, event_id: str) -> bool:
        return bool(int(self._done(keys=[self._key(run_id), self._runs_key], args=[event_id, run_id])))

    def stale_runs(self, older_than: float, limit: int) -> list[str]:
        raw = self.client.zrangebyscore(self._runs_key, "-inf", older_than, start=0, num=limit)
        return [r.decode() if isinstance(r, bytes) else r for r in raw]


class LocalInbox:
    """The same, in this process's memory (embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, dict[str, Event]] = {}
        self._seq = 0

    def put(self, event: Event) -> None:
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

    def done(self, run_id: str, event_id: str) -> bool:
        with self._lock:
            events = self._events.get(run_id, {})
            removed = events.pop(event_id, None) is not None
            if not events:
                self._events.pop(run_id, None)
            return removed

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
