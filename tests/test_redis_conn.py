"""Connections made by ``stores.redis.connection.connect``: connecting is retried, a command
already sent is never sent again (a reply that times out may belong to a write the
server executed).

Every server here is a private ``redis-server`` (or a bare socket) on a free port.
"""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

from abstractruntime_celery.stores.redis.connection import RETRIES, connect
from devkit.redisproc import PrivateRedis

pytestmark = pytest.mark.timeout(60)

#: INCR a counter, then keep the server busy for ARGV[1] microseconds (the reply comes after).
INCR_THEN_BUSY = """
redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
repeat
  t = redis.call('TIME')
until tonumber(t[1]) * 1000000 + tonumber(t[2]) - start >= tonumber(ARGV[1])
return 1
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path / "redis", aof=False) as r:
        yield r


def test_a_script_whose_reply_times_out_runs_once(server: PrivateRedis) -> None:
    """The script runs 0.5 s, the client waits 0.2 s for its reply: a timeout, and no second
    EVAL (redis-py >= 6 would re-send it on the retry object it was given)."""
    key = f"count:{uuid.uuid4().hex}"
    client = connect(f"redis://127.0.0.1:{server.port}/0?socket_timeout=0.2")
    with pytest.raises(redis.TimeoutError):
        client.eval(INCR_THEN_BUSY, 1, key, 500_000)
    admin = server.client(0)  # no read timeout: its GET waits for any script still running
    assert admin.get(key) == b"1"


def test_a_pipeline_whose_reply_times_out_is_not_sent_again(server: PrivateRedis) -> None:
    """A pipeline of writes (as the stores send them) whose last reply is late: WAIT holds the
    reply 1 s (there is no replica) without blocking the server, so a re-sent pipeline
    would run at once. The INCR ran once."""
    key = f"count:{uuid.uuid4().hex}"
    client = connect(f"redis://127.0.0.1:{server.port}/0?socket_timeout=0.2")
    pipe = client.pipeline(transaction=False)
    pipe.incr(key)
    pipe.execute_command("WAIT", 1, 1000)
    with pytest.raises(redis.TimeoutError):
        pipe.execute()
    assert server.client(0).get(key) == b"1"
    assert client.incr(key) == 2  # the client still works afterwards


def test_connecting_is_retried() -> None:
    """A server that accepts and hangs up during the handshake is tried 1 + RETRIES times:
    nothing of the caller's was sent on those connections, so retrying them is safe."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = 0

    def hang_up() -> None:
        nonlocal accepted
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted += 1
            conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        client = connect(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        with pytest.raises(redis.ConnectionError):
            client.set("k", "v")
        assert accepted == 1 + RETRIES
    finally:
        listener.close()
        thread.join(5)
