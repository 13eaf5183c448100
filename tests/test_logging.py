"""The host's logging survives the first child run.

Issue: the first START_SUBWORKFLOW makes AbstractRuntime import ``abstractruntime.utils``,
whose AbstractCore import clears the root logger's handlers and installs its own stdout
handler at ERROR. After that a worker's Celery lines, our warnings and even task errors
no longer appeared, and an embedding app lost its own logging.

Both tests run in real processes (a ``celery worker`` subprocess, and a plain Python
subprocess for the embedded case), so this test process's logging is not involved.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.dispatch import START_TASK, TICK_TASK
from devkit.cleanup import cleanup_broker
from devkit.procs import ROOT, Cluster, wait_for
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, _delete_prefix, make_app, make_settings
from tests.workflows import registry

TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    prefix = f"log{uuid.uuid4().hex[:8]}:"
    c = Cluster(make_settings(prefix), BROKER_URL, FX_URL, tmp_path)
    failed_before = request.session.testsfailed
    try:
        yield c
    finally:
        c.stop_all()
        if request.session.testsfailed > failed_before:
            c.dump_logs()
        cleanup_broker(BROKER_URL, c.settings.queue)
        _delete_prefix(STORE_URL, prefix)
        redis.Redis.from_url(FX_URL).delete(f"{prefix}fx")


def test_worker_still_logs_warnings_and_task_errors_after_a_child_run(cluster: Cluster) -> None:
    # One pool process, so the process that ran the child is the one whose log we check.
    worker = cluster.worker("w", concurrency=1)
    sr = create_scheduled_runtime(app=make_app(cluster.settings), settings=cluster.settings, registry=registry,
                                  auto_start=False)
    app, queue = sr.scheduler.app, cluster.settings.queue
    try:
        parent_id, _ = sr.run(registry.get("parent"), vars={"child_delay": 0.2}, wait=False)
        parent = sr.wait_for(parent_id, timeout=TIMEOUT, until=lambda r: r.status == RunStatus.COMPLETED)
        assert parent.output["child"]["sub_run_id"]

        # A warning of ours (a tick for a run nobody has) and a task error (a start whose vars
        # are not an object raises in the task), both in Celery's own worker log format.
        ghost = f"ghost-{uuid.uuid4().hex[:8]}"
        app.send_task(TICK_TASK, args=[ghost], queue=queue)
        bad = app.send_task(START_TASK, args=["parent", "vars that are a string"], queue=queue)
        warning = re.compile(rf"WARNING/ForkPoolWorker-\d+\] tick for unknown run {ghost} dropped")
        error = re.compile(rf"ERROR/ForkPoolWorker-\d+\] Task {re.escape(START_TASK)}\[{bad.id}\] "
                           r"raised unexpected: PayloadError")
        wait_for(lambda: warning.search(worker.log()) and error.search(worker.log()), TIMEOUT,
                 "the warning and the task error in the worker's log", cluster)
        # Celery's INFO lines still come too.
        assert re.search(rf"Task {re.escape(START_TASK)}\[{bad.id}\] received", worker.log())
    finally:
        sr.stop()


EMBEDDED = r"""
import json, logging, sys

handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(logging.Formatter("HOST %(levelname)s %(name)s: %(message)s"))
root = logging.getLogger()
root.addHandler(handler)
root.setLevel(logging.INFO)

from abstractruntime import RunStatus
from abstractruntime_celery import create_scheduled_runtime
from tests.workflows import registry

sr = create_scheduled_runtime(registry=registry)
try:
    parent_id, _ = sr.run(registry.get("parent"), vars={"child_delay": 0.1}, wait=False)
    parent = sr.wait_for(parent_id, timeout=30, until=lambda r: r.status == RunStatus.COMPLETED)
finally:
    sr.stop()
logging.getLogger("abstractruntime_celery.embedding_app").info("still heard")
print("RESULT " + json.dumps({
    "child": parent.output["child"]["sub_run_id"],
    "utils_imported": "abstractruntime.utils" in sys.modules,
    "handlers_are_ours": [h is handler for h in root.handlers],
    "level": root.level,
}))
"""


def test_embedded_app_keeps_its_root_handler_and_level_after_a_child_run() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_CELERY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    proc = subprocess.run([sys.executable, "-c", EMBEDDED], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["child"] and result["utils_imported"]  # the child ran, and the import that did harm happened
    assert result["handlers_are_ours"] == [True] and result["level"] == 20, result
    assert "HOST INFO abstractruntime_celery.embedding_app: still heard" in proc.stderr
