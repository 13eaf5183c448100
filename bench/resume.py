"""Resume latency: ``resume_event(wait=False)`` to the next node executed.

    python -m bench resume [--quick]

M runs wait for an event on two ``celery worker --pool=solo`` processes. One at a
time, this process notes ``time.time()``, calls ``Scheduler.resume_event(...,
wait=False)``, and waits for the run to complete; the node after the wait records
``time.time()``. Latency = the two times' difference (same machine clock).
Baseline, same workers' setup: a bare Celery no-op task sent one at a time,
latency = its start minus the moment before ``send_task``.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.common import (BROKER_DB, REDIS, Ours, bare_env, dist_ms, purge_queue, start_workers, stop_workers,
                          wait_for, wait_ready, write_json)

WORKERS = 2


def _ours(m: int, logdir: Path) -> dict[str, Any]:
    from bench.workflows import waiter

    ours = Ours("bench-resume")
    procs = start_workers("abstractruntime_celery", ours.env, WORKERS, ours.queue, logdir, tag="resume")
    try:
        sr = ours.scheduled_runtime()
        d = sr.driver
        client = d.coord.client
        wait_ready(procs, ours.broker, ours.queue)
        ids = [d.start_run(waiter) for _ in range(m)]
        waiting_key = f"{ours.prefix}ix-status:waiting"
        wait_for(lambda: int(client.zcard(waiting_key)), m, 60 + m * 0.05, interval=0.05)
        before = sr.stats
        sent: dict[str, float] = {}
        t_all = time.perf_counter()
        for i, rid in enumerate(ids):
            sent[rid] = time.time()
            sr.scheduler.resume_event(run_id=rid, wait_key=f"go:{rid}", payload={"i": i}, wait=False)
            wait_for(lambda: ours.completed(client), i + 1, 10, interval=0.0005)
        wall = time.perf_counter() - t_all
        lat = []
        for rid in ids:
            run = d.run_store.load(rid)
            if run is not None and run.output and "got_at" in run.output:
                lat.append(run.output["got_at"] - sent[rid])
        after = sr.stats
        return {"contender": "abstractruntime_celery resume_event", "events": m, "completed": len(lat),
                **dist_ms(lat), "wall_s": wall, "samples_ms": [round(x * 1000, 3) for x in lat],
                **{k: getattr(after, k) - getattr(before, k)
                   for k in ("duplicates", "lease_busy", "early", "events_applied", "ticks")}}
    finally:
        stop_workers(procs)
        ours.cleanup()


def _bare(m: int, logdir: Path) -> dict[str, Any]:
    queue = f"bench-resume-bare-{uuid.uuid4().hex[:8]}"
    key = f"{queue}:lat"
    broker = f"{REDIS}/{BROKER_DB}"
    procs = start_workers("bench.bare:app", bare_env(broker), WORKERS, queue, logdir, tag="resume")
    client = redis.Redis.from_url(broker)
    try:
        from bench.bare import app

        app.conf.broker_url = broker
        wait_ready(procs, broker, queue)
        for i in range(m):
            app.send_task("bench.noop", args=[time.time(), key], queue=queue)
            wait_for(lambda: int(client.llen(key)), i + 1, 10, interval=0.0005)
        lat = [float(x) for x in client.lrange(key, 0, -1)]
        return {"contender": "bare Celery send_task to task start", "events": m, "completed": len(lat),
                **dist_ms(lat), "samples_ms": [round(x * 1000, 3) for x in lat]}
    finally:
        stop_workers(procs)
        client.delete(key)
        purge_queue(broker, queue)


def run(quick: bool = False, *, m: int | None = None, out_dir: Path | None = None,
        logdir: Path | None = None) -> dict[str, Any]:
    m = m or (100 if quick else 500)
    logdir = logdir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    rows = [_ours(m, logdir), _bare(m, logdir)]
    rows[0]["ratio_p50_vs_bare"] = rows[0]["p50_ms"] / rows[1]["p50_ms"]
    rows[0]["ratio_p99_vs_bare"] = rows[0]["p99_ms"] / rows[1]["p99_ms"]
    print_table(rows)
    path = write_json("resume", {"events": m, "workers": WORKERS, "pool": "solo", "rows": rows}, out_dir)
    print(f"wrote {path}")
    return {"rows": rows}


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Resume latency (resume_event -> next node ran), 2 solo workers")
    cols = ("contender", "events", "completed", "p50_ms", "p95_ms", "p99_ms", "max_ms", "duplicates", "lease_busy")
    for c in cols:
        table.add_column(c, justify="left" if c == "contender" else "right")
    for r in rows:
        table.add_row(*(f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols))
    Console(width=150).print(table)


if __name__ == "__main__":
    run()
