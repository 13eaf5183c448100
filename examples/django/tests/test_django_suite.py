"""Runs this folder's Django tests in a process of their own (see conftest.py): the suite's
process never calls ``django.setup()`` nor sees the example's settings."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from devkit.cleanup import cleanup_broker, delete_prefix

from django_example_env import HERE, REDIS, ROOT, example_env

pytestmark = pytest.mark.timeout(180)


def test_the_django_example_passes_its_tests_in_a_django_process(tmp_path: Path) -> None:
    prefix = f"dj{uuid.uuid4().hex[:8]}:"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ABSTRACTRUNTIME_CELERY_", "MYSITE_")) and k not in ("CELERY_BROKER_URL",
                                                                                    "DJANGO_SETTINGS_MODULE")}
    env.update(example_env(tmp_path, prefix))
    env["ARC_DJANGO_INNER"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-q", "-x", "-p", "no:cacheprovider", str(HERE)],
                              cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=170)
    finally:  # the inner session cleans up too; this covers a crash of it
        cleanup_broker(f"{REDIS}/9", f"{prefix}q")
        delete_prefix(redis.Redis.from_url(f"{REDIS}/10"), prefix)
        redis.Redis.from_url(f"{REDIS}/14").delete(f"{prefix}outbox")
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    assert " passed" in proc.stdout and "no tests ran" not in proc.stdout, proc.stdout
