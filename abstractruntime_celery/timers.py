"""Timers: a wait due within the horizon gets a broker ETA; later ones wait for the sweep.

No worker may hold an ETA message past the horizon (Redis re-delivers unacked
messages after ``visibility_timeout``, RabbitMQ closes a consumer that holds
one past ``consumer_timeout``), so this module decides, for one ``until``,
whether to send a tick now, at an ETA, or not at all yet. The *timer book*
remembers which (run, until) already has a message in flight, so re-ticks and
sweeps do not pile up copies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from .context import TickContext
from .isotime import to_epoch as parse_until

#: On brokers with native delayed delivery (RabbitMQ quorum queues), delays
#: shorter than this raise ValueError, so they are sent with no ETA and the
#: worker waits out the (sub-second) remainder itself. Redis and classic AMQP
#: queues take sub-second ETAs, so there the floor is 0.
MIN_ETA_S = 1.0


@dataclass(frozen=True)
class TimerPlan:
    """What to do about one wait's deadline."""

    send: bool
    eta: datetime | None = None

    @property
    def later(self) -> bool:
        return not self.send


def plan(until: str, horizon_s: float, now: float | None = None, min_eta_s: float = 0.0) -> TimerPlan:
    """Send now (no ETA), send with an ETA, or leave it to the sweep (beyond the horizon).

    ``min_eta_s`` is the shortest delay the broker accepts as an ETA; shorter
    (and past) deadlines are sent at once.
    """
    now = time.time() if now is None else now
    delay = parse_until(until) - now
    if delay > horizon_s:
        return TimerPlan(send=False)
    if delay <= 0 or delay < min_eta_s:
        return TimerPlan(send=True, eta=None)
    return TimerPlan(send=True, eta=datetime.fromtimestamp(parse_until(until), tz=timezone.utc))


class TimerBook(Protocol):
    """Which (run, until) has a timer message in flight (``coord/redis.py``, ``coord/local.py``)."""

    def arm(self, run_id: str, until: str, ttl_s: float, ctx: TickContext | None = None) -> bool: ...
    def arm_after_release(self, ctx: TickContext, run_id: str, until: str, ttl_s: float,
                          eta: datetime | None) -> None: ...
    def fired(self, run_id: str, ctx: TickContext | None = None) -> None: ...


class Sender(Protocol):
    """What timers need of a dispatcher."""

    min_eta_s: float

    def send(self, run_id: str, reason: str = "tick", eta: datetime | None = None) -> None: ...


class Timers:
    """Arm a run's deadline: an ETA message within the horizon, once per deadline.

    In a tick, the book's note rides the lease-release pipeline and the message is
    sent after the release (``ctx.sends``); outside one (the sweep) both go at once.
    """

    def __init__(self, book: TimerBook, sender: Sender, horizon_s: float) -> None:
        self.book = book
        self.sender = sender
        self.horizon_s = horizon_s

    @property
    def _ttl_s(self) -> float:
        return self.horizon_s + 60.0

    def arm(self, run_id: str, until: str, ctx: TickContext | None = None) -> bool:
        """Send (or queue) a tick at ``until`` if it falls within the horizon and no message
        is in flight for it yet. True if one was sent or queued (in a tick: if the note
        is taken when the release goes; the caller may not know yet, and gets True).

        Raises:
            ValueError: ``until`` is not an ISO-8601 time.
        """
        decision = plan(until, self.horizon_s, min_eta_s=self.sender.min_eta_s)
        if decision.later:
            return False  # beyond the horizon: the sweep arms it when it comes within
        if ctx is not None:
            self.book.arm_after_release(ctx, run_id, until, self._ttl_s, decision.eta)
            return True
        if not self.book.arm(run_id, until, self._ttl_s):
            return False
        self.sender.send(run_id, "timer", decision.eta)
        return True
