"""Redis connections for the stores: one pool per (url, pid), bounded retries, clear errors.

A forked worker must never share a socket with its parent, so pools are keyed
by process id as well as URL. Connecting is retried (exponential backoff, a few
attempts); a command, once sent, is never sent again. Anything that fails
becomes a ``StoreUnavailableError`` that names host and port.

Why not redis-py's own ``Retry`` for commands (read in redis-py 8.1 and 5.0.8):
a connection's ``retry`` wraps connecting *and* every command, pipeline and
pub/sub call (``Redis._execute_command``, ``Pipeline.execute``, ``PubSub._execute``),
on ConnectionError, TimeoutError and socket.timeout (``Retry``'s default
``supported_errors``). In 8.1 a failed command is re-sent on any of them, so a
write whose reply timed out (or whose connection dropped after it was sent)
runs twice or more: an INCR, an inbox RPUSH, a whole pipeline of queued writes.
5.0.8 re-sent a command only on errors listed in ``retry_on_error`` (empty
unless ``retry_on_timeout``), but retried connecting. So the pool's connections
get a zero-retry ``Retry`` and retry ``connect()`` themselves: a connection
being made carries nothing of ours yet, and its handshake (AUTH, HELLO, SELECT,
CLIENT SETINFO) is idempotent. A pooled socket the server closed is still
replaced before use (``ConnectionPool.get_connection`` checks it and reconnects).
URL options ``retry_on_timeout`` / ``retry_on_error`` change nothing here.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from ...errors import ConfigError, StoreUnavailableError
from ...redact import MASK, redact_url

__all__ = ["connect", "decodes_replies", "describe", "redis_errors", "unavailable"]

#: Connection attempts after the first one on ConnectionError / TimeoutError (never a command).
RETRIES = 3
#: Backoff: 10 ms, 20 ms, 40 ms ... capped at 0.5 s (bounded: ~0.1 s worst case).
BACKOFF = ExponentialBackoff(cap=0.5, base=0.01)
_CONNECT_RETRY = Retry(BACKOFF, RETRIES)
#: What the connections get as ``retry``: a command is tried once.
_NO_RESEND = Retry(NoBackoff(), 0)


class _RetryConnecting:
    """Mixin for redis-py connection classes: ``connect()`` is retried, with backoff."""

    def connect(self) -> None:
        base: Any = super()
        _CONNECT_RETRY.call_with_retry(base.connect, lambda _error: base.disconnect())


class _Connection(_RetryConnecting, redis.Connection):
    """TCP."""


class _SSLConnection(_RetryConnecting, redis.SSLConnection):
    """TLS (``rediss://``)."""


class _UnixConnection(_RetryConnecting, redis.UnixDomainSocketConnection):
    """Unix socket (``unix://``)."""


_CONNECTION_CLASSES: dict[str, type[Any]] = {
    "redis": _Connection, "rediss": _SSLConnection, "unix": _UnixConnection,
}

_pools: dict[tuple[str, int], redis.ConnectionPool] = {}
_pools_lock = threading.Lock()


def connect(url: str) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``).

    User, password and db number come from the URL
    (``redis://user:secret@host:6379/11``). Responses are decoded as UTF-8 str.
    One pool per (url, pid): clients made in one process share sockets, a
    forked child gets fresh ones. A ``rediss://`` URL checks the server's
    certificate against its host name (see ``_tls_options``).

    Raises:
        ConfigError: the URL is malformed (a ``ValueError``; the message quotes the URL
            with its password masked).
    """
    key = (url, os.getpid())
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            try:
                pool = redis.ConnectionPool.from_url(
                    url,
                    decode_responses=True,
                    retry=_NO_RESEND,
                    socket_connect_timeout=5.0,
                    socket_timeout=10.0,
                    health_check_interval=30,
                    **_connection_class(url),
                    **_tls_options(url),
                )
            except ValueError as exc:
                raise ConfigError(_malformed(url, exc)) from None
            _pools[key] = pool
    return redis.Redis(connection_pool=pool)


def _malformed(url: str, exc: ValueError) -> str:
    """What is wrong with ``url``, never quoting its password. redis-py's own words may
    quote a piece of it (``redis://:pa/ss@h`` gives "Port could not be cast to integer
    value as 'pa'"), so they are left out when the URL holds a secret; the original
    exception is not chained either, as Celery logs chained tracebacks too."""
    shown = redact_url(url)
    if shown == url:
        return f"Malformed Redis URL {shown!r}: {exc}"
    return f"Malformed Redis URL {shown!r} (percent-encode any of : / ? # @ in its password)"


def _connection_class(url: str) -> dict[str, Any]:
    """Our connection class for the URL's scheme (an unknown scheme: redis-py's own error)."""
    cls = _CONNECTION_CLASSES.get(urlsplit(url).scheme)
    return {"connection_class": cls} if cls is not None else {}


def _tls_options(url: str) -> dict[str, Any]:
    """``ssl_check_hostname=True`` for a ``rediss://`` URL, whatever redis-py defaults to.

    redis-py 5.x does not check the host name (a certificate the CA issued for any
    other host is accepted); 6.0 and later do. An explicit ``ssl_check_hostname`` in
    the URL's query is left to redis-py: ``=false`` is honoured but unsafe (anyone
    holding a certificate from the same CA can pose as the server). With
    ``ssl_cert_reqs=none`` nothing is verified at all, and Python's ``ssl`` refuses a
    host name check without verification, so none is asked for.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return {}
    query = parse_qs(parts.query)
    reqs = (query.get("ssl_cert_reqs") or ["required"])[-1].strip().lower()
    if "ssl_check_hostname" in query or reqs in ("none", "cert_none"):
        return {}
    return {"ssl_check_hostname": True}


def decodes_replies(client: Any) -> bool:
    """False if ``client`` is a redis-py client that returns bytes (no ``decode_responses``).

    A client we cannot inspect (not redis-py) is given the benefit of the doubt. Raises nothing.
    """
    get_encoder = getattr(client, "get_encoder", None)
    if not callable(get_encoder):
        return True
    try:
        return bool(get_encoder().decode_responses)
    except Exception:  # noqa: BLE001 - an exotic pool: do not refuse what we cannot read
        return True


def describe(client: Any) -> str:
    """``host:port`` (or the socket path) a client talks to, for error messages: never
    the user or password."""
    try:
        kw = client.connection_pool.connection_kwargs
    except AttributeError:
        return "<unknown>"
    if kw.get("path"):
        return str(kw["path"])
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


def unavailable(client: Any, exc: BaseException) -> StoreUnavailableError:
    """The error to raise when Redis behind ``client`` cannot be reached. Its message
    names host and port; should redis-py's words ever echo the password, it is masked."""
    if isinstance(exc, redis.exceptions.AuthenticationError):  # it answered: the login is wrong, not the host
        message = (f"Redis at {describe(client)} refused the login (the user or password in the URL): {exc}")
    else:
        message = f"Cannot reach Redis at {describe(client)}: {exc}"
    try:
        password = client.connection_pool.connection_kwargs.get("password")
    except AttributeError:
        password = None
    return StoreUnavailableError(message.replace(password, MASK) if password else message)


@contextmanager
def redis_errors(client: Any) -> Iterator[None]:
    """Turn redis-py connection/timeouts into ``StoreUnavailableError``, and a server busy
    running another client's script past ``busy-reply-threshold`` (``BUSY``: it answers
    nothing else for now; its data is fine).

    Raises:
        StoreUnavailableError: Redis refused, dropped or timed out the call, or is busy.
    """
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise unavailable(client, exc) from exc
    except redis.exceptions.ResponseError as exc:
        if not str(exc).startswith("BUSY "):
            raise
        raise unavailable(client, exc) from exc
