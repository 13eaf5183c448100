"""Measure what one run occupies in Redis, waiting and finished (``MEMORY USAGE``).

    python -m devkit.run_memory [--url redis://127.0.0.1:6379/10] [--runs 200]

A typical small run: four nodes (prepare, a 0.2 s timer, an event wait, finish). For
one run, the keys it owns and the index keys naming it are summed in three states:
waiting on its timer, waiting on its event, finished. Then ``--runs`` such runs are
driven to each state under a fresh prefix and the whole prefix is measured: the
memory per run including its share of the shared indexes. Writes only under a fresh
prefix, and deletes it at the end.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from abstractruntime import Effect, EffectType, StepPlan, WorkflowRegistry, WorkflowSpec

from abstractruntime_celery import Settings
from abstractruntime_celery.driver import NullDispatcher, build
from devkit.cleanup import delete_prefix
from devkit.runkeys import keys_naming, memory_of, owned_keys, prefix_memory

TIMER_S = 0.2


def _prepare(run: Any, ctx: Any) -> StepPlan:
    run.vars["order"] = {"id": run.run_id[-8:], "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}]}
    return StepPlan(node_id="prepare", next_node="nap")


def _nap(run: Any, ctx: Any) -> StepPlan:
    until = (datetime.now(timezone.utc) + timedelta(seconds=TIMER_S)).isoformat()
    return StepPlan(node_id="nap", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="approve")


def _approve(run: Any, ctx: Any) -> StepPlan:
    return StepPlan(node_id="approve", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": f"approve:{run.run_id}"},
                                                     result_key="approval"), next_node="finish")


def _finish(run: Any, ctx: Any) -> StepPlan:
    return StepPlan(node_id="finish", complete_output={"order": run.vars["order"]["id"],
                                                       "approved": run.vars.get("approval")})


def registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    reg.register(WorkflowSpec("order", "prepare", {"prepare": _prepare, "nap": _nap, "approve": _approve,
                                                   "finish": _finish}))
    return reg


def _states(driver: Any, run_ids: list[str]) -> Any:
    """Drive ``run_ids`` through the three states, yielding each state's name in turn."""
    for rid in run_ids:
        driver.tick(rid)  # prepare, then the timer wait
    yield "waiting on its timer"
    time.sleep(TIMER_S + 0.05)
    for rid in run_ids:
        driver.tick(rid, reason="timer")
    yield "waiting on its event"
    for rid in run_ids:
        driver.accept_event(rid, f"approve:{rid}", {"ok": True, "by": "ops@example.com"})
        driver.tick(rid, reason="event")
    yield "finished"


def measure(url: str, runs: int) -> list[tuple[str, int, int, int]]:
    """Rows of (state, keys of one run, bytes of one run's keys, bytes per run of ``runs``)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    rows: dict[str, list[int]] = {}
    prefixes = [f"mem{uuid.uuid4().hex[:8]}:", f"mem{uuid.uuid4().hex[:8]}:"]
    try:
        one = build(Settings(store_url=url, key_prefix=prefixes[0], retention_s=0.0), registry(), NullDispatcher())
        rid = one.start_run("order", dispatch=False)
        for state in _states(one, [rid]):
            own = owned_keys(client, prefixes[0], rid)
            named = keys_naming(client, prefixes[0], rid)
            rows[state] = [len(own), memory_of(client, own), len(named)]
        many = build(Settings(store_url=url, key_prefix=prefixes[1], retention_s=0.0), registry(), NullDispatcher())
        _, empty = prefix_memory(client, prefixes[1])
        ids = [many.start_run("order", dispatch=False) for _ in range(runs)]
        for state in _states(many, ids):
            _, total = prefix_memory(client, prefixes[1])
            rows[state].append((total - empty) // runs)
    finally:
        for p in prefixes:
            delete_prefix(redis.Redis.from_url(url), p)
    return [(state, n_own, own_bytes, per_run) for state, (n_own, own_bytes, _, per_run) in rows.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    print(f"| state | keys it owns | MEMORY USAGE of its keys | per run, {args.runs} runs, with index entries |")
    print("|---|---|---|---|")
    for state, n_own, own_bytes, per_run in measure(args.url, args.runs):
        print(f"| {state} | {n_own} | {own_bytes} B | {per_run} B |")


if __name__ == "__main__":
    main()
