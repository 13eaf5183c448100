"""The README's main job: the demo, embedded and through a broker, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import redis

from devkit.redisproc import PrivateRedis
from tests.conftest import REDIS

ROOT = Path(__file__).resolve().parent.parent


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "abstractruntime_celery", "demo", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_demo_runs_embedded_with_no_server() -> None:
    proc = _demo()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "embedded" in proc.stdout
    assert "'approved_by': 'the demo'" in proc.stdout and "'child_sum': 55" in proc.stdout


def test_demo_runs_through_a_broker_and_cleans_up() -> None:
    broker = f"{REDIS}/13"
    proc = _demo("--broker", broker)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "distributed" in proc.stdout and "'child_sum': 55" in proc.stdout
    assert list(redis.Redis.from_url(broker).scan_iter(match="arc-demo-*")) == []


def test_demo_through_a_broker_with_a_password_never_prints_it(tmp_path: Path) -> None:
    password = f"hunter2-{uuid.uuid4().hex[:6]}"
    with PrivateRedis(tmp_path / "redis", aof=False, password=password) as server:
        proc = _demo("--broker", server.db_url(0))
        assert proc.returncode == 0, (proc.stdout + proc.stderr).replace(password, "<password>")
        assert "distributed" in proc.stdout and "'child_sum': 55" in proc.stdout
        assert f"redis://:***@127.0.0.1:{server.port}/0" in proc.stdout
        assert "hunter2" not in proc.stdout + proc.stderr


def test_help_lists_the_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "abstractruntime_celery", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "demo" in proc.stdout and "sweep" in proc.stdout
