"""Which store a tick message is for: its sender's key prefix and a fingerprint of where
its store lives, carried in a message header.

A worker whose key prefix or store differs from its callers' (a typo, another database)
passes every start check, takes their tick messages and finds no such run: it used to
acknowledge them, and the runs stayed RUNNING for ever. A message now names its sender's
store (``arc_store: <key prefix>@<fingerprint>``); a worker on another identity puts it
back for a worker of that store (a retry with a backoff, never at once), logs one ERROR
naming both, and counts it (``wrong_store``). Messages without the header (older senders,
messages already queued, a user's own ``send_task``) are taken as before; older workers
ignore it.

The fingerprint hashes the store's place (host resolved, port, database, socket path; the
directory or file of a store without Redis), never a password. A prefix that differs is
refused before the tick; a place that differs only when the run is missing, as the same
server may be spelled two ways.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any, Optional

from .dispatch import IDENTITY_HEADER
from .errors import AbstractRuntimeCeleryError
from .redact import redact_url

log = logging.getLogger(__name__)

__all__ = ["HEADER", "SINCE", "WrongStoreError", "identity_of", "mismatch", "put_back", "redis_place",
           "sender_of"]

#: The message header naming the sender's store.
HEADER = IDENTITY_HEADER
#: The header a put-back message carries: when a worker of another store first saw it (epoch s).
SINCE = "arc_refused_since"
#: Longest identity read from a message (a prefix is short; anything longer is not ours).
MAX_IDENTITY = 300
#: One ERROR line per sender identity per this many seconds, per process.
SAY_EVERY_S = 60.0

_said: dict[str, float] = {}
_said_lock = threading.Lock()


class WrongStoreError(AbstractRuntimeCeleryError):
    """A tick message for another store than this worker's (key prefix or store place)."""

    def __init__(self, run_id: str, theirs: str, mine: str) -> None:
        super().__init__(f"the tick of run {run_id} was sent for store {theirs!r}, and this worker reads "
                         f"{mine!r}: their key prefix or store location differ")
        self.run_id, self.theirs, self.mine = run_id, theirs, mine


def redis_place(kw: dict[str, Any]) -> tuple[Any, ...]:
    """(address, port, db, path) of redis-py connection kwargs: a host name resolved, so
    ``localhost`` and ``127.0.0.1`` meet. Raises nothing."""
    import socket

    host = kw.get("host") or "localhost"
    try:
        host = socket.gethostbyname(host)
    except OSError:
        pass  # unresolvable here: compare the name as written
    return host, int(kw.get("port") or 6379), int(kw.get("db") or 0), kw.get("path")


def _place(store: Any, store_url: str) -> str:
    """Where ``store`` keeps its runs, without credentials. Raises nothing."""
    inner = getattr(store, "inner", store)
    client = getattr(inner, "client", None) or getattr(store, "client", None)
    kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if isinstance(kw, dict):
        return "redis:" + repr(redis_place(kw))
    url = redact_url(store_url)
    scheme, sep, rest = url.partition("://")
    rest = rest.rpartition("@")[2].split("?", 1)[0] if sep else url
    return f"{scheme}:{rest}"


def identity_of(key_prefix: str, run_store: Any, coord_client: Any, store_url: str) -> str:
    """``<key prefix>@<fingerprint>``: the store a driver reads (its run store and, when
    apart, its coordination Redis). Raises nothing."""
    places = [_place(run_store, store_url)]
    if coord_client is not None and coord_client is not getattr(run_store, "client", None):
        kw = getattr(getattr(coord_client, "connection_pool", None), "connection_kwargs", None)
        coord = "redis:" + repr(redis_place(kw)) if isinstance(kw, dict) else "redis:?"
        if coord != places[0]:
            places.append(coord)
    digest = hashlib.sha256("|".join(places).encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{key_prefix}@{digest}"


def sender_of(request: Any) -> Optional[str]:
    """The store identity a delivered message names, or None (an older sender's, or a
    malformed one: taken as before). Raises nothing."""
    value = getattr(request, HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(HEADER)
    return value if isinstance(value, str) and "@" in value and len(value) <= MAX_IDENTITY else None


def mismatch(mine: str, theirs: Optional[str]) -> Optional[str]:
    """``"prefix"`` (another key prefix: refused before the tick), ``"store"`` (same prefix,
    another place: refused only if the run is missing here) or None. Raises nothing."""
    if theirs is None or not mine or theirs == mine:
        return None
    return "prefix" if theirs.rpartition("@")[0] != mine.rpartition("@")[0] else "store"


def put_back(task: Any, driver: Any, run_id: str, theirs: str, delay: float) -> Optional[BaseException]:
    """Send the message back for a worker of its store, after ``delay`` s, with one ERROR
    line (per sender identity and minute) and the ``wrong_store`` counter. Returns the
    exception the task must raise (Celery's ``Retry``), or None once the message has been
    put back for ``unknown_workflow_grace_s`` (then it is dropped, recorded in ``stats.errors``).

    Raises:
        Exception: the broker's error, if the retry itself cannot be sent.
    """
    settings, stats, mine = driver.settings, driver.coord.stats, driver.identity
    headers = dict(getattr(task.request, "headers", None) or {})
    since = headers.get(SINCE)
    now = time.time()
    first = float(since) if isinstance(since, (int, float)) and not isinstance(since, bool) else now
    error = WrongStoreError(run_id, theirs, mine)
    stats.incr("wrong_store")
    if now - first >= settings.unknown_workflow_grace_s:
        stats.error(f"{error}; put back for {settings.unknown_workflow_grace_s:.0f}s, no worker of that "
                    "store took it: dropped")
        log.error("abstractruntime_celery: %s; no worker of that store took it in %.0fs: dropped", error,
                  settings.unknown_workflow_grace_s)
        return None
    if _say_now(theirs):
        stats.error(str(error))
        log.error("abstractruntime_celery: %s. Put back for a worker of that store (in %.1fs); check "
                  "ABSTRACTRUNTIME_CELERY_KEY_PREFIX and the store URL of this worker and of its callers",
                  error, delay)
    return task.retry(countdown=delay, exc=error, throw=False, max_retries=None,
                      headers={**headers, HEADER: theirs, SINCE: first})


def _say_now(theirs: str) -> bool:
    """True at most once per ``SAY_EVERY_S`` per sender identity in this process."""
    now = time.monotonic()
    with _said_lock:
        if now - _said.get(theirs, -SAY_EVERY_S) < SAY_EVERY_S:
            return False
        if len(_said) > 1000:
            _said.clear()
        _said[theirs] = now
        return True
