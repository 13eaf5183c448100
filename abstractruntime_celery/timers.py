"""Timers: a wait due within the horizon gets a broker ETA; later ones wait for the sweep.

No worker may hold an ETA message past the horizon (Redis re-delivers unacked
messages after ``visibility_timeout``, RabbitMQ closes a consumer that holds
one past ``consumer_timeout``), so this module decides, for one ``until``,
whether to send a tick now, at an ETA, or not at all yet. The *timer book*
remembers which (run, until) already has a message in flight, so re-ticks and
sweeps do not pile up copies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from . import _scripts
from .batch import send_ahead
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
    def arm(self, run_id: str, until: str, ttl_s: float) -> bool: ...


class RedisTimerBook:
    """``<prefix>timer:<run_id>`` = the ``until`` a message is in flight for."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.prefix = prefix
        self._client = client
        self._arm = _scripts.register(client, "timer_arm")

    def arm(self, run_id: str, until: str, ttl_s: float) -> bool:
        """True if no message was in flight for this (run, until); records that one now is.
        In a tick, it rides the round trip that sends the tick's queued writes."""
        keys, args = [f"{self.prefix}timer:{run_id}"], [until, max(1000, int(ttl_s * 1000))]
        reply = send_ahead(self._client, lambda target: _scripts.call_in(target, self._arm, keys, args))
        return bool(int(_scripts.settle(reply, self._arm, keys, args)))


class LocalTimerBook:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, tuple[str, float]] = {}

    def arm(self, run_id: str, until: str, ttl_s: float) -> bool:
        with self._lock:
            cur = self._armed.get(run_id)
            if cur is not None and cur[0] == until and cur[1] > time.monotonic():
                return False
            self._armed[run_id] = (until, time.monotonic() + ttl_s)
            return True
