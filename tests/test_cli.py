"""The README's main job: the demo, embedded and through a broker, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis

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


def test_help_lists_the_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "abstractruntime_celery", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "demo" in proc.stdout and "sweep" in proc.stdout
