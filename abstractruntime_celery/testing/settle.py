"""Settling: wait until no run has work left that is due now.

A test that fires a timer or delivers an event wants every tick that causes (the
next nodes, a child, the parent the child resumes) done before it asserts. With
an in-process worker the messages are out of sight, so "done" is read from the
store: no run is RUNNING (unless it is backing off until later), none is WAITING
on a deadline already past, and no parent waits on a child that has ended. In the
embedded mode the in-process queue must be empty too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

from abstractruntime import RunState, RunStatus, WaitReason

from ..dispatch import LocalDispatcher
from ..errors import AbstractRuntimeCeleryError
from ..isotime import from_epoch, to_epoch
from ..runstate import TERMINAL, child_of, paused

#: Most runs one look at the store reads per kind (a test's runs are far fewer).
SCAN_LIMIT = 10_000
#: Consecutive quiet looks before the runs count as settled (a tick hands work on to
#: the next one after its lease is released, so one quiet look could fall in between).
QUIET_LOOKS = 3
LOOK_EVERY_S = 0.01


class SettleTimeout(AbstractRuntimeCeleryError, TimeoutError):
    """Runs still had work due when the test kit stopped waiting for them."""


@dataclass(frozen=True)
class Busy:
    """A run with work due now, and why."""

    run_id: str
    workflow_id: str
    why: str

    def __str__(self) -> str:
        return f"{self.run_id} ({self.workflow_id}): {self.why}"


def busy_runs(driver: Any, now: Optional[float] = None) -> list[Busy]:
    """Runs whose work is due at ``now`` (epoch s; default: the clock's now).

    Raises:
        StoreUnavailableError: the store cannot be read.
    """
    now = time.time() if now is None else now
    store = driver.run_store
    out: list[Busy] = []
    for run in store.list_runs(status=RunStatus.RUNNING, limit=SCAN_LIMIT):
        backoff = driver.coord.marks.backoff_until(run.run_id)
        if paused(run) or (backoff is not None and backoff > now):
            continue  # a failing node's retry, due later: a deadline, not work due now
        out.append(Busy(run.run_id, run.workflow_id, "RUNNING"))
    for run in store.list_due_wait_until(now_iso=from_epoch(now), limit=SCAN_LIMIT):
        if _due(run, now):
            out.append(Busy(run.run_id, run.workflow_id, f"its wait until {run.waiting.until} is due"))
    parents = store.list_runs(status=RunStatus.WAITING, wait_reason=WaitReason.SUBWORKFLOW, limit=SCAN_LIMIT)
    for run in parents:
        child_id = child_of(run)
        child = store.load(child_id) if child_id and not paused(run) else None
        if child is not None and child.status in TERMINAL:
            out.append(Busy(run.run_id, run.workflow_id, f"its child {child_id} has ended"))
    return out


def _due(run: RunState, now: float) -> bool:
    waiting = run.waiting
    if run.status != RunStatus.WAITING or waiting is None or not waiting.until or paused(run):
        return False
    try:
        return to_epoch(waiting.until) <= now
    except ValueError:
        return False


def settle(driver: Any, timeout: float = 30.0) -> None:
    """Wait until no run has work due now (see the module docstring).

    Raises:
        SettleTimeout: runs still had work due after ``timeout`` seconds (real time);
            the message names each one and why.
        StoreUnavailableError: the store cannot be read.
    """
    deadline = time.monotonic() + timeout
    local = driver.dispatcher if isinstance(driver.dispatcher, LocalDispatcher) else None
    quiet = 0
    while True:
        if local is not None:
            local.wake()
        queued = local is not None and local.busy()
        found = [] if queued else busy_runs(driver)
        quiet = 0 if (queued or found) else quiet + 1
        if quiet >= QUIET_LOOKS:
            return
        if time.monotonic() >= deadline:
            lines = [str(b) for b in found[:20]] or ["ticks still queued in the embedded worker"]
            raise SettleTimeout(f"runs still had work due after {timeout:g} s (a node that never returns, "
                                f"a workflow the registry lacks, or no worker consuming the queue?):\n  "
                                + "\n  ".join(lines))
        time.sleep(LOOK_EVERY_S)
