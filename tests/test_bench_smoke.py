"""The benchmark harness must not rot: its cheapest part, at a tiny size, completes
and writes JSON with the expected keys. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REDIS

ROOT = Path(__file__).resolve().parents[1]


def test_bench_roundtrips_quick_writes_json(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "roundtrips", "--quick", "--out", str(tmp_path),
                           "--no-docs"], cwd=ROOT, env={**os.environ, "BENCH_REDIS": REDIS}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "roundtrips.json").read_text())
    assert {"part", "machine", "rows", "repeat"} <= set(data)
    assert {"nproc", "cpu", "mem_gib", "python", "celery", "abstractruntime"} <= set(data["machine"])
    ops = {r["operation"] for r in data["rows"]}
    assert any(op.startswith("start_run") for op in ops) and any(op.startswith("resume_event") for op in ops)
    for row in data["rows"]:
        assert {"median", "store", "broker", "sequence"} <= set(row)
    assert (tmp_path / "targets.json").exists()
