"""The chaos soak: many runs of every kind through three real ``celery worker``
processes (prefork) and one ``celery beat``, on a private redis-server (AOF,
fsync always) that is both broker and store, while workers are SIGKILLed and
restarted every few seconds, the broker's queue is flushed once and Redis itself
is crashed and restarted once. At the end every run must have ended as its
workflow intends, no step may be completed twice in any ledger, and every extra
execution of a node after a wait must be explained by a killed process or the
Redis outage (see ``verify``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis
from abstractruntime import RunStatus, WaitReason

from abstractruntime_celery import Settings, create_scheduled_runtime
from abstractruntime_celery.errors import AbstractRuntimeCeleryError, RunNotWaitingError, StoreUnavailableError
from devkit.redisproc import PrivateRedis
from soak.workflows import AFTER_WAIT, registry
from devkit.cleanup import flush_broker
from devkit.procs import Cluster, Proc

BROKER_DB, STORE_DB, FX_DB = 0, 1, 2
PREFIX = "soak:"
FX = f"{PREFIX}fx:"  # side-effect keys (in FX_DB)
TERMINAL = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass
class Profile:
    runs: int
    submit_s: float        # runs are created over this window, chaos runs over it too
    kill_every_s: float
    drain_timeout_s: float
    workers: int = 3
    concurrency: int = 2
    #: Runs the sweep cannot move, planted at the start in each of the timer, parent and event
    #: passes: more than ``sweep_batch``, so a pass that read only the front would starve.
    stuck: int = 15
    sweep_batch: int = 10


SHORT = Profile(runs=200, submit_s=30.0, kill_every_s=3.5, drain_timeout_s=60.0, stuck=15, sweep_batch=10)
LONG = Profile(runs=2000, submit_s=360.0, kill_every_s=4.0, drain_timeout_s=180.0, stuck=30, sweep_batch=20)
#: The soak's workers take messages a killed worker held back after this many seconds
#: (Redis's own default, an hour, would outlast the soak).
VISIBILITY_TIMEOUT_S = 10


@dataclass
class Planned:
    """One run the harness created and what it expects of it."""

    run_id: str
    kind: str
    workflow: str
    expect: str = "completed"
    event: dict[str, Any] | None = None   # payload the run must end with
    sends: int = 0                          # how many times the event is sent
    send_early: bool = False                # sent before the run reaches the wait
    sent: int = 0
    refused: int = 0
    partner: str | None = None              # emitter of a listener
    key: str = ""
    child: str | None = None
    child_expect: str | None = None
    pause_for_s: float = 0.0                # pause the run this long once it waits (0: never)
    paused_at: float = 0.0                  # (monotonic) when the harness paused it
    resumed_at: float = 0.0                 # (wall clock) when the harness resumed it
    refused_paused: int = 0                 # events refused because the run was paused


@dataclass
class Chaos:
    kills: int = 0
    child_kills: int = 0
    killed_pids: set[int] = field(default_factory=set)
    worker_restarts: int = 0
    unexpected_exits: int = 0
    flushes: int = 0
    flushed_messages: int = 0
    redis_restarts: int = 0
    outages: list[tuple[float, float]] = field(default_factory=list)  # wall-clock (down, up)


def retrying(fn: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Call ``fn`` until it stops failing for want of Redis (the restart window)."""
    from kombu.exceptions import OperationalError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (StoreUnavailableError, redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                OperationalError, ConnectionError, OSError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: Redis still unavailable after {timeout:.0f}s") from exc
            time.sleep(0.2)


def pool_children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out.extend(int(c) for c in (task / "children").read_text().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


class Soak:
    def __init__(self, profile: Profile, *, seed: int = 1, workdir: Path | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.p = profile
        self.rng = random.Random(seed)
        self.seed = seed
        self.log = log
        self.tmp = Path(workdir or tempfile.mkdtemp(prefix="arc-soak-"))
        self.redis = PrivateRedis(self.tmp / "redis", aof=True)
        self.chaos = Chaos()
        self.planned: dict[str, Planned] = {}
        self.waiting_for: list[Planned] = []   # follow-ups: send the event / start the emitter
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.t0 = 0.0

    # --- setup -----------------------------------------------------------------------------

    def setup(self) -> None:
        self.redis.start()
        r = self.redis
        self.settings = Settings(store_url=r.db_url(STORE_DB), key_prefix=PREFIX, queue="soak",
                                 registry="soak.workflows:registry", timer_horizon_s=3.0, sweep_interval_s=1.0,
                                 lease_ttl_s=3.0, orphan_grace_s=2.0, event_redeliver_s=2.0,
                                 tick_max_attempts=8, sweep_batch=self.p.sweep_batch,
                                 lost_tick_after_s=10.0)  # (the flush loses queued ticks: re-sent after this)
        # The workers' celeryconfig (they run in this directory): JSON only, late acks, and a
        # short visibility timeout, so a message a killed worker held comes back in seconds.
        (self.tmp / "celeryconfig.py").write_text(
            'accept_content = ["json"]\ntask_serializer = "json"\ntask_acks_late = True\n'
            "task_reject_on_worker_lost = True\nworker_prefetch_multiplier = 1\n"
            f'broker_transport_options = {{"visibility_timeout": {VISIBILITY_TIMEOUT_S}}}\n')
        self.broker_url = r.db_url(BROKER_DB)
        self.fx = redis.Redis.from_url(r.db_url(FX_DB), decode_responses=True)
        self.cluster = Cluster(self.settings, self.broker_url, r.db_url(FX_DB), self.tmp)
        from abstractruntime_celery.app import make_app
        from abstractruntime_celery.tasks import install

        app = make_app(self.broker_url, name="soak-client", config_module=None)
        install(app, registry=registry, settings=self.settings)
        self.app = app
        self.sr = create_scheduled_runtime(app=app, settings=self.settings, registry=registry, auto_start=False)
        self.driver = self.sr.driver
        self.workers: list[Proc] = []
        for i in range(self.p.workers):
            self.workers.append(self.cluster.worker(f"w{i}", concurrency=self.p.concurrency))
        self.beat = self.cluster.beat()
        self.plant_stuck()

    def plant_stuck(self) -> None:
        """Runs the sweep cannot move for most of the soak, ``stuck`` of each kind: timers
        paused while due (timer pass), parents of children that nap through the soak
        (parent pass), and runs holding an early event for a wait they reach only at the
        end (event pass). Runs behind them must still be reached."""
        long = round(self.p.submit_s * 0.8, 1)
        for i in range(self.p.stuck):
            rid = self._start("soak-nap", {"delay": 4.0})
            self.planned[rid] = Planned(rid, "stuck-paused-timer", "soak-nap", pause_for_s=1e9)
            self.waiting_for.append(self.planned[rid])
            rid = self._start("soak-parent", {"child": "soak-nap", "child_delay": long})
            self.planned[rid] = Planned(rid, "stuck-parent", "soak-parent", child_expect="completed")
            plan = Planned(rid := self._start("soak-evt", {"key": f"stuck{i}", "pre": long}), "stuck-early-event",
                           "soak-evt", event={"stuck": i}, sends=1, send_early=True, key=f"stuck{i}")
            self.planned[rid] = plan
            self._send(plan)

    def release_stuck(self) -> None:
        """Resume the paused timers planted at the start (their deadline passed long ago)."""
        for plan in self.planned.values():
            if plan.kind == "stuck-paused-timer" and plan.paused_at and not plan.resumed_at:
                self._resume(plan)

    def teardown(self) -> None:
        try:
            self.cluster.stop_all()
        finally:
            self.redis.stop()

    # --- the mix ---------------------------------------------------------------------------

    def _start(self, workflow: str, vars: dict[str, Any]) -> str:
        run_id = uuid.uuid4().hex
        vars = {"fx": FX, **vars}

        def go() -> str:
            if self.driver.run_store.load(run_id) is not None:
                return run_id  # created before a failed dispatch: the sweep ticks it
            return self.driver.start_run(workflow, vars=vars, run_id=run_id)
        return retrying(go, f"start {workflow}")

    def _fail_vars(self, node: str) -> dict[str, Any]:
        if self.rng.random() < 0.15:
            return {"fail_node": node, "fail": self.rng.choice([1, 2])}
        return {}

    def submit_one(self, i: int) -> int:
        """Create the i-th planned item; returns how many runs the harness created for it."""
        x = self.rng.random()
        if x < 0.18:      # timer within the horizon
            rid = self._start("soak-nap", {"delay": round(self.rng.uniform(0.3, 2.0), 2), **self._fail_vars("woke")})
            self.planned[rid] = Planned(rid, "timer", "soak-nap")
        elif x < 0.26:    # timer beyond the horizon (3 s): armed by the sweep
            rid = self._start("soak-nap", {"delay": round(self.rng.uniform(3.5, 6.0), 2), **self._fail_vars("woke")})
            self.planned[rid] = Planned(rid, "timer-far", "soak-nap")
        elif x < 0.48:    # event wait: sent before or after the wait, once or twice
            early = self.rng.random() < 0.5
            payload = {"token": uuid.uuid4().hex[:12]}
            pre = round(self.rng.uniform(0.5, 1.5), 2) if early else 0
            rid = self._start("soak-evt", {"key": f"k{i}", "pre": pre, **self._fail_vars("got")})
            plan = Planned(rid, "event-early" if early else "event-late", "soak-evt", event=payload,
                           sends=2 if self.rng.random() < 0.5 else 1, send_early=early, key=f"k{i}")
            self.planned[rid] = plan
            if early:
                self._send(plan)
            else:
                self.waiting_for.append(plan)
        elif x < 0.56:    # event wait that times out on its deadline
            deadline = round(self.rng.choice([self.rng.uniform(0.5, 2.5), self.rng.uniform(3.5, 5.0)]), 2)
            rid = self._start("soak-evt", {"key": f"never{i}", "deadline": deadline, **self._fail_vars("got")})
            self.planned[rid] = Planned(rid, "deadline", "soak-evt", event={"timed_out": True})
        elif x < 0.61:    # an event wait paused while it waits: events sent meanwhile are refused
            payload = {"token": uuid.uuid4().hex[:12]}
            rid = self._start("soak-evt", {"key": f"p{i}", **self._fail_vars("got")})
            plan = Planned(rid, "paused-event", "soak-evt", event=payload, sends=1, key=f"p{i}",
                           pause_for_s=round(self.rng.uniform(0.5, 2.0), 2))
            self.planned[rid] = plan
            self.waiting_for.append(plan)
        elif x < 0.65:    # a parent paused while it waits on its child; the child ends meanwhile
            rid = self._start("soak-parent", {"child": "soak-nap", "child_delay": round(self.rng.uniform(0.3, 1.0), 2)})
            plan = Planned(rid, "paused-parent", "soak-parent", child_expect="completed",
                           pause_for_s=round(self.rng.uniform(1.5, 3.0), 2))
            self.planned[rid] = plan
            self.waiting_for.append(plan)
        elif x < 0.73:    # a start message with no run id (the web-process way): one run, whatever happens
            rid = self._send_start("soak-nap", {"delay": round(self.rng.uniform(0.3, 2.0), 2)})
            self.planned[rid] = Planned(rid, "start-message", "soak-nap")
        elif x < 0.86:    # parent with an async child, a fifth of them failing
            doomed = self.rng.random() < 0.3
            rid = self._start("soak-parent", {"child": "soak-doomed" if doomed else "soak-nap",
                                              "child_delay": round(self.rng.uniform(0.3, 2.0), 2),
                                              **self._fail_vars("joined")})
            self.planned[rid] = Planned(rid, "parent-failing-child" if doomed else "parent", "soak-parent",
                                        child_expect="failed" if doomed else "completed")
        else:             # EMIT_EVENT: a listener, then (once it waits) an emitter
            name = f"sig{i}-{uuid.uuid4().hex[:6]}"
            rid = self._start("soak-listener", {"name": name})
            plan = Planned(rid, "listener", "soak-listener")
            self.planned[rid] = plan
            self.waiting_for.append(plan)
            return 2
        return 1

    def _send_start(self, workflow: str, vars: dict[str, Any]) -> str:
        """Send the start task with no run id; the run's id is the message's task id."""
        from abstractruntime_celery.dispatch import START_TASK

        task_id = uuid.uuid4().hex
        retrying(lambda: self.app.send_task(START_TASK, args=[workflow, {"fx": FX, **vars}], task_id=task_id,
                                            queue=self.settings.queue), f"start message {workflow}")
        return task_id

    def _pause(self, plan: Planned) -> None:
        retrying(lambda: self.sr.pause_run(plan.run_id), f"pause {plan.run_id}")
        plan.paused_at = time.monotonic()
        if plan.kind == "paused-event":  # refused while paused, and nothing is stored
            from abstractruntime_celery.errors import RunPausedError

            try:
                retrying(lambda: self.sr.scheduler.resume_event(run_id=plan.run_id, wait_key=plan.key,
                                                                payload={"while": "paused"}, wait=False),
                         f"event to paused {plan.run_id}")
            except RunPausedError:
                plan.refused_paused += 1

    def _resume(self, plan: Planned) -> None:
        retrying(lambda: self.sr.resume_run(plan.run_id), f"resume {plan.run_id}")
        plan.resumed_at = time.time()
        if plan.kind == "paused-event":
            self._send(plan)

    def _send(self, plan: Planned) -> None:
        for _ in range(plan.sends):
            def go() -> None:
                self.sr.scheduler.resume_event(run_id=plan.run_id, wait_key=plan.key, payload=plan.event,
                                               wait=False)
            try:
                retrying(go, f"event for {plan.run_id}")
                plan.sent += 1
            except RunNotWaitingError:
                plan.refused += 1  # the first send was applied and the run ended: a correct refusal

    def follow_up(self) -> None:
        """Send events to runs that now wait; start emitters for listeners that now wait."""
        still: list[Planned] = []
        for plan in self.waiting_for:
            if plan.paused_at:
                if plan.resumed_at:
                    continue  # resumed (release_stuck): nothing more to do for it
                if time.monotonic() - plan.paused_at >= plan.pause_for_s:
                    self._resume(plan)
                else:
                    still.append(plan)
                continue
            run = retrying(lambda: self.driver.load(plan.run_id), "load")
            if plan.pause_for_s and run.status in TERMINAL:
                continue  # it ended before the harness could pause it (verify says so)
            if run.status != RunStatus.WAITING or run.waiting is None:
                still.append(plan)
                continue
            if plan.pause_for_s and run.status == RunStatus.WAITING:
                self._pause(plan)
                still.append(plan)
                continue
            if plan.workflow == "soak-evt" and run.waiting.reason == WaitReason.EVENT:
                self._send(plan)
            elif plan.workflow == "soak-listener":
                em = self._start("soak-emitter", {"name": run.vars["name"]})
                self.planned[em] = Planned(em, "emitter", "soak-emitter")
                plan.partner = em
            else:
                still.append(plan)
        self.waiting_for = still

    # --- chaos -----------------------------------------------------------------------------

    def _kill_child(self) -> None:
        """SIGKILL one prefork pool child (not its worker): its message comes back at once
        (``task_reject_on_worker_lost``) and runs again, with the same task id."""
        live = [w for w in self.workers if w.alive()]
        children = [c for w in live for c in pool_children(w.pid)]
        if not children:
            return
        victim = self.rng.choice(children)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return
        with self._lock:
            self.chaos.killed_pids.add(victim)
            self.chaos.child_kills += 1

    def _kill_one(self) -> None:
        live = [w for w in self.workers if w.alive()]
        if not live:
            return
        victim = self.rng.choice(live)
        pids = [victim.pid, *pool_children(victim.pid)]
        victim.kill(signal.SIGKILL)
        victim.popen.wait(10)
        with self._lock:
            self.chaos.killed_pids.update(pids)
            self.chaos.kills += 1
        self.workers.remove(victim)
        self.workers.append(self.cluster.worker(f"w{self.chaos.kills}x", concurrency=self.p.concurrency))
        self.chaos.worker_restarts += 1

    def _revive(self) -> None:
        """A process that died by itself (not by us) is restarted and counted."""
        for w in list(self.workers):
            if not w.alive():
                self.chaos.unexpected_exits += 1
                self.chaos.killed_pids.update([w.pid])
                self.workers.remove(w)
                self.workers.append(self.cluster.worker(f"r{self.chaos.unexpected_exits}", concurrency=self.p.concurrency))
        if not self.beat.alive():
            self.chaos.unexpected_exits += 1
            self.beat = self.cluster.beat()

    def chaos_loop(self) -> None:
        flush_at = self.t0 + self.p.submit_s * 0.35
        restart_at = self.t0 + self.p.submit_s * 0.6
        next_kill = self.t0 + self.p.kill_every_s
        end = self.t0 + self.p.submit_s + 5
        while not self._stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            if flush_at and now >= flush_at:
                n = flush_broker(self.broker_url, self.settings.queue)
                self.chaos.flushes += 1
                self.chaos.flushed_messages += n
                self.log(f"[{now - self.t0:5.1f}s] flushed the broker queue: {n} messages dropped")
                flush_at = 0.0
            if restart_at and now >= restart_at:
                down = time.time()
                secs = self.redis.restart(down_s=1.0)
                self.chaos.outages.append((down, time.time()))
                self.chaos.redis_restarts += 1
                self.log(f"[{now - self.t0:5.1f}s] Redis crashed (SIGKILL) and restarted: down {secs:.1f}s")
                restart_at = 0.0
            if now >= next_kill and self.rng.random() < 0.4:
                self._kill_child()
                self.log(f"[{time.monotonic() - self.t0:5.1f}s] SIGKILLed a pool child "
                         f"(child kill {self.chaos.child_kills})")
                next_kill = time.monotonic() + self.p.kill_every_s * self.rng.uniform(0.6, 1.4)
            elif now >= next_kill:
                self._kill_one()
                self.log(f"[{time.monotonic() - self.t0:5.1f}s] SIGKILLed a worker, restarted it "
                         f"(kill {self.chaos.kills})")
                next_kill = time.monotonic() + self.p.kill_every_s * self.rng.uniform(0.6, 1.4)
            self._revive()
            time.sleep(0.1)

    # --- the run ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.setup()
        try:
            self.t0 = time.monotonic()
            setup_s = self.t0 - started
            chaos = threading.Thread(target=self.chaos_loop, name="chaos", daemon=True)
            chaos.start()
            created, i = 0, 0
            while created < self.p.runs:
                due = self.p.runs * min(1.0, (time.monotonic() - self.t0) / self.p.submit_s)
                while created < min(due, self.p.runs):
                    created += self.submit_one(i)
                    i += 1
                self.follow_up()
                time.sleep(0.05)
            self.log(f"[{time.monotonic() - self.t0:5.1f}s] {created} runs created; waiting for the end of chaos")
            while chaos.is_alive():
                self.follow_up()
                chaos.join(0.2)
            self.release_stuck()
            drained = self.drain()
            result = self.verify()
            result["timing"] = {"setup_s": round(setup_s, 1), "submit_s": self.p.submit_s,
                                "drain_s": round(drained, 1), "total_s": round(time.monotonic() - started, 1)}
            return result
        finally:
            self._stop.set()
            self.teardown()

    def drain(self) -> float:
        t = time.monotonic()
        deadline = t + self.p.drain_timeout_s
        while True:
            self.follow_up()
            open_ = [rid for rid in self._all_run_ids() if self._status(rid) not in TERMINAL]
            if not open_ and not self.waiting_for:
                return time.monotonic() - t
            if time.monotonic() > deadline:
                self.log(f"{len(open_)} runs still open after {self.p.drain_timeout_s:.0f}s: {open_[:10]}")
                return time.monotonic() - t
            time.sleep(0.5)

    def _all_run_ids(self) -> list[str]:
        runs = retrying(lambda: self.driver.run_store.list_runs(limit=1_000_000), "list runs")
        return [r.run_id for r in runs]

    def _status(self, run_id: str) -> RunStatus:
        return retrying(lambda: self.driver.load(run_id), "load").status

    # --- the verdict -----------------------------------------------------------------------

    def verify(self) -> dict[str, Any]:
        problems: list[str] = []
        runs = {r.run_id: r for r in self.driver.run_store.list_runs(limit=1_000_000)}
        by_kind: dict[str, dict[str, int]] = {}

        def tally(kind: str, ok: bool) -> None:
            row = by_kind.setdefault(kind, {"runs": 0, "as_intended": 0})
            row["runs"] += 1
            row["as_intended"] += int(ok)

        children: dict[str, str] = {}
        for rid, plan in self.planned.items():
            run = runs.get(rid)
            if run is None:
                problems.append(f"{plan.kind} run {rid} is missing from the store")
                tally(plan.kind, False)
                continue
            ok = run.status.value == plan.expect
            if ok and plan.kind.startswith("timer"):
                ok = run.output["woke_at"] >= _ts(run.vars["until"])
                if not ok:
                    problems.append(f"timer run {rid} woke before its deadline")
            if ok and plan.event is not None:
                got = (run.output or {}).get("event")
                ok = got == plan.event if "timed_out" not in plan.event else bool(got and got.get("timed_out"))
            if ok and plan.child_expect is not None:
                child_id = (run.output or {}).get("sub_run_id")
                child = runs.get(child_id or "")
                ok = child is not None and child.status.value == plan.child_expect \
                    and run.output["child_ok"] == (plan.child_expect == "completed")
                if child_id:
                    children[child_id] = plan.child_expect
            if ok and plan.kind == "listener":
                ok = bool((run.output or {}).get("heard"))
            if ok and plan.pause_for_s and plan.paused_at and plan.kind in ("stuck-paused-timer", "paused-parent"):
                node = AFTER_WAIT[plan.workflow]
                ran = [float(line.split("|")[1]) for line in self.fx.lrange(f"{FX}fxlog:{rid}:{node}", 0, -1)]
                ok = bool(ran) and min(ran) >= plan.resumed_at - 0.05
                if not ok:
                    problems.append(f"{plan.kind} run {rid}: node {node} ran at {ran} while paused "
                                    f"(resumed at {plan.resumed_at:.3f})")
            if ok and plan.kind == "paused-event" and plan.paused_at:
                ok = plan.refused_paused == 1
                if not ok:
                    problems.append(f"paused-event run {rid}: the event sent while paused was not refused")
            if not ok:
                problems.append(f"{plan.kind} run {rid}: {run.status.value} output={run.output} "
                                f"error={run.error} (expected {plan.expect}, event {plan.event})")
            tally(plan.kind, ok)
        for cid, expect in children.items():
            tally(f"child ({expect})", runs[cid].status.value == expect)
        # A run nobody planned can only be a child from a spawn node that ran twice: its first
        # execution created the child, then its worker died before the parent's wait was
        # committed (the node of a killed tick runs again: at least once). Count those apart;
        # anything else is a problem.
        stray = [rid for rid in runs if rid not in self.planned and rid not in children]
        spawned_twice: list[str] = []
        for rid in stray:
            parent_id = runs[rid].parent_run_id or ""
            starts = [r for r in self._ledger(parent_id) if r.get("node_id") == "spawn"
                      and str(r.get("status", "")).lower().endswith("started")]
            if parent_id in self.planned and len(starts) >= 2 and runs[rid].status in TERMINAL:
                spawned_twice.append(rid)
            else:
                problems.append(f"run {rid} nobody planned (parent {parent_id or None}, "
                                f"{runs[rid].status.value})")

        # Ledgers: a step (node, idempotency key) is completed at most once.
        ledger_records = completed_steps = dup_steps = 0
        for rid in runs:
            seen: dict[tuple[str, str], int] = {}
            for rec in self._ledger(rid):
                ledger_records += 1
                if str(rec.get("status", "")).lower().endswith("completed"):
                    step = (str(rec.get("node_id")), str(rec.get("idempotency_key") or rec.get("step_id")))
                    seen[step] = seen.get(step, 0) + 1
            completed_steps += len(seen)
            for step, n in seen.items():
                if n > 1:
                    dup_steps += 1
                    problems.append(f"run {rid}: step {step} completed {n} times in the ledger")

        # Side effects of the nodes after waits.
        executions = once = rerun_explained = rerun_unexplained = 0
        for rid, run in runs.items():
            node = AFTER_WAIT.get(run.workflow_id)
            log = [line.split("|") for line in self.fx.lrange(f"{FX}fxlog:{rid}:{node}", 0, -1)]
            entries = sorted((float(t), int(pid)) for pid, t in log)
            executions += len(entries)
            if run.status == RunStatus.COMPLETED or run.workflow_id == "soak-doomed":
                if not entries:
                    problems.append(f"run {rid}: node {node} never ran but the run ended {run.status.value}")
                    continue
            if len(entries) == 1:
                once += 1
            for (t_prev, pid_prev), _ in zip(entries, entries[1:]):
                if pid_prev in self.chaos.killed_pids or self._in_outage(t_prev):
                    rerun_explained += 1
                else:
                    rerun_unexplained += 1
                    problems.append(f"run {rid}: node {node} ran again after a committed-looking execution "
                                    f"by pid {pid_prev} at {t_prev:.3f} (not killed, no outage)")

        paused = [p for p in self.planned.values() if p.pause_for_s]
        stats = {k: int(v) for k, v in self.driver.coord.client.hgetall(f"{PREFIX}stats").items()
                 if k != "last_poll_at" and str(v).lstrip("-").isdigit()}
        return {
            "seed": self.seed,
            "runs": {"planned": len(self.planned), "children": len(children), "total": len(runs),
                     "by_kind": by_kind},
            "chaos": {"worker_kills": self.chaos.kills, "pool_child_kills": self.chaos.child_kills,
                      "worker_restarts": self.chaos.worker_restarts,
                      "unexpected_exits": self.chaos.unexpected_exits, "broker_flushes": self.chaos.flushes,
                      "flushed_messages": self.chaos.flushed_messages, "redis_restarts": self.chaos.redis_restarts},
            "checks": {"ledger_records": ledger_records, "completed_steps": completed_steps,
                       "steps_completed_twice": dup_steps, "after_wait_executions": executions,
                       "after_wait_once": once, "reruns_explained_by_kill_or_outage": rerun_explained,
                       "reruns_unexplained": rerun_unexplained,
                       "children_spawned_twice_after_kill": len(spawned_twice),
                       "events_sent": sum(p.sent for p in self.planned.values()),
                       "runs_paused_and_resumed": sum(1 for p in paused if p.paused_at and p.resumed_at),
                       "paused_before_they_ended_too_late": sum(1 for p in paused if not p.paused_at),
                       "events_refused_while_paused": sum(p.refused_paused for p in paused),
                       "start_messages": sum(1 for p in self.planned.values() if p.kind == "start-message"),
                       "stuck_runs_planted": 3 * self.p.stuck, "sweep_batch": self.p.sweep_batch,
                       "events_refused_run_ended": sum(p.refused for p in self.planned.values())},
            "cluster_stats": stats,
            "problems": problems,
            "ok": not problems,
        }

    def _ledger(self, run_id: str) -> list[dict[str, Any]]:
        if not run_id:
            return []
        return [r if isinstance(r, dict) else r.__dict__ for r in self.driver.runtime.ledger_store.list(run_id)]

    def _in_outage(self, t: float) -> bool:
        slack = self.settings.lease_ttl_s + 2
        return any(down - slack <= t <= up + slack for down, up in self.chaos.outages)


def _ts(iso: str) -> float:
    from abstractruntime_celery.timers import parse_until

    return parse_until(iso)


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


__all__ = ["Soak", "Profile", "SHORT", "LONG", "write_json", "AbstractRuntimeCeleryError"]
