"""The Flask example's fixtures: its app on the suite's Redis databases (9 broker, 10 store,
14 side effects) under a fresh key prefix and queue, configured the README's way (environment
variables ``FLASKSHOP_...``), and the README's worker command as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from devkit.cleanup import cleanup_broker, delete_prefix
from devkit.procs import Proc, wait_for

EXAMPLE = Path(__file__).resolve().parent.parent
ROOT = EXAMPLE.parent.parent
REDIS = os.environ.get("ARC_TEST_REDIS", "redis://127.0.0.1:6379")
if str(EXAMPLE) not in sys.path:
    sys.path.append(str(EXAMPLE))  # ``flaskshop``, as the worker imports it from this directory


@pytest.fixture
def shop_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The example's environment for this test (the test process and its worker both read it)."""
    prefix = f"fl{uuid.uuid4().hex[:8]}:"
    env = {"FLASKSHOP_ABSTRACTRUNTIME_CELERY_BROKER_URL": f"{REDIS}/9",
           "FLASKSHOP_ABSTRACTRUNTIME_CELERY_STORE_URL": f"{REDIS}/10",
           "FLASKSHOP_ABSTRACTRUNTIME_CELERY_KEY_PREFIX": prefix,
           "FLASKSHOP_ABSTRACTRUNTIME_CELERY_QUEUE": f"{prefix}q",
           "FLASKSHOP_ABSTRACTRUNTIME_CELERY_ORPHAN_GRACE_S": "1",
           "FLASKSHOP_OUTBOX_URL": f"{REDIS}/14", "FLASKSHOP_OUTBOX_KEY": f"{prefix}outbox"}
    for name in [k for k in os.environ if k.startswith("ABSTRACTRUNTIME_CELERY_")] + ["CELERY_BROKER_URL"]:
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    cleanup_broker(f"{REDIS}/9", f"{prefix}q")
    delete_prefix(redis.Redis.from_url(f"{REDIS}/10"), prefix)
    redis.Redis.from_url(f"{REDIS}/14").delete(f"{prefix}outbox")


@pytest.fixture
def shop(shop_env: dict[str, str]) -> Any:
    """The Flask app, built by the example's factory."""
    from flaskshop import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def shop_worker(shop_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Proc]:
    """``celery -A flaskshop.make_celery worker -Q <queue> -n w1@%h`` (threads pool: a quick start)."""
    queue = shop_env["FLASKSHOP_ABSTRACTRUNTIME_CELERY_QUEUE"]
    log_path = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "flaskshop.make_celery", "worker", "-Q", queue,
             "-n", f"w1.{queue.replace(':', '')}@%h", "-P", "threads", "-c", "4", "-l", "INFO",
             "--without-mingle", "--without-gossip", "--without-heartbeat"],
            cwd=str(EXAMPLE), env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    worker = Proc("flask-worker", popen, log_path)
    failed_before = request.session.testsfailed
    try:
        wait_for(lambda: " ready." in worker.log() or not worker.alive(), 60, "the Flask worker to be ready")
        assert worker.alive(), f"the worker exited at start:\n{worker.log()}"
        yield worker
    finally:
        worker.stop(grace_s=0)  # the tests are done with it; its unacked messages are cleaned up below
        if request.session.testsfailed > failed_before:
            sys.stderr.write(worker.log()[-6000:])
