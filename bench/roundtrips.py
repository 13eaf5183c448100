"""Redis round trips per operation, counted in-process.

    python -m bench.roundtrips            # table + bench/results/roundtrips.json
    python -m bench roundtrips            # the same, through the bench runner

A round trip is one ``send_packed_command`` on a redis-py connection (a single
command, a script call, or a whole pipeline), split by Redis db: the store and
coordination db (8) vs the broker db (7, kombu's publish). Each operation runs
``repeat`` times on fresh runs; the table shows the median (and min/max when they
differ). No worker consumes the private queue: its messages are purged after.

Reuse it around any code::

    from bench.roundtrips import count_roundtrips
    with count_roundtrips() as rt:
        driver.tick(run_id)
    print(rt.total, rt.by_db, rt.commands)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from redis.connection import AbstractConnection


@dataclass
class RoundTrips:
    """What ran inside one ``count_roundtrips`` block."""

    total: int = 0
    by_db: Counter = field(default_factory=Counter)
    commands: Counter = field(default_factory=Counter)  # command names (a pipeline counts each)
    trips: list[tuple[int, list[str]]] = field(default_factory=list)  # (db, command names) per round trip


def _names(packed: Any) -> list[str]:
    """Command names in RESP-packed bytes (one or many commands)."""
    if isinstance(packed, (list, tuple)):
        data = b"".join(x if isinstance(x, (bytes, bytearray)) else bytes(x) for x in packed)
    else:
        data = bytes(packed)
    names, i = [], 0
    try:
        while i < len(data) and data[i:i + 1] == b"*":
            j = data.index(b"\r\n", i)
            argc = int(data[i + 1:j])
            i = j + 2
            for a in range(argc):
                j = data.index(b"\r\n", i)
                ln = int(data[i + 1:j])
                arg = data[j + 2:j + 2 + ln]
                if a == 0:
                    names.append(arg.decode(errors="replace").upper())
                i = j + 2 + ln + 2
    except (ValueError, IndexError):
        names.append("?")
    return names


_active: list[RoundTrips] = []
_original = AbstractConnection.send_packed_command


def _counting_send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
    if _active:
        db = int(getattr(self, "db", 0) or 0)
        names = _names(command)
        for rt in _active:
            rt.total += 1
            rt.by_db[db] += 1
            rt.commands.update(names)
            rt.trips.append((db, names))
    return _original(self, command, check_health)


@contextmanager
def count_roundtrips() -> Iterator[RoundTrips]:
    """Count redis-py round trips made in this process (every thread) inside the block."""
    rt = RoundTrips()
    if AbstractConnection.send_packed_command is not _counting_send:
        AbstractConnection.send_packed_command = _counting_send  # type: ignore[method-assign]
    _active.append(rt)
    try:
        yield rt
    finally:
        _active.remove(rt)
        if not _active:
            AbstractConnection.send_packed_command = _original  # type: ignore[method-assign]


def _measure(label: str, setup: Callable[[], Any], op: Callable[[Any], Any], repeat: int,
             store_db: int, broker_db: int) -> dict[str, Any]:
    samples = []
    last: RoundTrips | None = None
    for _ in range(repeat):
        arg = setup()
        with count_roundtrips() as rt:
            op(arg)
        samples.append(rt)
        last = rt
    totals = [s.total for s in samples]
    assert last is not None
    return {"operation": label, "median": statistics.median(totals), "min": min(totals), "max": max(totals),
            "store": statistics.median(s.by_db.get(store_db, 0) for s in samples),
            "broker": statistics.median(s.by_db.get(broker_db, 0) for s in samples),
            "sequence": [f"db{db}:" + "+".join(n) for db, n in last.trips]}


def run(repeat: int = 20, *, out_dir: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    from abstractruntime_celery.sweep import sweep

    from bench.common import BROKER_DB, STORE_DB, Ours, write_json
    from bench.workflows import chain1, chain10, daywait, sleeper, waiter

    ours = Ours("bench-rt")
    sr = ours.scheduled_runtime()
    d = sr.driver
    rows: list[dict[str, Any]] = []

    def m(label: str, setup: Callable[[], Any], op: Callable[[Any], Any]) -> None:
        rows.append(_measure(label, setup, op, repeat, STORE_DB, BROKER_DB))

    def started(wf: Any, **vars: Any) -> Callable[[], str]:
        return lambda: d.start_run(wf, vars=vars)

    def parked_timer() -> str:
        rid = d.start_run(sleeper, vars={"until": (datetime.now(timezone.utc) + timedelta(seconds=0.05)).isoformat()})
        d.tick(rid)
        time.sleep(0.06)
        return rid

    def parked_event() -> str:
        rid = d.start_run(waiter)
        d.tick(rid)
        return rid

    def evented() -> str:
        rid = parked_event()
        sr.scheduler.resume_event(run_id=rid, wait_key=f"go:{rid}", payload={"x": 1}, wait=False)
        return rid

    def completed() -> str:
        rid = d.start_run(chain1)
        d.tick(rid)
        return rid

    try:
        # warm up: script loads, connections, imports
        for _ in range(3):
            completed(), evented(), parked_timer()
        m("start_run (caller: create + send tick)", lambda: None, lambda _: d.start_run(chain1))
        m("start task on a worker: create + tick a 1-node run", lambda: None,
          lambda _: d.start_and_tick(chain1))
        m("tick: 1-node run, start to completed", started(chain1), lambda rid: d.tick(rid))
        m("tick: 10-node run, start to completed", started(chain10), lambda rid: d.tick(rid))
        m("tick: park on wait_until (arms ETA)",
          started(sleeper, until=(datetime.now(timezone.utc) + timedelta(seconds=60)).isoformat()),
          lambda rid: d.tick(rid))
        m("tick: due timer resumes, run completes", parked_timer, lambda rid: d.tick(rid, reason="timer"))
        m("resume_event (caller, wait=False)", parked_event,
          lambda rid: sr.scheduler.resume_event(run_id=rid, wait_key=f"go:{rid}", payload={"x": 1}, wait=False))
        m("tick: apply the event, run completes", evented, lambda rid: d.tick(rid, reason="event"))
        m("tick: duplicate (run already completed)", completed, lambda rid: d.tick(rid))
    finally:
        ours.cleanup()
    # The sweep on its own prefix: 20 runs waiting a day (beyond the horizon), nothing due.
    quiet_ours = Ours("bench-rt")
    try:
        qd = quiet_ours.scheduled_runtime().driver
        for _ in range(20):
            qd.tick(qd.start_run(daywait))
        rows.append(_measure("sweep (20 runs waiting a day, nothing due)", lambda: None,
                             lambda _: sweep(qd, force=True), repeat, STORE_DB, BROKER_DB))
    finally:
        quiet_ours.cleanup()
    data = {"repeat": repeat, "store_db": STORE_DB, "broker_db": BROKER_DB, "rows": rows}
    if not quiet:
        print_table(rows)
    path = write_json("roundtrips", data, out_dir)
    if not quiet:
        print(f"wrote {path}")
    return data


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Redis round trips per operation (median of repeats)")
    for c in ("operation", "total", "store/coord", "broker", "sequence (last repeat)"):
        table.add_column(c, justify="left" if c in ("operation", "sequence (last repeat)") else "right")
    for r in rows:
        total = f"{r['median']:g}" + ("" if r["min"] == r["max"] else f" ({r['min']}-{r['max']})")
        table.add_row(r["operation"], total, f"{r['store']:g}", f"{r['broker']:g}", " ".join(r["sequence"]))
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run(args.repeat, out_dir=Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
