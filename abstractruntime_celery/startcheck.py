"""What a ``celery worker`` checks, and says, when it starts.

A worker that says "ready" must be able to do its work: a misconfigured one that
starts anyway acknowledges start messages it cannot carry out, and they are gone.
So a real worker process loads its registry, reaches its store and its
coordination Redis, and refuses to start (``ConfigError`` or
``StoreUnavailableError``, one line) when any of them is missing, or lives only
in its own memory, where no other process can see the runs it makes. What it
found goes to its log: registry and workflow ids, and where runs, leases and
inboxes live (passwords masked), so a wrong URL shows up before the first task.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .keys import record_layout
from .redact import redact_url

__all__ = ["check_retention", "check_worker", "describe", "ping", "redelivery_window_s", "store_kind"]

#: The id ``ping`` reads from a store without Redis: no run ever has it (ids are checked).
PROBE_RUN_ID = "arc-start-check"
#: Kombu's Redis transport gives an unacknowledged message back after this (its default).
REDIS_VISIBILITY_S = 3600.0
#: The least redelivery window assumed for other brokers (RabbitMQ's consumer timeout: 30 min).
OTHER_BROKER_WINDOW_S = 3600.0


def store_kind(store: Any) -> str:
    """``redis``, ``sqlite``, ``file`` or ``memory``: the store behind the fence, by its class."""
    inner = getattr(store, "inner", store)
    name = type(inner).__name__.lower()
    for kind in ("redis", "sqlite", "memory"):
        if kind in name:
            return kind
    return "file" if "json" in name or "file" in name else name


def _redis_place(client: Any) -> str:
    """``host:port db N`` (or the socket path) of a redis-py client: never its password."""
    try:
        kw = client.connection_pool.connection_kwargs
    except AttributeError:
        return "an unknown server"
    where = str(kw["path"]) if kw.get("path") else f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"
    user = f" as user {kw['username']!r}" if kw.get("username") else ""
    return f"{where} db {int(kw.get('db') or 0)}{user}"


def describe(driver: Any, registry_source: str = "") -> list[str]:
    """Lines for the worker's log: the registry's workflow ids, and where the store and the
    coordination (leases, inboxes, timers) live, with their key prefix, and the store
    identity its messages carry (``identity.py``). Passwords are masked; host, port and
    database are shown. Raises nothing."""
    settings = driver.settings
    ids = _workflow_ids(driver.registry)
    source = registry_source or settings.registry or ("given in code" if ids else "not set")
    lines = [f"registry {source}: {len(ids)} workflow(s): {', '.join(ids) if ids else '(none)'}"]
    store = driver.run_store
    kind = store_kind(store)
    client = getattr(store, "client", None)
    url = redact_url(settings.store_url)
    if client is not None:
        lines.append(f"store: redis at {_redis_place(client)}, key prefix {settings.key_prefix!r} ({url})")
    else:
        lines.append(f"store: {kind} ({url})")
    coord_client = driver.coord.client
    if coord_client is None:
        lines.append("coordination: in this process only (leases, inboxes, timers)")
    else:
        shares = getattr(store, "shares_connection", None)
        shared = " (the store's own Redis)" if callable(shares) and shares(coord_client) else ""
        lines.append(f"coordination: redis at {_redis_place(coord_client)}{shared}, key prefix {settings.key_prefix!r}")
    identity = getattr(driver, "identity", "")
    if identity:
        lines.append(f"store identity {identity!r}: named in the tick messages sent from here; a tick "
                     "naming another is put back for a worker of that store (stats: wrong_store)")
    return lines


def _workflow_ids(registry: Any) -> list[str]:
    list_ids = getattr(registry, "list_ids", None)
    ids = list_ids() if callable(list_ids) else list(getattr(registry, "_workflows", {}))
    return sorted(str(i) for i in ids)


def ping(driver: Any) -> None:
    """Reach the store and the coordination Redis once.

    Raises:
        StoreUnavailableError: a Redis cannot be reached (names host and port).
        Exception: a SQLite or JSON-file store cannot be read (its own error).
    """
    from .stores.redis.connection import redis_errors

    store = driver.run_store
    client = getattr(store, "client", None)
    if client is not None:
        with redis_errors(client):
            client.ping()
    else:
        store.load(PROBE_RUN_ID)
    coord_client = driver.coord.client
    if coord_client is not None and coord_client is not client:
        with redis_errors(coord_client):
            coord_client.ping()


def _mark_layout(driver: Any) -> None:
    """A worker marks the key layout of the prefix it serves (``keys.record_layout``).

    Raises:
        ConfigError: the prefix holds another layout's mark (written since the driver opened).
        StoreUnavailableError: the coordination Redis does not answer.
    """
    from .stores.redis.connection import redis_errors

    client = driver.coord.client
    with redis_errors(client):
        record_layout(client, driver.coord.keys, _redis_place(client))


def redelivery_window_s(app: Any) -> float:
    """How long after a start the broker may deliver its message again: a Redis broker's
    ``visibility_timeout`` (transport option, 3600 s by default), else an hour. Raises nothing."""
    url = str(getattr(app.conf, "broker_url", None) or "")
    if url.split(":", 1)[0].lower() in ("redis", "rediss", "redis+socket", "sentinel"):
        options = getattr(app.conf, "broker_transport_options", None) or {}
        try:
            return float(options.get("visibility_timeout", REDIS_VISIBILITY_S))
        except (TypeError, ValueError):
            return REDIS_VISIBILITY_S
    return OTHER_BROKER_WINDOW_S


def check_retention(settings: Any, app: Any) -> None:
    """Refuse a ``retention_s`` shorter than the broker's redelivery window: the stored run is
    the only record that a start message was carried out, so a start delivered again after
    its run was deleted would make a second run and run its nodes again.

    Raises:
        ConfigError: ``retention_s`` is above 0 and below the window.
    """
    window = redelivery_window_s(app)
    if 0 < settings.retention_s < window:
        raise ConfigError(
            f"retention_s={settings.retention_s:g} is shorter than the broker's redelivery window ({window:g}s): "
            "a start message delivered again after its run was deleted would run the workflow twice. Set "
            f"ABSTRACTRUNTIME_CELERY_RETENTION_S to {window:g} or more (or 0 to keep runs)")


def check_worker(driver: Any, app: Any = None) -> list[str]:
    """Refuse what a ``celery worker`` process cannot work with; return warnings to log.

    Refused: a store in this process's memory (the runs it makes exist nowhere else),
    coordination in this process's memory (leases, inboxes and timers other processes
    never see: ``resume_event`` would wait for ever), a store or coordination Redis that
    does not answer, an empty registry, a ``retention_s`` shorter than the broker's redelivery
    window (with ``app``: ``check_retention``; it then records ``retention_s`` as the cluster's,
    for the sweeps of every process: ``retention.record``). Warned about: a JSON-file or SQLite
    store (checked against the lease just before each save, not in it).

    Raises:
        ConfigError: the store or the coordination is in-process, the registry is empty,
            ``retention_s`` is too short, or the prefix holds another key layout.
        StoreUnavailableError: the store's or the coordination's Redis does not answer.
    """
    settings = driver.settings
    if app is not None:
        check_retention(settings, app)
    kind = store_kind(driver.run_store)
    if kind == "memory":
        raise ConfigError(
            f"store_url is {redact_url(settings.store_url) or 'memory://'}: a celery worker needs a store other "
            "processes share (ABSTRACTRUNTIME_CELERY_STORE_URL=redis://host:port/db); runs it made would exist "
            "only inside this process")
    if driver.coord.client is None:
        raise ConfigError(
            f"leases, inboxes and timers would live in this worker's memory: the store "
            f"({redact_url(settings.store_url)}) and the broker are not Redis and coord_url is empty. Set "
            "ABSTRACTRUNTIME_CELERY_COORD_URL=redis://host:port/db (the same on every worker and caller)")
    ping(driver)
    _mark_layout(driver)
    warnings: list[str] = []
    if kind in ("sqlite", "file"):
        warnings.append(
            f"the {kind} store ({redact_url(settings.store_url)}) checks a run's lease just before each save, "
            f"not in the save: a worker stalled longer than lease_ttl_s={settings.lease_ttl_s:g}s between that "
            "check and its write (GC pause, frozen VM, slow disk) can overwrite a newer commit of another "
            "worker. Use it on one host only; use a Redis store for a fleet")
    if not _workflow_ids(driver.registry):
        raise ConfigError(
            "the workflow registry is empty: set ABSTRACTRUNTIME_CELERY_REGISTRY=pkg.module:registry (or "
            "install(app, registry=...)); a worker that knows no workflow would hand every start message back "
            "to the queue for unknown_workflow_grace_s")
    if app is not None:
        from .retention import record

        previous = record(driver)  # the cluster's retention: a sweep in another process deletes by it
        if previous is not None:
            warnings.append(f"retention_s was {previous:g} for this key prefix, now {settings.retention_s:g} "
                            "(recorded by this worker): a worker or sweep still on the old value deletes nothing")
    return warnings
