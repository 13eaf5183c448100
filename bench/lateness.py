"""Timer lateness: N runs each waiting 1-2 s, resumed by two real `celery worker`
processes on Redis, side by side with its baselines in one invocation:

* ours      - abstractruntime_celery (ETA within the horizon, lease, Redis store)
* seed      - AbstractRuntime's built-in create_scheduled_runtime (1 s poll, 100 per poll)
* bare      - bare Celery no-op tasks with the same ETAs (the floor)

    python -m bench.lateness --n 200 [--json bench/results/lateness.json]

Lateness = the moment the node after the wait ran, minus ``until``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import redis

ROOT = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
BROKER_DB, STORE_DB = 7, 8


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def summary(name: str, lateness_s: list[float], n: int, wall_s: float) -> dict[str, Any]:
    ms = [x * 1000 for x in lateness_s]
    return {"name": name, "n": n, "completed": len(ms), "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95),
            "p99_ms": pct(ms, 99), "max_ms": max(ms) if ms else float("nan"),
            "mean_ms": statistics.fmean(ms) if ms else float("nan"), "wall_s": wall_s}


def untils(n: int, wait_s: float = 1.0, spread_s: float = 1.0) -> Iterator[datetime]:
    """The i-th deadline is taken when the i-th run is created: each run waits
    ``wait_s`` to ``wait_s + spread_s`` seconds from its own start."""
    for i in range(n):
        yield datetime.now(timezone.utc) + timedelta(seconds=wait_s + spread_s * i / max(1, n))


def start_workers(app_path: str, env: dict[str, str], count: int, queue: str, logdir: Path) -> list[subprocess.Popen]:
    procs = []
    for i in range(count):
        log = open(logdir / f"{app_path.replace(':', '_')}-{i}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app_path, "worker", "--pool=solo", "-Q", queue,
             "-n", f"bench{i}-{uuid.uuid4().hex[:6]}@%h", "--loglevel=WARNING", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def wait_until_done(check: Callable[[], int], n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and check() < n:
        time.sleep(0.2)


def collect_lateness(get_state: Callable[[str], Any], ids: list[str], timeout: float,
                     progress: Callable[[], int]) -> dict[str, float]:
    """Wait until ``progress()`` (a cheap counter) reaches len(ids), then read every run
    once: lateness = woke_at - until. Polling each run would steal CPU from the workers."""
    from abstractruntime import RunStatus

    from abstractruntime_celery.timers import parse_until

    wait_until_done(progress, len(ids), timeout)
    done: dict[str, float] = {}
    for rid in ids:
        run = get_state(rid)
        if run.status == RunStatus.COMPLETED:
            done[rid] = run.output["woke_at"] - parse_until(run.vars["until"])
    return done


def bench_ours(n: int, logdir: Path) -> dict[str, Any]:
    from abstractruntime_celery import Settings, create_scheduled_runtime
    from abstractruntime_celery.app import make_app
    from bench.workflows import registry, sleeper

    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    queue = f"{prefix}q"
    broker, store = f"{REDIS}/{BROKER_DB}", f"{REDIS}/{STORE_DB}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), ABSTRACTRUNTIME_CELERY_BROKER_URL=broker,
               ABSTRACTRUNTIME_CELERY_STORE_URL=store, ABSTRACTRUNTIME_CELERY_KEY_PREFIX=prefix,
               ABSTRACTRUNTIME_CELERY_QUEUE=queue, ABSTRACTRUNTIME_CELERY_REGISTRY="bench.workflows:registry")
    settings = Settings(store_url=store, key_prefix=prefix, queue=queue, registry="bench.workflows:registry")
    procs = start_workers("abstractruntime_celery", env, 2, queue, logdir)
    try:
        sr = create_scheduled_runtime(app=make_app(broker, config_module=None), settings=settings,
                                      registry=registry, auto_start=False)
        time.sleep(3.0)  # let the workers connect
        t0 = time.monotonic()
        ids = [sr.driver.start_run(sleeper, vars={"until": u.isoformat()})
               for u in untils(n)]
        completed = f"{prefix}ix:status:completed"  # the store's index (docs/redis-keys.md)
        done = collect_lateness(sr.get_state, ids, 60 + n * 0.05,
                                lambda: int(sr.driver.coord.client.zcard(completed)))
        wall = time.monotonic() - t0
        stats = sr.stats
        out = summary("abstractruntime_celery", list(done.values()), n, wall)
        out.update(duplicates=stats.duplicates, lease_busy=stats.lease_busy, early=stats.early,
                   timers_armed=stats.timers_armed)
        return out
    finally:
        stop_workers(procs)
        client = redis.Redis.from_url(f"{REDIS}/{STORE_DB}")
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)


def bench_seed(n: int) -> dict[str, Any]:
    from abstractruntime import create_scheduled_runtime
    from bench.workflows import sleeper

    sr = create_scheduled_runtime(workflows=[sleeper])
    t0 = time.monotonic()
    ids = []
    for u in untils(n):
        rid = sr.runtime.start(workflow=sleeper, vars={"until": u.isoformat()})
        sr.runtime.tick(workflow=sleeper, run_id=rid)
        ids.append(rid)
    done = collect_lateness(sr.get_state, ids, 60 + n * 0.05, lambda: sr.stats.runs_resumed)
    wall = time.monotonic() - t0
    sr.stop()
    return summary("abstractruntime built-in Scheduler", list(done.values()), n, wall)


def bench_bare(n: int, logdir: Path) -> dict[str, Any]:
    queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    key = f"{queue}:lateness"
    broker = f"{REDIS}/{BROKER_DB}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_BROKER_URL=broker)
    procs = start_workers("bench.bare:app", env, 2, queue, logdir)
    try:
        from bench.bare import app

        app.conf.broker_url = broker
        time.sleep(3.0)
        t0 = time.monotonic()
        for u in untils(n):
            app.send_task("bench.noop", args=[u.timestamp(), key], eta=u, queue=queue)
        client = redis.Redis.from_url(broker)
        wait_until_done(lambda: int(client.llen(key)), n, 60 + n * 0.05)
        wall = time.monotonic() - t0
        values = [float(x) for x in client.lrange(key, 0, -1)]
        client.delete(key)
        return summary("bare Celery ETA no-op", values, n, wall)
    finally:
        stop_workers(procs)


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Timer lateness (resume time - until)")
    table.add_column("name", no_wrap=True)
    for col in ("n", "completed", "p50_ms", "p95_ms", "p99_ms", "max_ms", "wall_s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(*(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c])
                        for c in ("name", "n", "completed", "p50_ms", "p95_ms", "p99_ms", "max_ms", "wall_s")))
    Console(width=120).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--json", default="bench/results/lateness.json")
    parser.add_argument("--skip", default="", help="comma list of ours,seed,bare to skip")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    logdir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    rows = []
    if "ours" not in skip:
        rows.append(bench_ours(args.n, logdir))
    if "bare" not in skip:
        rows.append(bench_bare(args.n, logdir))
    if "seed" not in skip:
        rows.append(bench_seed(args.n))
    print_table(rows)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "machine": os.uname().nodename, "cpus": os.cpu_count(),
                               "rows": rows, "logs": str(logdir)}, indent=2))
    print(f"wrote {out}; worker logs in {logdir}")


if __name__ == "__main__":
    main()
