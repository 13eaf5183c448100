"""Benchmark the run stores side by side: Redis, SQLite and JSON files.

    python bench/store_bench.py --sizes 10000,100000 [--json out.json]
    python -m bench store [--quick]

At each size the store holds that many WAITING(UNTIL) runs with small vars,
none due. Measured: ``save`` (update of an existing run), ``load``,
``list_due_wait_until`` (nothing due) and ``list_runs(status=WAITING, limit=100)``,
as p50/p95 milliseconds, plus Redis memory per run (INFO used_memory delta; the
Redis server is shared, so other clients writing at the same time skew it).
Redis uses db 13 and a private prefix, populated through pipelines, and is
cleaned up afterwards. JsonFileRunStore is capped at 10k runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abstractruntime import RunState, RunStatus, WaitReason, WaitState  # noqa: E402
from abstractruntime.storage.json_files import JsonFileRunStore  # noqa: E402
from abstractruntime.storage.sqlite import SqliteDatabase, SqliteRunStore  # noqa: E402

from abstractruntime_celery.stores.redis.connection import connect  # noqa: E402
from abstractruntime_celery.stores.redis.runs import RedisRunStore  # noqa: E402

JSON_CAP = 10_000
NOW = datetime.now(timezone.utc)


def make_run(i: int) -> RunState:
    run = RunState.new(workflow_id=f"wf{i % 10}", entry_node="sleep", run_id=f"run-{i:07d}",
                       vars={"i": i, "note": "small vars"})
    run.status = RunStatus.WAITING
    run.waiting = WaitState(reason=WaitReason.UNTIL, until=(NOW + timedelta(days=1, seconds=i)).isoformat(),
                            resume_to_node="done")
    run.updated_at = (NOW - timedelta(seconds=i)).isoformat()
    return run


def timed(fn: Callable[[], Any], repeat: int) -> Dict[str, float]:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000.0)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 4),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 4),
    }


def measure(store: Any, n: int, ops: int = 500) -> Dict[str, Any]:
    ids = [f"run-{random.randrange(n):07d}" for _ in range(ops)]
    runs = [make_run(int(rid.split("-")[1])) for rid in ids]
    it_save, it_load = iter(runs), iter(ids)
    now = NOW.isoformat()
    out = {
        "save": timed(lambda: store.save(next(it_save)), ops),
        "load": timed(lambda: store.load(next(it_load)), ops),
        "list_due_none_due": timed(lambda: store.list_due_wait_until(now_iso=now, limit=100), 50),
        "list_runs_waiting_100": timed(lambda: store.list_runs(status=RunStatus.WAITING, limit=100), 20),
    }
    assert store.list_due_wait_until(now_iso=now) == []
    assert len(store.list_runs(status=RunStatus.WAITING, limit=100)) == 100
    return out


def populate_redis(store: RedisRunStore, n: int) -> None:
    client = store.client
    for start in range(0, n, 2000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 2000)):
            store.save_in(pipe, make_run(i))
        pipe.execute()


def delete_prefix(client: Any, prefix: str) -> None:
    batch: List[str] = []
    for key in client.scan_iter(match=f"{prefix}*", count=2000):
        batch.append(key)
        if len(batch) >= 2000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def bench_redis(n: int, url: str) -> Dict[str, Any]:
    client = connect(url)
    prefix = f"bench{uuid4().hex[:6]}:"
    store = RedisRunStore(client, prefix=prefix)
    try:
        before = int(client.info("memory")["used_memory"])
        t = time.perf_counter()
        populate_redis(store, n)
        fill_s = time.perf_counter() - t
        after = int(client.info("memory")["used_memory"])
        res = measure(store, n)
        res["populate_s"] = round(fill_s, 2)
        res["bytes_per_run"] = round((after - before) / n)
        return res
    finally:
        delete_prefix(client, prefix)


def bench_sqlite(n: int, tmp: Path) -> Dict[str, Any]:
    store = SqliteRunStore(SqliteDatabase(tmp / f"runs-{n}.db"))
    t = time.perf_counter()
    for i in range(n):
        store.save(make_run(i))
    res = measure(store, n)
    res["populate_s"] = round(time.perf_counter() - t, 2)
    return res


def bench_json(n: int, tmp: Path) -> Dict[str, Any]:
    store = JsonFileRunStore(tmp / f"json-{n}")
    t = time.perf_counter()
    for i in range(n):
        store.save(make_run(i))
    res = measure(store, n)
    res["populate_s"] = round(time.perf_counter() - t, 2)
    return res


def run(sizes: List[int], stores: set, redis_url: str = "redis://127.0.0.1:6379/13") -> List[Dict[str, Any]]:
    results: List[Dict[str, Any]] = []
    random.seed(7)
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for n in sizes:
            if "redis" in stores:
                results.append({"store": "redis", "runs": n, **bench_redis(n, redis_url)})
                print(f"redis {n} done", file=sys.stderr)
            if "sqlite" in stores:
                results.append({"store": "sqlite", "runs": n, **bench_sqlite(n, tmp)})
                print(f"sqlite {n} done", file=sys.stderr)
            if "json" in stores and n <= JSON_CAP:
                results.append({"store": "jsonfile", "runs": n, **bench_json(n, tmp)})
                print(f"jsonfile {n} done", file=sys.stderr)
    print_table(results)
    return results


def print_table(results: List[Dict[str, Any]]) -> None:
    cols = ["save", "load", "list_due_none_due", "list_runs_waiting_100"]
    header = "| store | runs | " + " | ".join(f"{c} p50/p95 ms" for c in cols) + " | populate s | bytes/run |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in results:
        cells = " | ".join(f"{r[c]['p50_ms']:.3f} / {r[c]['p95_ms']:.3f}" for c in cols)
        print(f"| {r['store']} | {r['runs']:,} | {cells} | {r['populate_s']} | {r.get('bytes_per_run', '')} |")


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    ap.add_argument("--stores", default="redis,sqlite,json")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results = run(sizes, set(args.stores.split(",")), args.redis_url)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
