"""Timer lateness: N runs each waiting 1-2 s, resumed by two real `celery worker
--pool=solo` processes on Redis, side by side with its baselines in one invocation:

* ours      - abstractruntime_celery (ETA within the horizon, lease, Redis store)
* seed      - AbstractRuntime's built-in create_scheduled_runtime (1 s poll, 100 per poll)
* bare      - bare Celery no-op tasks with the same ETAs (the floor)

    python -m bench.lateness --n 200            # one N
    python -m bench.lateness --n 200,2000,10000 # several, one JSON
    python -m bench lateness [--quick]          # the same, through the bench runner

Lateness = the moment the node after the wait ran, minus ``until``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import redis

from bench.common import (BROKER_DB, REDIS, Ours, bare_env, dist_ms, purge_queue, start_workers, stop_workers,
                          wait_for, wait_ready, write_json)

SIZES = (200, 2000, 10000)
QUICK_SIZES = (200,)
WORKERS = 2


def summary(name: str, lateness_s: list[float], n: int, wall_s: float) -> dict[str, Any]:
    return {"name": name, "n": n, "completed": len(lateness_s), **dist_ms(lateness_s), "wall_s": wall_s,
            "samples_ms": [round(x * 1000, 2) for x in lateness_s]}


def untils(n: int, wait_s: float = 1.0, spread_s: float = 1.0) -> Iterator[datetime]:
    """The i-th deadline is taken when the i-th run is created: each run waits
    ``wait_s`` to ``wait_s + spread_s`` seconds from its own start."""
    for i in range(n):
        yield datetime.now(timezone.utc) + timedelta(seconds=wait_s + spread_s * i / max(1, n))


def collect_lateness(get_state: Callable[[str], Any], ids: list[str], timeout: float,
                     progress: Callable[[], int]) -> dict[str, float]:
    """Wait until ``progress()`` (a cheap counter) reaches len(ids), then read every run
    once: lateness = woke_at - until. Polling each run would steal CPU from the workers."""
    from abstractruntime import RunStatus

    from abstractruntime_celery.timers import parse_until

    wait_for(progress, len(ids), timeout, interval=0.2)
    done: dict[str, float] = {}
    for rid in ids:
        run = get_state(rid)
        if run is not None and run.status == RunStatus.COMPLETED:
            done[rid] = run.output["woke_at"] - parse_until(run.vars["until"])
    return done


def bench_ours(n: int, logdir: Path, *, park: str = "worker") -> dict[str, Any]:
    """``park="worker"``: each run's first tick (the park) is a start message for the
    workers, so they run two ticks per run. ``park="caller"``: this process creates and
    parks each run itself, as the built-in contender's caller does (start + tick), and
    the workers run only the timers."""
    from bench.workflows import sleeper

    ours = Ours("bench-late")
    procs = start_workers("abstractruntime_celery", ours.env, WORKERS, ours.queue, logdir, tag="late")
    try:
        sr = ours.scheduled_runtime()
        client = sr.driver.coord.client
        wait_ready(procs, ours.broker, ours.queue)
        t0 = time.monotonic()
        if park == "caller":
            ids = [sr.driver.start_and_tick(sleeper, vars={"until": u.isoformat()})[0] for u in untils(n)]
        else:
            ids = [sr.driver.start_run(sleeper, vars={"until": u.isoformat()}) for u in untils(n)]
        done = collect_lateness(sr.get_state, ids, 60 + n * 0.05, lambda: ours.completed(client))
        wall = time.monotonic() - t0
        stats = sr.stats
        name = "abstractruntime_celery" + (" (caller parks)" if park == "caller" else "")
        out = summary(name, list(done.values()), n, wall)
        out.update(duplicates=stats.duplicates, lease_busy=stats.lease_busy, early=stats.early,
                   timers_armed=stats.timers_armed, ticks=stats.ticks, tick_errors=stats.tick_errors)
        return out
    finally:
        stop_workers(procs)
        ours.cleanup()


def bench_seed(n: int) -> dict[str, Any]:
    from abstractruntime import create_scheduled_runtime

    from bench.workflows import sleeper

    sr = create_scheduled_runtime(workflows=[sleeper])
    try:
        t0 = time.monotonic()
        ids = []
        for u in untils(n):
            rid = sr.runtime.start(workflow=sleeper, vars={"until": u.isoformat()})
            sr.runtime.tick(workflow=sleeper, run_id=rid)
            ids.append(rid)
        done = collect_lateness(sr.get_state, ids, 60 + n * 0.05, lambda: sr.stats.runs_resumed)
        wall = time.monotonic() - t0
    finally:
        sr.stop()
    return summary("built-in Scheduler", list(done.values()), n, wall)


def bench_bare(n: int, logdir: Path) -> dict[str, Any]:
    queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    key = f"{queue}:lateness"
    broker = f"{REDIS}/{BROKER_DB}"
    procs = start_workers("bench.bare:app", bare_env(broker), WORKERS, queue, logdir, tag="late")
    client = redis.Redis.from_url(broker)
    try:
        from bench.bare import app

        app.conf.broker_url = broker
        wait_ready(procs, broker, queue)
        t0 = time.monotonic()
        for u in untils(n):
            app.send_task("bench.noop", args=[u.timestamp(), key], eta=u, queue=queue)
        wait_for(lambda: int(client.llen(key)), n, 60 + n * 0.05, interval=0.2)
        wall = time.monotonic() - t0
        values = [float(x) for x in client.lrange(key, 0, -1)]
        return summary("bare Celery ETA no-op", values, n, wall)
    finally:
        stop_workers(procs)
        client.delete(key)
        purge_queue(broker, queue)


def run(sizes: tuple[int, ...] = SIZES, *, skip: set[str] = frozenset(), out_dir: Path | None = None,
        logdir: Path | None = None) -> dict[str, Any]:
    logdir = logdir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    rows = []
    for n in sizes:
        if "ours" not in skip:
            rows.append(bench_ours(n, logdir))
        if "ours-caller" not in skip:
            rows.append(bench_ours(n, logdir, park="caller"))
        if "bare" not in skip:
            rows.append(bench_bare(n, logdir))
        if "seed" not in skip:
            rows.append(bench_seed(n))
    print_table(rows)
    data = {"sizes": list(sizes), "workers": WORKERS, "pool": "solo", "rows": rows, "logs": str(logdir)}
    path = write_json("lateness", data, out_dir)
    print(f"wrote {path}; worker logs in {logdir}")
    return data


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Timer lateness (resume time - until), 2 solo workers")
    cols = ("name", "n", "completed", "p50_ms", "p95_ms", "p99_ms", "max_ms", "wall_s", "duplicates", "lease_busy",
            "early")
    for c in cols:
        table.add_column(c, justify="left" if c == "name" else "right", no_wrap=c == "name")
    for r in rows:
        table.add_row(*(f"{r[c]:.1f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols))
    Console(width=140).print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="200", help="N, or a comma list of N")
    parser.add_argument("--json", default=None, help="(ignored: results go to bench/results/lateness.json)")
    parser.add_argument("--out", default=None, help="results directory (default bench/results)")
    parser.add_argument("--skip", default="", help="comma list of ours,ours-caller,seed,bare to skip")
    args = parser.parse_args(argv)
    sizes = tuple(int(x) for x in str(args.n).split(",") if x)
    run(sizes, skip=set(filter(None, args.skip.split(","))), out_dir=Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
