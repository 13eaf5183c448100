"""Workflows of the soak. Workers load them with
``ABSTRACTRUNTIME_CELERY_REGISTRY=soak.workflows:registry``.

Every node that runs after a wait logs one line per execution to Redis
(``fxlog:<run>:<node>`` = ``<pid>|<time>``): the soak proves from these that a
node after a wait ran once, or, where it ran again, that the process of the
earlier execution was killed (or Redis was down) before it could commit.
Nodes may also fail on purpose (``vars.fail``: how many first tries raise), to
exercise the driver's retry.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

_clients: dict[tuple[str, int], redis.Redis] = {}


def _fx() -> redis.Redis:
    url = os.environ.get("ARC_SOAK_FX_URL") or os.environ.get("ARC_TEST_FX_URL", "redis://127.0.0.1:6379/14")
    key = (url, os.getpid())
    client = _clients.get(key)
    if client is None:
        # No socket timeout: a side effect sent while the network is cut waits for it to come
        # back (TCP retransmits) instead of failing, as the cut-off host test needs.
        client = _clients[key] = redis.Redis.from_url(url, socket_connect_timeout=2)
    return client


def effect(run: RunState, node: str) -> None:
    """The side effect whose executions the soak counts; raises on purpose for
    the first ``vars.fail`` tries of the run's first node after a wait."""
    prefix = run.vars.get("fx", "soak:")
    tries = int(_fx().hincrby(f"{prefix}tries", f"{run.run_id}:{node}", 1))
    if node == run.vars.get("fail_node") and tries <= int(run.vars.get("fail", 0)):
        raise RuntimeError(f"soak: planned failure {tries} of node {node}")
    _fx().rpush(f"{prefix}fxlog:{run.run_id}:{node}", f"{os.getpid()}|{time.time():.3f}")


def _iso_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


# nap: WAIT_UNTIL vars.delay seconds (some beyond the timer horizon), then "woke".
def nap_wait(run: RunState, ctx: Any) -> StepPlan:
    until = run.vars.get("until") or _iso_in(float(run.vars.get("delay", 1.0)))
    run.vars["until"] = until
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="woke")


def nap_woke(run: RunState, ctx: Any) -> StepPlan:
    effect(run, "woke")
    return StepPlan(node_id="woke", complete_output={"until": run.vars["until"], "woke_at": time.time()})


# evt: an optional short nap (events may arrive before the wait), WAIT_EVENT vars.key, "got".
def evt_pre(run: RunState, ctx: Any) -> StepPlan:
    delay = float(run.vars.get("pre", 0))
    if delay <= 0:
        return StepPlan(node_id="pre", next_node="wait")
    until = run.vars.get("pre_until") or _iso_in(delay)
    run.vars["pre_until"] = until
    return StepPlan(node_id="pre", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="wait")


def evt_wait(run: RunState, ctx: Any) -> StepPlan:
    payload: dict[str, Any] = {"wait_key": run.vars["key"]}
    if run.vars.get("deadline"):
        payload["until"] = run.vars.get("deadline_until") or _iso_in(float(run.vars["deadline"]))
        run.vars["deadline_until"] = payload["until"]
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, payload, result_key="event"),
                    next_node="got")


def evt_got(run: RunState, ctx: Any) -> StepPlan:
    effect(run, "got")
    return StepPlan(node_id="got", complete_output={"event": run.vars.get("event")})


# parent: an async child ("nap" or "doomed") it waits for, then "joined".
def parent_spawn(run: RunState, ctx: Any) -> StepPlan:
    child_vars = {"delay": run.vars.get("child_delay", 0.5), "fx": run.vars.get("fx")}
    payload = {"workflow_id": run.vars["child"], "vars": child_vars, "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def parent_joined(run: RunState, ctx: Any) -> StepPlan:
    effect(run, "joined")
    child = run.vars.get("child") or {}
    out = child.get("output") if isinstance(child, dict) else None
    ok = not (isinstance(out, dict) and out.get("success") is False)
    return StepPlan(node_id="joined", complete_output={"child_ok": ok, "sub_run_id": child.get("sub_run_id")})


# doomed: a child that naps, then fails (an effect no handler serves).
def doomed_boom(run: RunState, ctx: Any) -> StepPlan:
    effect(run, "boom")
    return StepPlan(node_id="boom", effect=Effect(EffectType.LLM_CALL, {"prompt": "x"}), next_node=None)


# listener / emitter: EMIT_EVENT resumes the listener, which the driver must tick.
def listen(run: RunState, ctx: Any) -> StepPlan:
    payload = {"name": run.vars["name"], "scope": "global"}
    return StepPlan(node_id="listen", effect=Effect(EffectType.WAIT_EVENT, payload, result_key="heard"),
                    next_node="heard")


def heard(run: RunState, ctx: Any) -> StepPlan:
    effect(run, "heard")
    return StepPlan(node_id="heard", complete_output={"heard": run.vars.get("heard")})


def emit(run: RunState, ctx: Any) -> StepPlan:
    payload = {"name": run.vars["name"], "scope": "global", "payload": {"from": run.run_id}}
    return StepPlan(node_id="emit", effect=Effect(EffectType.EMIT_EVENT, payload, result_key="emitted"),
                    next_node="emitted")


def emitted(run: RunState, ctx: Any) -> StepPlan:
    effect(run, "emitted")
    return StepPlan(node_id="emitted", complete_output={"emitted": run.vars.get("emitted")})


# slow: a node that takes vars.sleep seconds (the cut-off host test cuts the network meanwhile).
def slow_work(run: RunState, ctx: Any) -> StepPlan:
    effect(run, "work_started")
    time.sleep(float(run.vars.get("sleep", 1.0)))
    effect(run, "work_done")
    return StepPlan(node_id="work", next_node="finish")


def slow_finish(run: RunState, ctx: Any) -> StepPlan:
    effect(run, "finish")
    return StepPlan(node_id="finish", complete_output={"ok": True})


WORKFLOWS = [
    WorkflowSpec("soak-nap", "wait", {"wait": nap_wait, "woke": nap_woke}),
    WorkflowSpec("soak-evt", "pre", {"pre": evt_pre, "wait": evt_wait, "got": evt_got}),
    WorkflowSpec("soak-parent", "spawn", {"spawn": parent_spawn, "joined": parent_joined}),
    WorkflowSpec("soak-doomed", "wait", {"wait": nap_wait, "woke": doomed_boom}),
    WorkflowSpec("soak-listener", "listen", {"listen": listen, "heard": heard}),
    WorkflowSpec("soak-emitter", "emit", {"emit": emit, "emitted": emitted}),
    WorkflowSpec("soak-slow", "work", {"work": slow_work, "finish": slow_finish}),
]

#: The nodes that run after a wait, by workflow: the soak counts their executions.
AFTER_WAIT = {"soak-nap": "woke", "soak-evt": "got", "soak-parent": "joined", "soak-doomed": "boom",
              "soak-listener": "heard", "soak-emitter": "emitted"}


def build_registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    for spec in WORKFLOWS:
        reg.register(spec)
    return reg


registry = build_registry()
