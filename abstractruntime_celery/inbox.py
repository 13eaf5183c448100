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
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol, Sequence

if TYPE_CHECKING:
    from .context import Fence


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
    #: Already moved aside (``Inbox.repair``): only to be reported.
    moved: bool = False


@dataclass
class InboxRead:
    """What a tick read of one inbox with its lease."""

    events: list[Event]
    unreadable: list[Unreadable]


@dataclass(frozen=True)
class OneAnswer:
    """The seed's rule for an event that answers a wait: the wait takes one answer, and
    only while the run is still the one the caller checked. ``run_key`` and ``version``
    (the run's record in the same Redis, and the version the caller read) let the store
    refuse an answer to a run that moved on between the caller's check and the put."""

    wait_key: str
    run_key: Optional[str] = None
    version: Optional[int] = None
    #: Stores without versions: the caller checked the run under its lease (key, token); the
    #: store refuses the answer if that lease is no longer the caller's.
    lease: Optional[tuple[str, str]] = None


@dataclass(frozen=True)
class Delivery:
    """An event that arrives as a delivery a sender may repeat (a webhook): stored at most
    once per ``key`` for ``retention_s``. The mark (``key`` -> ``record``) is written in the
    same atomic step as the event, so a retried delivery finds either both or neither."""

    key: str
    record: str
    retention_s: float


class RunMovedError(Exception):
    """Internal: the run's version changed between the caller's check and the put."""


def new_event_id() -> str:
    return uuid.uuid4().hex


def quote(text: Any, limit: int = 120) -> str:
    """``repr`` of a caller-supplied value, cut to ``limit`` characters (for error records)."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[:limit]}...(+{len(shown) - limit} chars)"


class Inbox(Protocol):
    def put(self, event: Event, payload: bytes, limits: tuple[int, int], ops: Sequence[Any] = (),
            answer: Optional[OneAnswer] = None, delivery: Optional[Delivery] = None) -> None: ...
    def delivered(self, key: str) -> Optional[str]:
        """The record of a delivery stored under ``key`` (within its retention), or None."""
        ...
    def pending(self, run_id: str) -> InboxRead: ...
    def load_payload(self, event: Event) -> Optional[dict[str, Any]]: ...
    def has(self, run_id: str, event_id: str) -> bool: ...
    def mark_applying(self, event: Event, updated_at: Optional[str], fence: Optional[Fence] = None) -> None:
        """Mark ``event`` as being applied to the run as it was at ``updated_at`` (None: clear
        the mark), only while ``fence`` (the run's lease) holds.

        Raises:
            LeaseLostError: the lease is no longer the caller's; nothing was written.
        """
        ...
    def done(self, run_id: str, event_ids: Sequence[str]) -> None: ...
    def quarantine(self, bad: Unreadable) -> None: ...
    def repair(self, run_id: str) -> list[Unreadable]: ...


def describe(bad: Unreadable) -> str:
    return (f"Run {bad.run_id}: inbox entry {quote(bad.event_id, 60)} is unreadable "
            f"({bad.error}); quarantined: {quote(bad.raw, QUARANTINE_QUOTE)}")


