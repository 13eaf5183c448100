"""``python -m soak [--short] [--runs N] [--json PATH] [--seed S]``: exit status 0 only if
every run ended as intended and nothing was applied twice."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from soak.harness import LONG, SHORT, Soak, write_json


def render(result: dict[str, Any], console: Console) -> None:
    kinds = Table(title="runs by kind")
    kinds.add_column("kind")
    kinds.add_column("runs", justify="right")
    kinds.add_column("ended as intended", justify="right")
    for kind, row in sorted(result["runs"]["by_kind"].items()):
        kinds.add_row(kind, str(row["runs"]), str(row["as_intended"]))
    console.print(kinds)
    summary = Table(title="soak")
    summary.add_column("what")
    summary.add_column("count", justify="right")
    for section in ("runs", "chaos", "checks", "timing"):
        for key, value in result[section].items():
            if not isinstance(value, dict):
                summary.add_row(f"{section}.{key}", str(value))
    for key in ("transitions", "ticks", "duplicates", "lease_busy", "lease_lost", "orphans_recovered",
                "events_applied", "timers_armed", "parents_resumed", "tick_errors", "sweeps", "controlled"):
        summary.add_row(f"cluster.{key}", str(result["cluster_stats"].get(key, 0)))
    console.print(summary)
    if result["problems"]:
        console.print(f"[bold red]{len(result['problems'])} problems[/]")
        for p in result["problems"][:40]:
            console.print(f"  - {p}")
    else:
        console.print("[bold green]OK: every run ended as intended; nothing applied twice[/]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    ap.add_argument("--short", action="store_true", help="200 runs in about a minute (CI)")
    ap.add_argument("--runs", type=int, help="override the number of runs")
    ap.add_argument("--submit-s", type=float, help="override the window over which runs are created")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--json", type=Path, default=None, help="where to write the JSON report "
                    "(default: soak-report[-short].json in the current directory)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep Redis data and logs here")
    args = ap.parse_args(argv)
    profile = SHORT if args.short else LONG
    if args.runs:
        profile = replace(profile, runs=args.runs)
    if args.submit_s:
        profile = replace(profile, submit_s=args.submit_s)
    console = Console()
    console.print(f"soak: {profile.runs} runs over {profile.submit_s:.0f}s, {profile.workers} workers x "
                  f"{profile.concurrency} (prefork) + beat, kill every ~{profile.kill_every_s:.0f}s, seed {args.seed}")
    soak = Soak(profile, seed=args.seed, workdir=args.workdir, log=console.print)
    result = soak.run()
    result["profile"] = {"short": args.short, **profile.__dict__}
    render(result, console)
    path = args.json or Path("soak-report-short.json" if args.short else "soak-report.json")
    write_json(result, path)
    console.print(f"JSON: {path}  (logs and Redis data: {soak.tmp})")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
