"""Pause, resume and cancel a run without ever rolling back a tick's commit.

AbstractRuntime's own ``pause_run``/``resume_run``/``cancel_run`` load the run,
change it and save it, with no lease and no version check: a tick that commits
between that load and that save is overwritten (its applied event is gone, the
node after it has already run). Here the same methods run against a view of the
store that makes the save conditional:

* on the Redis store, a compare-and-set on the record's version: a conflict
  loads again and applies the action to the new state. A tick in flight is not
  waited for: its next save finds the control fields changed and is refused
  (``RunControlledError``), so the control action stands;
* on the other stores, under the run's lease, taken with a wait
  (``control_timeout_s``); the in-memory store of the embedded mode is
  in-process and is used as the seed uses it.

After the change, the run gets a tick: a resumed run takes what waited for it
(events, its child's result, a due timer), a cancelled one wakes its parent.
Calling the Runtime's methods directly still has the race; use these.

``retry`` puts a FAILED run back to RUNNING at the node that failed (AbstractRuntime
leaves ``current_node`` there), with its failure row cleared, through the same
conditional save. A child is retried only while its parent still waits on it, checked
under the parent's lease, so the parent's tick cannot take the failure in between.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from abstractruntime import InMemoryRunStore, Runtime, RunState, RunStatus

from .context import Fence, TickContext, entered, outside
from .errors import RetryRefusedError, RunBusyError, UnknownRunError, VersionConflictError
from .inbox import Inbox
from .lease import Leases, wait_for_lease
from .marks import Marks
from .runstate import CANCEL_CHILDREN, child_of
from .stores.redis import RedisRunStore

log = logging.getLogger(__name__)

#: Compare-and-set attempts before giving up (each conflict is a tick's commit in between).
CAS_ATTEMPTS = 50

Action = Callable[[Runtime], RunState]
#: (run id, reason, message id or None): send the run a tick.
Send = Callable[[str, str, Optional[str]], None]


class _View:
    """The run store as a control action sees it: the save of ``run_id`` is conditional
    on the version its load saw (``cas``), and carries ``stamp`` into the run's control vars."""

    def __init__(self, store: Any, run_id: str, cas: bool, stamp: Optional[dict[str, Any]]) -> None:
        self._store, self._run_id, self._cas, self._stamp = store, run_id, cas, stamp
        self._version: Optional[int] = None
        #: The action saved the run (it changed something).
        self.saved = False

    def load(self, run_id: str) -> Optional[RunState]:
        if self._cas and run_id == self._run_id:
            run, self._version = self._store.load_with_version(run_id)
            return run
        return self._store.load(run_id)

    def save(self, run: RunState) -> Any:
        if run.run_id != self._run_id:
            return self._store.save(run)
        if self._stamp and isinstance(run.vars, dict):
            runtime_ns = run.vars.setdefault("_runtime", {})
            runtime_ns.setdefault("control", {}).update(self._stamp)
        out = self._store.save(run, expected_version=self._version or 0) if self._cas else self._store.save(run)
        self.saved = True
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Control:
    """Pause, resume, cancel (with or without children), safely; see the module docstring."""

    def __init__(self, runtime: Runtime, leases: Leases, inbox: Inbox, send: Send, timeout_s: float,
                 marks: Optional[Marks] = None) -> None:
        self.runtime = runtime
        self.store: Any = runtime.run_store
        self.leases = leases
        self.inbox = inbox
        self.send = send
        self.timeout_s = timeout_s
        #: The failure notes (attempts, backoff) a retry starts over; None: nothing to clear.
        self.marks = marks

    def pause(self, run_id: str, reason: Optional[str] = None) -> RunState:
        """Pause a run (a RUNNING one waits on a synthetic pause wait); events sent to it
        from now on are refused, events accepted before wait in its inbox.

        Raises:
            UnknownRunError: no such run.
            RunBusyError: a tick held the run's lease for ``control_timeout_s`` (non-Redis stores).
        """
        return self._apply(run_id, lambda rt: rt.pause_run(run_id, reason=reason))[0]

    def resume(self, run_id: str) -> RunState:
        """Resume a paused run, and tick it: it takes what waited for it meanwhile.

        Raises:
            UnknownRunError, RunBusyError: as ``pause``.
        """
        state, changed = self._apply(run_id, lambda rt: rt.resume_run(run_id))
        if changed:
            self.send(run_id, "resumed", None)
        return state

    def cancel(self, run_id: str, reason: Optional[str] = None, *, children: bool = False) -> RunState:
        """Cancel a run (``children``: and, from now on, every child it has or spawns),
        and tick it, so its parent learns and its children are cancelled.

        Raises:
            UnknownRunError, RunBusyError: as ``pause``.
        """
        stamp = {CANCEL_CHILDREN: True} if children else None
        state, changed = self._apply(run_id, lambda rt: rt.cancel_run(run_id, reason=reason), stamp)
        if changed:  # (a run that had already ended gets no tick: nothing happened to tell)
            self.send(run_id, "cancelled", None)
        return state

    def retry(self, run_id: str) -> RunState:
        """Put a FAILED run back to RUNNING at the node that failed, with a new attempt
        count, and tick it. A child is retried only while its parent still waits on it
        (checked under the parent's lease): once the parent has taken the failure, the
        child's new result would reach nobody.

        Raises:
            UnknownRunError: no such run.
            RetryRefusedError: the run is not FAILED, or its parent has already taken its
                failure (ended, or waits on something else now). Nothing changed.
            RunBusyError: a tick held the parent's (or, non-Redis stores, the run's) lease
                for ``control_timeout_s``.
        """
        with outside():
            run = self.store.load(run_id)
            if run is None:
                raise UnknownRunError(run_id)
            _require_failed(run)
            parent_id = str(run.parent_run_id or "")
            if not parent_id:
                return self._retry(run_id)
            lease = wait_for_lease(self.leases, parent_id, self.timeout_s)
            if lease is None:
                raise RunBusyError(parent_id, self.timeout_s)
            ctx = TickContext(parent_id, fences={parent_id: lease.fence}, clears_notes=False)
            try:
                parent = self.store.load(parent_id)
                if parent is not None and child_of(parent) != run_id:
                    raise RetryRefusedError(run_id, f"its parent '{parent_id}' has already taken its failure "
                                                    f"(parent status={parent.status.value})")
                return self._retry(run_id)
            finally:
                if self.leases.release(lease, ctx):  # a tick of the parent came while we held it
                    self.send(parent_id, "asked", ctx.next_id)

    def _retry(self, run_id: str) -> RunState:
        """The conditional change itself, then the run's tick. Raises as ``retry``."""

        def action(rt: Runtime) -> RunState:
            run = rt.run_store.load(run_id)
            if run is None:
                raise UnknownRunError(run_id)
            _require_failed(run)  # (again: a conflict reloads it)
            if self.marks is not None:  # a FAILED run gets no tick that would count one meanwhile
                self.marks.moved(run_id)
            runtime_ns = run.vars.setdefault("_runtime", {}) if isinstance(run.vars, dict) else {}
            retried = runtime_ns.get("retried") if isinstance(runtime_ns.get("retried"), dict) else {}
            runtime_ns["retried"] = {"count": int(retried.get("count") or 0) + 1, "last_error": run.error,
                                     "node": run.current_node}
            run.status, run.error, run.waiting, run.output = RunStatus.RUNNING, None, None, None
            run.updated_at = datetime.now(timezone.utc).isoformat()
            rt.run_store.save(run)
            return run

        state, changed = self._apply(run_id, action)
        if changed:
            self.send(run_id, "retried", None)
        return state

    def cancel_tree(self, run_id: str, reason: Optional[str] = None) -> list[RunState]:
        """Cancel a run and every active descendant; returns those cancelled now.

        Raises:
            UnknownRunError: ``run_id`` names no run.
            RunBusyError: as ``pause``.
        """
        # The tree as it is before the cancel too: the cancel's own tick may cascade through it
        # (a fast worker) before we list each run's children, and those were cancelled by us.
        cancelled: list[RunState] = []
        todo, seen = [run_id, *self._active_descendants(run_id)], set()
        while todo:
            current = todo.pop(0)
            if current in seen:
                continue
            seen.add(current)
            try:
                state = self.cancel(current, reason, children=True)
            except UnknownRunError:
                if current == run_id:
                    raise
                continue
            if state.status == RunStatus.CANCELLED:  # (as the seed: already cancelled ones too)
                cancelled.append(state)
            todo.extend(self._active_children(current))  # and any spawned since
        return cancelled

    def _active_children(self, run_id: str) -> list[str]:
        return [c.run_id for c in self.store.list_children(parent_run_id=run_id)
                if c.status in (RunStatus.RUNNING, RunStatus.WAITING)]

    def _active_descendants(self, run_id: str) -> list[str]:
        """Every active run below ``run_id``, also below children that have ended."""
        found: list[str] = []
        todo, seen = [run_id], {run_id}
        while todo:
            for child in self.store.list_children(parent_run_id=todo.pop(0)):
                if child.run_id in seen:
                    continue
                seen.add(child.run_id)
                todo.append(child.run_id)
                if child.status in (RunStatus.RUNNING, RunStatus.WAITING):
                    found.append(child.run_id)
        return found

    # --- how the change is made ---------------------------------------------------------

    def _apply(self, run_id: str, action: Action,
               stamp: Optional[dict[str, Any]] = None) -> tuple[RunState, bool]:
        """Run ``action``; returns the run after it and whether it saved (changed) the run."""
        with outside():  # a control call made from a node is not part of that node's tick
            try:
                if isinstance(self.store, RedisRunStore):
                    return self._compare_and_set(run_id, action, stamp)
                if isinstance(getattr(self.store, "inner", None), InMemoryRunStore):
                    return self._run(action, _View(self.store, run_id, False, stamp))
                return self._leased(run_id, action, stamp)
            except KeyError as exc:  # the Runtime's get_state: no such run
                raise UnknownRunError(run_id) from exc

    def _run(self, action: Action, view: _View) -> tuple[RunState, bool]:
        return action(self._runtime_on(view)), view.saved

    def _compare_and_set(self, run_id: str, action: Action,
                         stamp: Optional[dict[str, Any]]) -> tuple[RunState, bool]:
        for _ in range(CAS_ATTEMPTS):
            try:
                return self._run(action, _View(self.store, run_id, True, stamp))
            except VersionConflictError:
                continue  # a tick committed in between: apply the action to its state
        raise RunBusyError(run_id, 0.0)

    def _leased(self, run_id: str, action: Action, stamp: Optional[dict[str, Any]]) -> tuple[RunState, bool]:
        lease = wait_for_lease(self.leases, run_id, self.timeout_s)
        if lease is None:
            raise RunBusyError(run_id, self.timeout_s)
        ctx = TickContext(run_id, fences={run_id: lease.fence}, clears_notes=False)
        try:
            with entered(ctx):
                self._settle_marks(run_id, lease.fence)
                return self._run(action, _View(self.store, run_id, False, stamp))
        finally:
            if self.leases.release(lease, ctx):  # a tick came while we held the lease
                self.send(run_id, "asked", ctx.next_id)

    def _settle_marks(self, run_id: str, fence: Optional[Fence]) -> None:
        """An event a crashed tick committed but did not drop is dropped before our save
        changes the run's ``updated_at`` (after which its mark could not tell); the mark of
        one it had not committed (it crashed or lost its lease first) is cleared, or our
        save would make it read as committed."""
        run = self.store.load(run_id)
        if run is None:
            return
        for event in self.inbox.pending(run_id).events:
            if event.applying_since is not None and event.applying_since != (run.updated_at or ""):
                self.inbox.done(run_id, [event.event_id])
            elif event.applying_since is not None:
                self.inbox.mark_applying(event, None, fence)

    def _runtime_on(self, view: _View) -> Runtime:
        """The Runtime with its run store seen through ``view`` (a shallow copy: same handlers)."""
        runtime = copy.copy(self.runtime)
        runtime._run_store = view  # the one attribute its control methods read the store through
        return runtime


def _require_failed(run: RunState) -> None:
    """Raises RetryRefusedError unless ``run`` is FAILED."""
    if run.status != RunStatus.FAILED:
        raise RetryRefusedError(run.run_id, f"it is not FAILED (status={run.status.value})")
