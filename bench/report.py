"""Turn bench/results/*.json into docs/benchmarks.md tables, docs/img/*.png plots and
the targets table. Tables live between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``
markers; everything outside the markers (the prose) is left as it is.

    python -m bench report [--results bench/results] [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench.common import ROOT

DOCS = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
PARTS = ("lateness", "throughput", "resume", "scale", "store", "roundtrips")


def load(results: Path) -> dict[str, Any]:
    out = {}
    for part in PARTS:
        p = Path(results) / f"{part}.json"
        if p.exists():
            out[part] = json.loads(p.read_text())
    return out


def f(x: Any, digits: int = 1) -> str:
    if isinstance(x, float):
        if x != x:
            return "-"
        return f"{x:,.{digits}f}"
    return "-" if x is None else str(x)


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# --- sections ---------------------------------------------------------------------------

def machine_md(r: dict[str, Any]) -> str:
    m = next(iter(r.values()))["machine"]
    return (f"Measured on: {m['nproc']} vCPU ({m['cpu']}), {m['mem_gib']} GiB RAM, Python {m['python']}, "
            f"Redis {m['redis_server']} on loopback, Celery {m['celery']} (kombu {m['kombu']}), redis-py "
            f"{m['redis_py']}, abstractruntime {m['abstractruntime']}; {m['platform']}"
            + (f"; code: {m['code']}." if m.get("code") else "."))


def lateness_md(d: dict[str, Any]) -> str:
    rows = []
    for r in d["rows"]:
        ours = r["name"].startswith("abstractruntime_celery")
        rows.append([f"{r['n']:,}", r["name"], f(r["p50_ms"]), f(r["p95_ms"]), f(r["p99_ms"]), f(r["max_ms"]),
                     f"{r['completed']:,}/{r['n']:,}", f(r["wall_s"]),
                     r.get("duplicates", "-") if ours else "-", r.get("lease_busy", "-") if ours else "-",
                     r.get("early", "-") if ours else "-"])
    ratios = []
    for n in d["sizes"]:
        by = {r["name"]: r for r in d["rows"] if r["n"] == n}
        b, s = by.get("bare Celery ETA no-op"), by.get("built-in Scheduler")
        for name, o in by.items():
            if name.startswith("abstractruntime_celery"):
                ratios.append([f"{n:,}", name, f(o["p99_ms"] / b["p99_ms"], 2) if b else "-",
                               f(s["p99_ms"] / o["p99_ms"], 0) if s else "-"])
    return (table(["N", "contender", "p50 ms", "p95 ms", "p99 ms", "max ms", "completed", "wall s", "duplicates",
                   "lease busy", "early"], rows)
            + "\n\n" + table(["N", "ours", "ours p99 / bare Celery p99", "built-in p99 / ours p99"], ratios)
            + "\n\n![Timer lateness CDF](img/lateness_cdf.png)")


def throughput_md(d: dict[str, Any]) -> str:
    rows = [[r["workers"], r["contender"], r["workflow"], f"{r['n']:,}", f"{r['completed']:,}", f(r["wall_s"], 2),
             f(r["per_s"], 0), f(r.get("ratio_vs_bare"), 2), r.get("duplicates", "-"), r.get("lease_busy", "-"),
             r.get("early", "-")] for r in d["rows"]]
    return (table(["workers", "contender", "workflow", "N", "completed", "wall s", "per s", "vs bare",
                   "duplicates", "lease busy", "early"], rows)
            + "\n\n![Throughput](img/throughput.png)")


def resume_md(d: dict[str, Any]) -> str:
    rows = [[r["contender"], r["events"], r["completed"], f(r["p50_ms"], 2), f(r["p95_ms"], 2), f(r["p99_ms"], 2),
             f(r["max_ms"], 2), r.get("duplicates", "-"), r.get("lease_busy", "-")] for r in d["rows"]]
    o = d["rows"][0]
    return (table(["contender", "events", "completed", "p50 ms", "p95 ms", "p99 ms", "max ms", "duplicates",
                   "lease busy"], rows)
            + f"\n\nOurs / bare: p50 x{f(o.get('ratio_p50_vs_bare'), 1)}, p99 x{f(o.get('ratio_p99_vs_bare'), 1)}."
            + "\n\n![Resume latency](img/resume_hist.png)")


def scale_md(d: dict[str, Any]) -> str:
    s, r = d["sweep"], d["rss"]
    t1 = table(["runs waiting (none due)", "sweep p50 ms", "sweep p95 ms", "sweep max ms",
                "list_due_wait_until p50 ms", "populate runs/s", "Redis bytes/run"],
               [[f"{s['runs_waiting']:,}", f(s["sweep_p50_ms"], 2), f(s["sweep_p95_ms"], 2), f(s["sweep_max_ms"], 2),
                 f(s["list_due_p50_ms"], 3), f(s["populate_per_s"], 0), f(s["redis_bytes_per_run"], 0)]])
    t2 = table(["worker state", "RSS per worker MiB", "RSS total MiB", "vs idle"],
               [["idle (after warm-up)", " / ".join(f(x) for x in r["idle_rss_mib"]), f(r["idle_total_mib"]), "1.00"],
                [f"{r['runs_waiting']:,} runs waiting one day", " / ".join(f(x) for x in r["loaded_rss_mib"]),
                 f(r["loaded_total_mib"]), f(r["ratio"], 3)]])
    return (t1 + "\n\n" + t2 + f"\n\nWhile parking {r['runs_waiting']:,} runs: {r['ticks']:,} ticks in "
            f"{f(r['ticked_in_s'])} s, timers armed {r['timers_armed']}, duplicates {r['duplicates']}, lease busy "
            f"{r['lease_busy']}, early {r['early']}, tick errors {r['tick_errors']}; messages left in the queue "
            f"{r['queue_len_after']}.\n\n![Scale](img/scale.png)")


def store_md(d: dict[str, Any]) -> str:
    cols = ["save", "load", "list_due_none_due", "list_runs_waiting_100"]
    rows = [[r["store"], f"{r['runs']:,}", *(f"{r[c]['p50_ms']:.3f} / {r[c]['p95_ms']:.3f}" for c in cols),
             r.get("bytes_per_run", "-")] for r in d["rows"]]
    return table(["store", "runs", "save", "load", "list_due_wait_until (none due)", "list_runs(WAITING, 100)",
                  "Redis bytes/run"], rows)


def roundtrips_md(d: dict[str, Any]) -> str:
    from collections import Counter

    rows = []
    for r in d["rows"]:
        trips = [("[broker] " if x.startswith("db7") else "") + x.split(":", 1)[1] for x in r["sequence"]]
        if len(trips) <= 16:
            seq = " ".join(trips)
        else:
            seq = "by round trip: " + ", ".join(f"{k} x{v}" for k, v in Counter(trips).most_common())
        rows.append([r["operation"], f"{r['median']:g}", f"{r['store']:g}", f"{r['broker']:g}", f"`{seq}`"])
    return table(["operation", "round trips", "store + coordination", "broker", "commands (one repeat)"], rows)


def profile_md(d: dict[str, Any]) -> str:
    p = d.get("profile")
    if not p or "error" in p:
        return f"(no profile: {p.get('error') if p else 'not run'})"
    keep = ("abstractruntime_celery/", "core/runtime.py", "redis/client.py", "_parsers/socket.py",
            "redis/connection.py", "commands/core.py", "kombu/messaging.py", "app/base.py", "app/trace.py",
            "storage/", "json/")
    picked = [x for x in p["inclusive"] if any(k in x["function"] for k in keep) and x["pct"] < 60][:14]
    t1 = table(["function (inclusive: on the stack)", "% of samples"], [[f"`{x['function']}`", f(x["pct"])]
                                                                       for x in picked])
    t2 = table(["function (self: top of the stack)", "% of samples"], [[f"`{x['function']}`", f(x["pct"])]
                                                                     for x in p["self"][:8]])
    during = p["during"]
    return (f"{p['tool']}, one of the two workers, {p['samples']:,} samples while it ran "
            f"{during['n']:,} 1-node runs ({f(during['per_s'], 0)} runs/s under the profiler).\n\n"
            + t1 + "\n\n" + t2)


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, measured: str, ratio: float | None, ok: bool | None) -> None:
        out.append({"target": name, "measured": measured, "ratio": ratio,
                    "status": "-" if ok is None else ("met" if ok else "missed")})

    lat = r.get("lateness")
    if lat:
        n = 2000 if 2000 in lat["sizes"] else max(lat["sizes"])
        by = {x["name"]: x for x in lat["rows"] if x["n"] == n}
        b, s = by.get("bare Celery ETA no-op"), by.get("built-in Scheduler")
        for name, o in by.items():
            if not name.startswith("abstractruntime_celery"):
                continue
            how = "caller parks" if "caller" in name else "workers park"
            if b:
                ratio = o["p99_ms"] / b["p99_ms"]
                add(f"lateness p99 at N={n:,} <= 2x bare Celery ETA p99 ({how})",
                    f"{f(o['p99_ms'])} ms vs {f(b['p99_ms'])} ms", ratio, ratio <= 2)
            if s:
                ratio = s["p99_ms"] / o["p99_ms"]
                add(f"lateness p99 at N={n:,} >= 100x better than built-in Scheduler ({how})",
                    f"{f(o['p99_ms'])} ms vs {f(s['p99_ms'])} ms", ratio, ratio >= 100)
    tp = r.get("throughput")
    if tp:
        o = next((x for x in tp["rows"] if x["workers"] == 2 and x["workflow"] == "bench_chain1"), None)
        b = next((x for x in tp["rows"] if x["workers"] == 2 and x["contender"].startswith("bare")), None)
        if o and b:
            # the median of the per-turn ratios when the run took turns (bench/throughput.py)
            ratio = o.get("ratio_vs_bare") or o["per_s"] / b["per_s"]
            turns = o.get("ratios") or []
            spread = f"; turns {min(turns):.2f}-{max(turns):.2f}" if len(turns) > 1 else ""
            add("1-node runs/s >= 60% of bare Celery no-op tasks/s (2 workers, median of turns)",
                f"{f(o['per_s'], 0)} vs {f(b['per_s'], 0)} /s{spread}", ratio, ratio >= 0.6)
    rs = r.get("resume")
    if rs:
        o = rs["rows"][0]
        add("resume latency p50 <= 5 ms", f"{f(o['p50_ms'], 2)} ms", o["p50_ms"] / 5, o["p50_ms"] <= 5)
        add("resume latency p99 <= 20 ms", f"{f(o['p99_ms'], 2)} ms", o["p99_ms"] / 20, o["p99_ms"] <= 20)
    sc = r.get("scale")
    if sc:
        s = sc["sweep"]
        add(f"sweep with {s['runs_waiting']:,} waiting runs, none due <= 5 ms (p50)",
            f"{f(s['sweep_p50_ms'], 2)} ms", s["sweep_p50_ms"] / 5, s["sweep_p50_ms"] <= 5)
        rr = sc["rss"]
        add(f"worker RSS with {rr['runs_waiting']:,} day-long waits within 20% of idle",
            f"{f(rr['loaded_total_mib'])} vs {f(rr['idle_total_mib'])} MiB", rr["ratio"], rr["ratio"] <= 1.2)
    return out


def targets_md(rows: list[dict[str, Any]]) -> str:
    return table(["target", "measured", "ratio", "status"],
                 [[t["target"], t["measured"], f(t["ratio"], 2), f"**{t['status']}**"] for t in rows])


def print_targets(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Targets")
    for c in ("target", "measured", "ratio", "status"):
        t.add_column(c)
    for x in rows:
        t.add_row(x["target"], x["measured"], f(x["ratio"], 2), x["status"])
    Console(width=160).print(t)


# --- plots ------------------------------------------------------------------------------

COLORS = {"abstractruntime_celery": "#1f77b4", "abstractruntime_celery (caller parks)": "#9467bd",
          "bare Celery ETA no-op": "#2ca02c", "built-in Scheduler": "#d62728"}


def plots(r: dict[str, Any], img: Path = IMG) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    written = []
    lat = r.get("lateness")
    if lat:
        sizes = lat["sizes"]
        fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
        for ax, n in zip(axes[0], sizes):
            for row in (x for x in lat["rows"] if x["n"] == n):
                xs = sorted(max(0.01, v) for v in row["samples_ms"])
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.step(xs, ys, where="post", label=f"{row['name']} (p99 {row['p99_ms']:,.1f} ms)",
                        color=COLORS.get(row["name"]))
            ax.set_xscale("log")
            ax.set_xlabel("lateness: node ran - until (ms, log)")
            ax.set_title(f"N = {n:,} timers, 2 solo workers")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        axes[0][0].set_ylabel("fraction of runs")
        fig.suptitle("Timer lateness CDF (left is better)")
        fig.tight_layout()
        written.append(_save(fig, img / "lateness_cdf.png"))
    tp = r.get("throughput")
    if tp:
        fig, ax = plt.subplots(figsize=(8, 4))
        groups = sorted({x["workers"] for x in tp["rows"]}, reverse=True)
        labels = ["bare Celery no-op", "bench_chain1", "bench_chain10"]
        width = 0.25
        for i, lab in enumerate(labels):
            vals = []
            for w in groups:
                row = next((x for x in tp["rows"] if x["workers"] == w and
                            (x["workflow"] == lab or x["contender"] == lab)), None)
                vals.append(row["per_s"] if row else 0)
            xs = [g + (i - 1) * width for g in range(len(groups))]
            bars = ax.bar(xs, vals, width, label={"bench_chain1": "ours: 1-node runs",
                                                  "bench_chain10": "ours: 10-node runs"}.get(lab, lab))
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(groups)), [f"{w} worker process{'es' if w > 1 else ''}" for w in groups])
        ax.set_ylabel("completed per second")
        ax.set_title("Throughput: runs started and completed per second vs bare Celery no-op tasks/s")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, img / "throughput.png"))
    rs = r.get("resume")
    if rs:
        fig, ax = plt.subplots(figsize=(8, 4))
        for row, color in zip(rs["rows"], ("#1f77b4", "#2ca02c")):
            ax.hist(row["samples_ms"], bins=60, alpha=0.6, color=color,
                    label=f"{row['contender']} (p50 {row['p50_ms']:.1f}, p99 {row['p99_ms']:.1f} ms)")
        for v, ls in ((5, "--"), (20, ":")):
            ax.axvline(v, color="k", ls=ls, lw=1, label=f"target {v} ms")
        ax.set_xlabel("ms")
        ax.set_ylabel("events")
        ax.set_title("Resume latency: resume_event(wait=False) -> next node ran")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, img / "resume_hist.png"))
    sc = r.get("scale")
    if sc:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        s = sc["sweep"]
        bars = a1.bar(["sweep p50", "sweep p95", "target"], [s["sweep_p50_ms"], s["sweep_p95_ms"], 5.0],
                      color=["#1f77b4", "#1f77b4", "#bbbbbb"])
        a1.bar_label(bars, fmt="%.2f")
        a1.set_ylabel("ms")
        a1.set_title(f"Sweep, {s['runs_waiting']:,} runs waiting, none due")
        rr = sc["rss"]
        bars = a2.bar(["idle", f"{rr['runs_waiting']:,} day-long waits"],
                      [rr["idle_total_mib"], rr["loaded_total_mib"]], color=["#2ca02c", "#1f77b4"])
        a2.bar_label(bars, fmt="%.1f MiB")
        a2.axhline(rr["idle_total_mib"] * 1.2, color="k", ls="--", lw=1, label="idle + 20%")
        a2.set_ylabel("RSS of 2 worker processes, MiB")
        a2.set_title("Worker memory")
        a2.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, img / "scale.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --- the markdown file ------------------------------------------------------------------

SECTIONS = {"machine": machine_md, "lateness": lateness_md, "throughput": throughput_md, "resume": resume_md,
            "scale": scale_md, "store": store_md, "roundtrips": roundtrips_md, "profile": profile_md}


def update_docs(r: dict[str, Any], docs: Path = DOCS, tgt: list[dict[str, Any]] | None = None) -> None:
    text = docs.read_text()
    blocks = {}
    for name, fn in SECTIONS.items():
        src = r if name == "machine" else r.get("throughput" if name == "profile" else name)
        if src:
            blocks[name] = fn(src)
    if tgt:
        blocks["targets"] = targets_md(tgt)
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n)(?:.*?\n)?(<!-- /bench:{name} -->)", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
        else:
            print(f"docs: no <!-- bench:{name} --> marker in {docs}; section skipped")
    docs.write_text(text)


def report(results: Path, *, docs: Path | None = DOCS, img: Path | None = IMG) -> list[dict[str, Any]]:
    r = load(results)
    tgt = targets(r)
    print_targets(tgt)
    (Path(results) / "targets.json").write_text(json.dumps(tgt, indent=2))
    if img is not None and r:
        for p in plots(r, img):
            print(f"wrote {p}")
    if docs is not None and r:
        update_docs(r, docs, tgt)
        print(f"updated {docs}")
    return tgt
