"""Two checkouts side by side: worker throughput and in-process CPU per start, in turns.

    git worktree add /tmp/base <commit>
    python -m bench.ab --base /tmp/base [--turns 3] [--n 1500]

Each turn runs the throughput benchmark (``bench.throughput``: bare Celery no-op tasks, then
1- and 10-node runs, 2 workers and 1) and ``bench.cpu`` (``Driver.start_and_tick`` in one
process, no Celery) once for the base checkout and once for this one, each in its own
process with its own package on ``PYTHONPATH``. Turns alternate base, head, base, head...
so a machine whose speed drifts moves both alike; the table shows the median per row and
the head/base ratio of those medians, and every sample goes to ``bench/results/ab.json``.
Both checkouts must have ``bench/throughput.py`` and ``bench/cpu.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import ROOT, write_json

#: Run inside one checkout: prints one JSON line with its throughput rows and CPU rows.
_PROBE = """
import json, sys, tempfile
from pathlib import Path
from bench import cpu, throughput
n = int(sys.argv[1])
out = Path(tempfile.mkdtemp(prefix="bench-ab-"))
tp = throughput.run(n=n, worker_counts=(2, 1), profile=False, repeat=1, out_dir=out)
c = cpu.run(n=n, repeat=1, out_dir=out)
print("AB-RESULT " + json.dumps({"throughput": tp["rows"], "cpu": c["rows"]}, default=str))
"""


def _probe(root: Path, n: int) -> dict[str, Any]:
    """One measurement of the checkout at ``root``, in a process of its own.

    Raises:
        RuntimeError: the probe printed no result (its output is in the message).
    """
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", _PROBE, str(n)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    for line in done.stdout.splitlines():
        if line.startswith("AB-RESULT "):
            return json.loads(line[len("AB-RESULT "):])
    raise RuntimeError(f"no result from {root}: {done.stdout[-2000:]}{done.stderr[-2000:]}")


def _figures(sample: dict[str, Any]) -> dict[str, float]:
    """The figures compared, by name, from one probe."""
    out: dict[str, float] = {}
    for row in sample["throughput"]:
        name = "bare no-op" if row["workflow"] == "-" else row["workflow"]
        out[f"{name}, {row['workers']} workers: per s"] = float(row["per_s"])
        if row["workflow"] != "-":
            out[f"{name}, {row['workers']} workers: ratio to bare"] = float(row["ratio_vs_bare"])
    for row in sample["cpu"]:
        out["start_and_tick: process CPU ms"] = float(row["process_cpu_ms"])
        out["start_and_tick: Redis CPU ms"] = float(row["redis_cpu_ms"])
    return out


def run(base: Path, turns: int = 3, n: int = 1500, out_dir: Path | None = None) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    for turn in range(turns):
        for side, root in (("base", base), ("head", ROOT)):
            print(f"turn {turn + 1}/{turns}: {side} ({root})", flush=True)
            samples[side].append(_figures(_probe(root, n)))
    rows = []
    for name in samples["head"][0]:
        b = statistics.median(s[name] for s in samples["base"] if name in s)
        h = statistics.median(s[name] for s in samples["head"])
        rows.append({"figure": name, "base": b, "head": h, "head_over_base": h / b if b else None,
                     "base_turns": [s.get(name) for s in samples["base"]],
                     "head_turns": [s[name] for s in samples["head"]]})
    print_table(rows, base)
    path = write_json("ab", {"base": str(base), "base_commit": _commit(base), "turns": turns, "n": n,
                             "rows": rows}, out_dir)
    print(f"wrote {path}")
    return {"rows": rows}


def _commit(root: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip()


def print_table(rows: list[dict[str, Any]], base: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"head vs base ({_commit(base)}), medians of alternating turns")
    for c in ("figure", "base", "head", "head / base", "turns (base | head)"):
        table.add_column(c, justify="left" if c in ("figure", "turns (base | head)") else "right")
    for r in rows:
        turns = " ".join(f"{x:.3g}" for x in r["base_turns"] if x is not None) + " | " + \
            " ".join(f"{x:.3g}" for x in r["head_turns"])
        table.add_row(r["figure"], f"{r['base']:.3g}", f"{r['head']:.3g}", f"{r['head_over_base']:.2f}", turns)
    Console(width=150).print(table)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="a checkout of the baseline (git worktree add DIR COMMIT)")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run(Path(args.base).resolve(), args.turns, args.n, Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
