"""Scale: the sweep with many runs waiting far in the future (none due), and worker
memory with many day-long waits.

    python -m bench scale [--quick]

1. Sweep: N runs WAITING(UNTIL) a day or more ahead are written straight into a
   RedisRunStore on db 6 (the store's own save script, pipelined), then one full
   ``sweep`` (timers, stale events, orphans, parents) is timed repeatedly.
   N = 1,000,000 (quick: 100,000); about 2.6 KB of Redis per run, checked against
   free memory first.
2. Worker RSS: two ``celery worker --pool=solo`` processes, measured idle (after a
   warm-up), then after M runs (100,000; quick: 5,000) have each been ticked by them
   into a one-day wait. The timer horizon means no worker holds an ETA message for
   them, so RSS should stay flat.
Everything is written under a private prefix on db 6 and deleted afterwards.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import redis

from bench.common import (SCALE_DB, Ours, delete_prefix, free_mem_bytes, start_workers, stop_workers,
                          wait_for, wait_ready, worker_rss, write_json)

BYTES_PER_RUN = 2600
WORKERS = 2


def populate(store: Any, n: int, *, waiting: bool, workflow_id: str = "bench_daywait", batch: int = 2000,
             id_prefix: str = "run") -> list[str]:
    """Write ``n`` runs with the store's own save script, ``batch`` per pipeline:
    WAITING(UNTIL) a day+ ahead, or RUNNING at the entry node (for workers to tick)."""
    from abstractruntime import RunState, RunStatus, WaitReason, WaitState

    now = datetime.now(timezone.utc)
    ids = []
    client = store.client
    for start in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + batch)):
            rid = f"{id_prefix}-{i:08d}"
            run = RunState.new(workflow_id=workflow_id, entry_node="wait", run_id=rid, vars={"i": i})
            if waiting:
                run.status = RunStatus.WAITING
                run.waiting = WaitState(reason=WaitReason.UNTIL, resume_to_node="woke",
                                        until=(now + timedelta(days=1, seconds=i % 86400)).isoformat())
            store.save_in(pipe, run)
            ids.append(rid)
        pipe.execute()
    return ids


def bench_sweep(n: int, repeat: int = 30) -> dict[str, Any]:
    from abstractruntime_celery.sweep import sweep

    need = n * BYTES_PER_RUN * 1.5
    free = free_mem_bytes()
    if free < need:
        n2 = int(free / BYTES_PER_RUN / 1.5)
        print(f"only {free / 2**30:.1f} GiB free: {n:,} runs need about {need / 2**30:.1f} GiB; using {n2:,}")
        n = n2
    ours = Ours("bench-scale", store_db=SCALE_DB)
    client = redis.Redis.from_url(ours.store)
    try:
        sr = ours.scheduled_runtime()
        d = sr.driver
        mem0 = int(client.info("memory")["used_memory"])
        t0 = time.perf_counter()
        populate(d.run_store, n, waiting=True)
        fill_s = time.perf_counter() - t0
        mem1 = int(client.info("memory")["used_memory"])
        waiting = int(client.zcard(f"{ours.prefix}ix-status:waiting"))
        samples, due_samples = [], []
        for _ in range(3):
            sweep(d, force=True)  # warm
        for _ in range(repeat):
            t = time.perf_counter()
            report = sweep(d, force=True)
            samples.append(time.perf_counter() - t)
            assert report.total == 0, report
            now_iso = datetime.now(timezone.utc).isoformat()
            t = time.perf_counter()
            d.run_store.list_due_wait_until(now_iso=now_iso, limit=1000)
            due_samples.append(time.perf_counter() - t)
        ms = sorted(x * 1000 for x in samples)
        return {"runs_waiting": waiting, "populate_s": fill_s, "populate_per_s": n / fill_s,
                "redis_bytes_per_run": (mem1 - mem0) / max(1, n), "repeat": repeat,
                "sweep_p50_ms": statistics.median(ms), "sweep_p95_ms": ms[int(len(ms) * 0.95) - 1],
                "sweep_max_ms": ms[-1],
                "list_due_p50_ms": statistics.median(due_samples) * 1000}
    finally:
        t = time.perf_counter()
        delete_prefix(client, ours.prefix)
        ours.cleanup()
        print(f"deleted the scale prefix in {time.perf_counter() - t:.1f} s")


def bench_rss(m: int, logdir: Path) -> dict[str, Any]:
    from abstractruntime_celery.dispatch import TICK_TASK

    from bench.workflows import chain1

    ours = Ours("bench-rss", store_db=SCALE_DB)
    procs = start_workers("abstractruntime_celery", ours.env, WORKERS, ours.queue, logdir, tag="rss")
    client = redis.Redis.from_url(ours.store)
    broker = redis.Redis.from_url(ours.broker)
    try:
        sr = ours.scheduled_runtime()
        d = sr.driver
        app = sr.scheduler.app
        wait_ready(procs, ours.broker, ours.queue)
        for _ in range(50):  # warm both workers: imports, driver, scripts
            d.start_run(chain1)
        wait_for(lambda: ours.completed(client), 50, 30)
        time.sleep(2.0)
        idle = worker_rss(procs)
        before = sr.stats
        t0 = time.perf_counter()
        ids = populate(d.run_store, m, waiting=False, id_prefix="rss")
        with app.producer_or_acquire() as producer:
            for rid in ids:
                app.send_task(TICK_TASK, args=[rid], kwargs={"reason": "start"}, queue=ours.queue,
                              producer=producer)
        waiting_key = f"{ours.prefix}ix-status:waiting"
        ok = wait_for(lambda: int(client.zcard(waiting_key)), m, 60 + m * 0.02, interval=0.5)
        ticked_s = time.perf_counter() - t0
        time.sleep(3.0)
        loaded = worker_rss(procs)
        after = sr.stats
        idle_total, loaded_total = sum(idle), sum(loaded)
        return {"runs_waiting": int(client.zcard(waiting_key)), "all_waiting": ok, "ticked_in_s": ticked_s,
                "idle_rss_mib": [x / 2**20 for x in idle], "loaded_rss_mib": [x / 2**20 for x in loaded],
                "idle_total_mib": idle_total / 2**20, "loaded_total_mib": loaded_total / 2**20,
                "ratio": loaded_total / idle_total if idle_total else float("nan"),
                "queue_len_after": int(broker.llen(ours.queue)),
                **{k: getattr(after, k) - getattr(before, k)
                   for k in ("timers_armed", "ticks", "duplicates", "lease_busy", "early", "tick_errors")}}
    finally:
        stop_workers(procs)
        delete_prefix(client, ours.prefix)
        ours.cleanup()


def run(quick: bool = False, *, n: int | None = None, m: int | None = None, out_dir: Path | None = None,
        logdir: Path | None = None) -> dict[str, Any]:
    n = n or (100_000 if quick else 1_000_000)
    m = m or (5_000 if quick else 100_000)
    logdir = logdir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    sweep_row = bench_sweep(n)
    print(f"sweep with {sweep_row['runs_waiting']:,} runs waiting, none due: p50 {sweep_row['sweep_p50_ms']:.2f} ms, "
          f"p95 {sweep_row['sweep_p95_ms']:.2f} ms (populated at {sweep_row['populate_per_s']:.0f} runs/s, "
          f"{sweep_row['redis_bytes_per_run']:.0f} B/run)")
    rss_row = bench_rss(m, logdir)
    print(f"worker RSS: idle {rss_row['idle_total_mib']:.1f} MiB, with {rss_row['runs_waiting']:,} day-long waits "
          f"{rss_row['loaded_total_mib']:.1f} MiB (x{rss_row['ratio']:.3f}); timers armed {rss_row['timers_armed']}")
    data = {"sweep": sweep_row, "rss": rss_row, "workers": WORKERS, "pool": "solo", "db": SCALE_DB}
    path = write_json("scale", data, out_dir)
    print(f"wrote {path}")
    return data


if __name__ == "__main__":
    run()
