"""Throughput: runs started and completed per second, for 1-node and 10-node
workflows (pure transitions), against bare Celery no-op tasks per second, on the
same Redis with the same workers (``celery worker --pool=solo``, 2 processes and 1).

    python -m bench throughput [--quick]

Each contender gets N messages published by this process as fast as it can; the
clock runs from the first publish to the last completion. Ours: N
``abstractruntime.start`` tasks (the worker creates the run, then ticks it in a
second task: two Celery tasks per run). Bare: N no-op tasks that INCR a counter.
With ``profile=True`` a second pass of the 1-node case runs under py-spy on one
worker (kept apart so the profiler's cost does not touch the measured numbers).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from bench.common import (BROKER_DB, REDIS, RESULTS, Ours, bare_env, purge_queue, start_workers, stop_workers,
                          wait_for, wait_ready, write_json)

WORKFLOWS = ("bench_chain1", "bench_chain10")


def _bare(n: int, workers: int, logdir: Path) -> dict[str, Any]:
    queue = f"bench-tput-{uuid.uuid4().hex[:8]}"
    key = f"{queue}:count"
    broker = f"{REDIS}/{BROKER_DB}"
    procs = start_workers("bench.bare:app", bare_env(broker), workers, queue, logdir, tag="tput")
    client = redis.Redis.from_url(broker)
    try:
        from bench.bare import app

        app.conf.broker_url = broker
        wait_ready(procs, broker, queue)
        t0 = time.perf_counter()
        for _ in range(n):
            app.send_task("bench.count", args=[key], queue=queue)
        t_sent = time.perf_counter() - t0
        ok = wait_for(lambda: int(client.get(key) or 0), n, 60 + n * 0.02, interval=0.01)
        wall = time.perf_counter() - t0
        done = int(client.get(key) or 0)
        return {"contender": "bare Celery no-op", "workflow": "-", "workers": workers, "n": n, "completed": done,
                "wall_s": wall, "publish_s": t_sent, "per_s": done / wall, "all_done": ok}
    finally:
        stop_workers(procs)
        client.delete(key)
        purge_queue(broker, queue)


def _ours(n: int, workers: int, logdir: Path, profile_to: Path | None = None) -> list[dict[str, Any]]:
    from abstractruntime_celery.dispatch import START_TASK

    ours = Ours("bench-tput")
    procs = start_workers("abstractruntime_celery", ours.env, workers, ours.queue, logdir, tag="tput")
    rows = []
    try:
        sr = ours.scheduled_runtime()
        client = sr.driver.coord.client
        app = sr.scheduler.app
        wait_ready(procs, ours.broker, ours.queue)
        for wf in WORKFLOWS if profile_to is None else WORKFLOWS[:1]:
            before = sr.stats
            base = ours.completed(client)
            spy = None
            if profile_to is not None:
                spy = subprocess.Popen(["py-spy", "record", "--pid", str(procs[0].pid), "--rate", "250",
                                        "--format", "raw", "-o", str(profile_to), "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            t0 = time.perf_counter()
            for _ in range(n):
                app.send_task(START_TASK, args=[wf, {}], queue=ours.queue)
            t_sent = time.perf_counter() - t0
            ok = wait_for(lambda: ours.completed(client) - base, n, 60 + n * 0.05, interval=0.01)
            wall = time.perf_counter() - t0
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
                spy.wait(30)
            done = ours.completed(client) - base
            after = sr.stats
            rows.append({"contender": "abstractruntime_celery", "workflow": wf, "workers": workers, "n": n,
                         "completed": done, "wall_s": wall, "publish_s": t_sent, "per_s": done / wall,
                         "all_done": ok, **{k: getattr(after, k) - getattr(before, k)
                                            for k in ("duplicates", "lease_busy", "early", "ticks", "tick_errors",
                                                      "runs_started")}})
        return rows
    finally:
        stop_workers(procs)
        ours.cleanup()


def top_costs(raw_path: Path, limit: int = 12) -> dict[str, Any]:
    """From py-spy's raw (collapsed) stacks: per function, the share of samples in which
    it is on the stack (inclusive) and at the top (self)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    idle = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if frames and frames[0].startswith("process ") or frames and frames[0].startswith("thread "):
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaf = _short(frames[-1])
        if any(k in leaf for k in ("select", "poll (", "epoll", "_poll", "wait (threading", "sleep")):
            idle += count
        own[leaf] += count
        for f in set(_short(x) for x in frames):
            inclusive[f] += count
    busy = max(1, total)
    return {"samples": total, "idle_samples": idle,
            "inclusive": [{"function": f, "pct": 100.0 * c / busy} for f, c in inclusive.most_common(60)],
            "self": [{"function": f, "pct": 100.0 * c / busy} for f, c in own.most_common(limit)]}


def _short(frame: str) -> str:
    """'fn (path/to/pkg/mod.py:123)' -> 'fn (pkg/mod.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor):]
            break
    else:
        parts = parts[-2:]
    return f"{name} ({'/'.join(parts)})"


def run(quick: bool = False, *, n: int | None = None, worker_counts: tuple[int, ...] = (2, 1),
        profile: bool = False, out_dir: Path | None = None, logdir: Path | None = None) -> dict[str, Any]:
    n = n or (300 if quick else 3000)
    logdir = logdir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    rows: list[dict[str, Any]] = []
    for w in worker_counts:
        rows.append(_bare(n, w, logdir))
        rows.extend(_ours(n, w, logdir))
    for w in worker_counts:
        bare = next(r for r in rows if r["workers"] == w and r["contender"].startswith("bare"))
        for r in rows:
            if r["workers"] == w:
                r["ratio_vs_bare"] = r["per_s"] / bare["per_s"]
    data: dict[str, Any] = {"n": n, "pool": "solo", "rows": rows}
    if profile:
        if shutil.which("py-spy"):
            raw = Path(out_dir or RESULTS) / "profile-worker.txt"
            raw.parent.mkdir(parents=True, exist_ok=True)
            prow = _ours(max(n, 3000), 2, logdir, profile_to=raw)
            data["profile"] = {"tool": "py-spy record --rate 250 --format raw", "raw": str(raw),
                               "during": prow[0], **(top_costs(raw) if raw.exists() else {"error": "no output"})}
        else:
            data["profile"] = {"error": "py-spy not installed (pip install py-spy)"}
    print_table(rows)
    path = write_json("throughput", data, out_dir)
    print(f"wrote {path}")
    return data


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Throughput (runs started and completed per second; bare: no-op tasks/s)")
    cols = ("contender", "workflow", "workers", "n", "completed", "wall_s", "per_s", "ratio_vs_bare", "duplicates",
            "lease_busy", "early")
    for c in cols:
        table.add_column(c, justify="left" if c in ("contender", "workflow") else "right")
    for r in rows:
        table.add_row(*(f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols))
    Console(width=150).print(table)


if __name__ == "__main__":
    run()
