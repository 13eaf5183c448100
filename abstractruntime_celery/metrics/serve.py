"""The Prometheus endpoint: served by a worker (setting ``metrics_port``: its main
process starts it once, before the pool forks; children only write to Redis) or by
``abstractruntime-celery metrics serve`` on its own.

Every endpoint shows the whole cluster (``collector.py`` reads Redis at scrape time),
so one is enough: scrape one worker, or run the command (``metrics/cli.py``) beside beat. Scraping several
shows the same numbers several times (aggregate with ``max without(instance)``).
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from ..errors import ConfigError

#: Port of ``metrics serve`` when neither ``--port`` nor ``metrics_port`` gives one.
DEFAULT_PORT = 9808

_served: dict[int, Any] = {}
_served_lock = threading.Lock()


def registry_for(driver: Any) -> Any:
    """A Prometheus registry holding only the cluster collector of ``driver``'s Redis.

    Raises:
        ConfigError: the driver has no Redis coordination (the embedded mode keeps its
            numbers in one process: there is no cluster to scrape).
    """
    try:
        from prometheus_client import CollectorRegistry

        from .collector import ClusterCollector
    except ImportError as exc:
        raise ConfigError(f"The metrics endpoint needs prometheus_client: pip install "
                          f"'abstractruntime-celery[metrics]' ({exc})") from exc
    coord = driver.coord
    if getattr(coord, "client", None) is None:
        raise ConfigError("The metrics endpoint reads the cluster's numbers from Redis: set store_url "
                          "or coord_url to a Redis URL (the embedded mode has none)")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(coord.client, coord.keys, driver.settings.sweep_interval_s))
    return registry


def start(driver: Any, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns the HTTP server
    (``.shutdown()`` stops it). Once per port and process: a second call returns the first.

    Raises:
        ConfigError: no Redis coordination, or the port cannot be bound (in use, denied).
    """
    from prometheus_client import start_http_server

    with _served_lock:
        if port in _served:
            return _served[port]
        registry = registry_for(driver)
        try:
            server, _thread = start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            raise ConfigError(f"Cannot serve metrics on {addr}:{port}: {exc} (metrics_port, metrics_addr)") from exc
        _served[port] = server
        return server


def start_for_worker(driver: Any) -> Optional[Any]:
    """In a worker's main process, at start: serve the metrics if ``metrics_port`` is set.

    Raises:
        ConfigError: as ``start`` (the worker must not say ready without its endpoint).
    """
    port = driver.settings.metrics_port
    return start(driver, port, driver.settings.metrics_addr) if port else None
