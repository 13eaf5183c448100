"""One command for every benchmark.

    python -m bench all [--quick]          # everything, then the report
    python -m bench lateness|throughput|resume|scale|store|roundtrips [--quick]
    python -m bench report                 # tables, plots and targets from saved JSON

Full runs write bench/results/*.json, update the tables in docs/benchmarks.md and
the plots in docs/img/. ``--quick`` (CI) writes bench/results/quick/ and leaves the
docs alone unless ``--docs`` is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS

ORDER = ("roundtrips", "lateness", "throughput", "resume", "scale", "store")


def run_part(part: str, quick: bool, out: Path, logdir: Path, profile: bool) -> None:
    if part == "lateness":
        from bench import lateness

        lateness.run(lateness.QUICK_SIZES if quick else lateness.SIZES, out_dir=out, logdir=logdir)
    elif part == "throughput":
        from bench import throughput

        throughput.run(quick, profile=profile, out_dir=out, logdir=logdir)
    elif part == "resume":
        from bench import resume

        resume.run(quick, out_dir=out, logdir=logdir)
    elif part == "scale":
        from bench import scale

        scale.run(quick, out_dir=out, logdir=logdir)
    elif part == "store":
        from bench import store_bench
        from bench.common import write_json

        sizes = [10_000] if quick else [10_000, 100_000]
        stores = {"redis", "sqlite"} if quick else {"redis", "sqlite", "json"}
        rows = store_bench.run(sizes, stores)
        print(f"wrote {write_json('store', {'sizes': sizes, 'rows': rows}, out)}")
    elif part == "roundtrips":
        from bench import roundtrips

        roundtrips.run(10 if quick else 20, out_dir=out)
    else:
        raise SystemExit(f"unknown part {part!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("all", "report") + ORDER)
    ap.add_argument("--quick", action="store_true", help="small sizes (CI: the whole run under 2 minutes)")
    ap.add_argument("--out", default=None, help="results directory (default bench/results, quick: .../quick)")
    ap.add_argument("--docs", action="store_true", help="update docs/benchmarks.md and docs/img even with --quick")
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    ap.add_argument("--no-profile", action="store_true", help="skip py-spy during the throughput benchmark")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else (RESULTS / "quick" if args.quick else RESULTS)
    logdir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    profile = not args.quick and not args.no_profile
    t0 = time.perf_counter()
    parts = ORDER if args.part == "all" else (() if args.part == "report" else (args.part,))
    for part in parts:
        t = time.perf_counter()
        print(f"=== {part} ===", flush=True)
        run_part(part, args.quick, out, logdir, profile)
        print(f"=== {part}: {time.perf_counter() - t:.1f} s ===", flush=True)
    from bench import report

    docs = not args.no_docs and (args.docs or not args.quick)
    report.report(out, docs=report.DOCS if docs else None, img=report.IMG if docs else None)
    print(f"total wall time {time.perf_counter() - t0:.1f} s; results in {out}; worker logs in {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
