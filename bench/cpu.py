"""CPU per started run, without Celery: what one 1-node start costs this process and Redis.

    python -m bench.cpu [--n 3000] [--repeat 3]

``Driver.start_and_tick`` (what the start task runs) is called N times in this process
on a private prefix; the table shows the process CPU time and the Redis server's CPU
time (``INFO cpu``) per run, for each repeat. Nothing else should be running: the
Redis figure is the whole server's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import Ours, write_json


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def run(n: int = 3000, repeat: int = 3, out_dir: Path | None = None) -> dict[str, Any]:
    from bench.workflows import chain1

    ours = Ours("bench-cpu")
    rows = []
    try:
        driver = ours.scheduled_runtime().driver
        server = redis.Redis.from_url(ours.store)
        for _ in range(300):  # warm up: scripts, pools, imports
            driver.start_and_tick(chain1)
        for _ in range(repeat):
            r0, p0, t0 = _redis_cpu(server), time.process_time(), time.perf_counter()
            for _ in range(n):
                driver.start_and_tick(chain1)
            t1, p1, r1 = time.perf_counter(), time.process_time(), _redis_cpu(server)
            rows.append({"n": n, "wall_ms": (t1 - t0) / n * 1e3, "process_cpu_ms": (p1 - p0) / n * 1e3,
                         "redis_cpu_ms": (r1 - r0) / n * 1e3})
    finally:
        ours.cleanup()
    print_table(rows)
    path = write_json("cpu", {"workflow": "bench_chain1", "rows": rows}, out_dir)
    print(f"wrote {path}")
    return {"rows": rows}


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="One 1-node start (Driver.start_and_tick), per run, no Celery")
    for c in ("n", "wall ms", "process CPU ms", "Redis CPU ms"):
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(f"{r['n']:,}", f"{r['wall_ms']:.3f}", f"{r['process_cpu_ms']:.3f}", f"{r['redis_cpu_ms']:.3f}")
    Console(width=100).print(table)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run(args.n, args.repeat, Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
