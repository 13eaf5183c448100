"""A store that is down is an outage to wait out, not a bad message to drop.

A start, tick or resume task that cannot reach its store (Redis refused or timed
out, SQLite locked) goes back to the broker with a backoff (``retry_later``),
instead of being acknowledged and lost; its log says so in one line, with the
cause, not in a page of chained tracebacks. A retried message keeps its task
id, so a retried start still makes exactly one run (its id is the task id).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, Iterator, Optional

from .errors import StoreUnavailableError

log = logging.getLogger(__name__)

__all__ = ["find_outage", "one_line", "retry_later"]

#: The most retries counted into the backoff (it is capped long before).
MAX_COUNTED_RETRIES = 30
#: Words of SQLite's ``OperationalError`` that mean "try again later".
SQLITE_BUSY = ("locked", "busy", "unable to open")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        # (``raise X from None`` hides the context: the error said all it had to)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _is_down(exc: BaseException) -> bool:
    import redis

    if isinstance(exc, StoreUnavailableError):
        return True
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return True
    return isinstance(exc, sqlite3.OperationalError) and any(w in str(exc).lower() for w in SQLITE_BUSY)


def find_outage(exc: BaseException, driver: Any = None) -> Optional[BaseException]:
    """The error in ``exc``'s chain that says the store or the coordination Redis is
    unavailable, or None. Our own ``StoreUnavailableError`` always counts (only our
    clients raise it); a raw redis-py or SQLite error counts only if the store does not
    answer a ping now (with ``driver``), so a node whose own Redis call failed stays a
    node failure, counted and retried by the tick path. Raises nothing."""
    found = [e for e in _chain(exc) if _is_down(e)]
    ours = next((e for e in found if isinstance(e, StoreUnavailableError)), None)
    if ours is not None or not found:
        return ours
    if driver is None:
        return found[0]
    from .startcheck import ping

    try:
        ping(driver)
    except Exception:  # noqa: BLE001 - any failure to answer is the outage we suspected
        return found[0]
    return found[0] if isinstance(found[0], sqlite3.OperationalError) else None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, cut at ``limit`` characters."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}"


def retry_later(task: Any, settings: Any, outage: BaseException, what: str) -> BaseException:
    """Send ``task``'s message again after a backoff (``retry_backoff_s`` doubling up to
    ``retry_backoff_max_s``, capped at ``timer_horizon_s``, with jitter), with the same task id
    and arguments, and log one line naming the cause. Returns the exception the task must
    raise (Celery's ``Retry``), never sends the message twice.

    Raises:
        Exception: the broker's error, if the retry itself cannot be sent.
    """
    from .tick import retry_delay

    retries = int(getattr(task.request, "retries", 0) or 0)
    delay = retry_delay(settings, min(retries + 1, MAX_COUNTED_RETRIES))
    log.warning("%s: store unavailable (%s); retried in %.1fs (retry %d)", what, one_line(outage), delay,
                retries + 1)
    return task.retry(countdown=delay, exc=outage, throw=False, max_retries=None)
