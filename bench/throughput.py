"""Throughput: runs started and completed per second, for 1-node and 10-node
workflows (pure transitions), against bare Celery no-op tasks per second, on the
same Redis with the same workers (``celery worker --pool=solo``, 2 processes and 1).

    python -m bench throughput [--quick]

Each contender gets N messages published before its workers start; the clock runs
from the first completion to the last (the drain), so the rate is the workers', not
this publisher's, which shares the same two cores. Bare and ours take turns,
``repeat`` times, and the ratio is the median of the per-turn ratios. Ours: N
``abstractruntime.start`` tasks (the worker creates the run and ticks it in the
same task). Bare: N no-op tasks that INCR a counter. With ``profile=True`` a
separate live pass of the 1-node case runs under py-spy on one worker (kept apart
so the profiler's cost does not touch the measured numbers).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import redis

from bench.common import (BROKER_DB, REDIS, RESULTS, Ours, bare_env, purge_queue, start_workers, stop_workers,
                          wait_for, wait_ready, write_json)

WORKFLOWS = ("bench_chain1", "bench_chain10")


def _drain(publish: Callable[[], None], start: Callable[[], list[subprocess.Popen]],
           done: Callable[[], int], n: int) -> dict[str, Any]:
    """Publish ``n`` messages with no worker running, then start the workers and time the
    queue's drain from the first completion to the last: the workers' rate, not this
    publisher's (which shares the two cores and would otherwise set the pace)."""
    t0 = time.perf_counter()
    publish()
    t_sent = time.perf_counter() - t0
    procs = start()
    try:
        deadline = time.monotonic() + 60
        while done() == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        t_first, c_first = time.perf_counter(), done()
        ok = wait_for(done, n, 60 + n * 0.05, interval=0.005)
        t_last = time.perf_counter()
        finished = done()
    finally:
        stop_workers(procs)
    wall = max(1e-6, t_last - t_first)
    return {"n": n, "completed": finished, "wall_s": wall, "publish_s": t_sent,
            "per_s": (finished - c_first) / wall, "all_done": ok}


def _bare(n: int, workers: int, logdir: Path) -> dict[str, Any]:
    queue = f"bench-tput-{uuid.uuid4().hex[:8]}"
    key = f"{queue}:count"
    broker = f"{REDIS}/{BROKER_DB}"
    client = redis.Redis.from_url(broker)
    try:
        from bench.bare import app

        app.conf.broker_url = broker
        row = _drain(lambda: [app.send_task("bench.count", args=[key], queue=queue) for _ in range(n)],
                     lambda: start_workers("bench.bare:app", bare_env(broker), workers, queue, logdir, tag="tput"),
                     lambda: int(client.get(key) or 0), n)
        return {"contender": "bare Celery no-op", "workflow": "-", "workers": workers, **row}
    finally:
        client.delete(key)
        purge_queue(broker, queue)


def _ours(n: int, workers: int, logdir: Path, workflows: tuple[str, ...] = WORKFLOWS) -> list[dict[str, Any]]:
    from abstractruntime_celery.dispatch import START_TASK

    rows = []
    for wf in workflows:
        ours = Ours("bench-tput")
        try:
            sr = ours.scheduled_runtime()
            client = sr.driver.coord.client
            app = sr.scheduler.app
            row = _drain(lambda: [app.send_task(START_TASK, args=[wf, {}], queue=ours.queue) for _ in range(n)],
                         lambda: start_workers("abstractruntime_celery", ours.env, workers, ours.queue, logdir,
                                               tag="tput"),
                         lambda: ours.completed(client), n)
            after = sr.stats
            rows.append({"contender": "abstractruntime_celery", "workflow": wf, "workers": workers, **row,
                         **{k: getattr(after, k) for k in ("duplicates", "lease_busy", "early", "ticks",
                                                           "tick_errors", "runs_started")}})
        finally:
            ours.cleanup()
    return rows


def _profile(n: int, logdir: Path, raw: Path) -> dict[str, Any]:
    """A separate live pass (publishing while two workers run) with py-spy on one worker,
    kept apart so the profiler's cost does not touch the measured numbers."""
    from abstractruntime_celery.dispatch import START_TASK

    ours = Ours("bench-tput")
    procs = start_workers("abstractruntime_celery", ours.env, 2, ours.queue, logdir, tag="tput")
    try:
        sr = ours.scheduled_runtime()
        client = sr.driver.coord.client
        app = sr.scheduler.app
        wait_ready(procs, ours.broker, ours.queue)
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(procs[0].pid), "--rate", "250",
                                "--format", "raw", "-o", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        t0 = time.perf_counter()
        for _ in range(n):
            app.send_task(START_TASK, args=[WORKFLOWS[0], {}], queue=ours.queue)
        ok = wait_for(lambda: ours.completed(client), n, 60 + n * 0.05, interval=0.01)
        wall = time.perf_counter() - t0
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        spy.wait(30)
        done = ours.completed(client)
        return {"contender": "abstractruntime_celery", "workflow": WORKFLOWS[0], "workers": 2, "n": n,
                "completed": done, "wall_s": wall, "per_s": done / wall, "all_done": ok}
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
        profile: bool = False, out_dir: Path | None = None, logdir: Path | None = None,
        repeat: int | None = None) -> dict[str, Any]:
    """Bare and ours drained in turn, ``repeat`` times (1-node runs; 10-node runs once);
    each row is the median of its repeats, and ``ratio_vs_bare`` the median of the
    per-repeat ratios (this machine's speed drifts between minutes, not within one pair)."""
    n = n or (300 if quick else 3000)
    repeat = repeat or (1 if quick else 3)
    logdir = logdir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for w in worker_counts:
        pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for i in range(repeat):
            bare = _bare(n, w, logdir)
            ours = _ours(n, w, logdir, WORKFLOWS if i == 0 else WORKFLOWS[:1])
            samples.extend([bare, *ours])
            pairs.append((bare, ours[0]))
            if i == 0:
                ten = ours[1:]
        ratios = [o["per_s"] / b["per_s"] for b, o in pairs]
        bare_row = _median_row([b for b, _ in pairs])
        one_row = dict(_median_row([o for _, o in pairs]), ratio_vs_bare=statistics.median(ratios),
                       ratios=ratios)
        rows.extend([dict(bare_row, ratio_vs_bare=1.0), one_row])
        rows.extend(dict(r, ratio_vs_bare=r["per_s"] / bare_row["per_s"]) for r in ten)
    data: dict[str, Any] = {"n": n, "pool": "solo", "repeat": repeat, "method": "drain", "rows": rows,
                            "samples": samples}
    if profile:
        if shutil.which("py-spy"):
            raw = Path(out_dir or RESULTS) / "profile-worker.txt"
            raw.parent.mkdir(parents=True, exist_ok=True)
            prow = _profile(max(n, 3000), logdir, raw)
            data["profile"] = {"tool": "py-spy record --rate 250 --format raw", "raw": str(raw),
                               "during": prow, **(top_costs(raw) if raw.exists() else {"error": "no output"})}
        else:
            data["profile"] = {"error": "py-spy not installed (pip install py-spy)"}
    print_table(rows)
    path = write_json("throughput", data, out_dir)
    print(f"wrote {path}")
    return data


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row whose rate is the median (a real run, so its other columns fit it)."""
    ordered = sorted(rows, key=lambda r: r["per_s"])
    return dict(ordered[len(ordered) // 2], repeats=len(rows))


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
