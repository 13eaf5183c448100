"""The test kit (``abstractruntime_celery.testing``), used as a user would: pytest runs a
user's test files in a fresh project, in a subprocess, with the plugin loaded by its
``pytest11`` entry point (a dist-info on PYTHONPATH names it, as ``pip install`` does;
the venv's own entry points belong to another checkout). Beside it, Celery's own
fixtures (``-p celery.contrib.pytest``), and ``-p no:celery`` as this project runs with.

The user's tests (tests/testkit_user/) advance a virtual clock a day at a time, embedded
and through real in-process Celery workers (kombu's memory transport and Redis).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AMQP, BROKER_URL, QUEUE_TYPE, REDIS

ROOT = Path(__file__).resolve().parent.parent
USER = Path(__file__).resolve().parent / "testkit_user"
#: name in the temporary project <- file here (user_*.py, so this project never collects them)
FILES = {"test_user_suite.py": "user_suite.py", "test_no_registry.py": "user_no_registry.py",
         "test_celery_fixtures.py": "user_celery_fixtures.py", "user_workflows.py": "user_workflows.py"}

# (marked broker: on a RabbitMQ run the user's suite goes through RabbitMQ as well)
pytestmark = [pytest.mark.timeout(180), pytest.mark.broker]


def _entry_point(where: Path) -> Path:
    """A dist-info declaring the plugin's pytest11 entry point, as pip writes it."""
    info = where / "arc_testkit_probe-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: arc-testkit-probe\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[pytest11]\nabstractruntime_celery = abstractruntime_celery.testing.plugin\n")
    return where


def test_a_users_suite_runs_without_sleeping(tmp_path: Path, redis_up: None, broker_up: None) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name, source in FILES.items():
        shutil.copy(USER / source, project / name)
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    env = {**os.environ, "ARC_KIT_REDIS": REDIS, "ARC_KIT_AMQP": BROKER_URL if AMQP else "",
           "ARC_KIT_QUEUE_TYPE": QUEUE_TYPE,
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(_entry_point(tmp_path / "site"))])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-p", "no:celery", "-p", "celery.contrib.pytest",
                           "-rA", "--timeout", "60", "-q"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=170)
    out = proc.stdout + proc.stderr
    summary = f"{10 if AMQP else 9} passed, {'' if AMQP else '1 skipped, '}1 error"
    assert summary in out, out[-6000:]
    # The one error: the user did not override arc_registry, and is told how.
    assert "ERROR test_no_registry.py::test_forgot_the_registry" in out
    assert "the arc_registry fixture is not defined: override it in your conftest.py" in out
    assert "def arc_registry():" in out
