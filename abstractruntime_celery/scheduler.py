"""The seed's ``Scheduler``, on Celery.

Same constructor and methods as ``abstractruntime.Scheduler``; a user switches
by changing one import line. Two modes:

* embedded (no ``app``): an in-process worker pool and timer heap tick runs in
  this process; timers fire at their deadline instead of on a 1 s poll;
* distributed (``app=`` a Celery app): ticks go to Celery workers; ``start()``
  runs a local sweep loop (safe beside beat: the sweep takes a cluster lock) and
  relays ``on_run_resumed`` / ``on_run_failed`` from every worker.

``stats`` are cluster-wide in the distributed mode (kept in Redis).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from abstractruntime import Runtime, RunState, RunStatus, WaitReason

from .config import Settings, load_settings
from .coord import Coordination
from .dispatch import CeleryDispatcher, LocalDispatcher
from .driver import Driver, build
from .inbox import Event
from .payloads import check_run_id
from .registry import WorkflowRegistry
from .signals import NoticeListener, run_failed, run_resumed
from .stats import SchedulerStats
from .sweep import sweep

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0


@dataclass
class RunHandle:
    """A promise of a run's state after some work is applied; returned with ``wait=False``."""

    run_id: str
    driver: Driver
    event: Event | None = None

    def done(self) -> bool:
        """True once the event (if any) is applied and the run waits or has ended."""
        _, applied, settled = self.driver.snapshot(self.run_id, self.event)
        return applied and settled

    def wait(self, timeout: float = DEFAULT_TIMEOUT_S) -> RunState:
        """Raises RunWaitTimeout if the work is not applied within ``timeout`` seconds."""
        return self.driver.wait_for(self.run_id, timeout=timeout, event=self.event)


class Scheduler:
    """Resumes waiting runs automatically: the seed's API, cluster-wide on Celery."""

    def __init__(
        self,
        *,
        runtime: Optional[Runtime],
        registry: WorkflowRegistry,
        poll_interval_s: float = 1.0,
        max_errors_kept: int = 100,
        on_run_resumed: Optional[Callable[[RunState], None]] = None,
        on_run_failed: Optional[Callable[[str, Exception], None]] = None,
        app: Any = None,
        settings: Settings | None = None,
        embedded_workers: int = 4,
        coordination: Coordination | None = None,
        stores: Optional[dict[str, Any]] = None,
    ) -> None:
        """``runtime=None``: build one (``driver.build``) on ``stores`` (``run_store``,
        ``ledger_store``, ``runtime_kwargs``) or the settings' store URL.

        Raises:
            TypeError: the runtime's run store is not a QueryableRunStore (as in the seed).
            ConfigError: a setting is malformed, or ``app`` accepts pickle.
        """
        self._poll_interval = poll_interval_s
        self._max_errors = max_errors_kept
        self._on_run_resumed = on_run_resumed
        self._on_run_failed = on_run_failed
        self.app = app
        self.registry = registry
        options = dict(stores or {})
        if app is not None:
            from .tasks import install, set_driver

            install(app, registry=registry, settings=settings)
            self.settings = settings or load_settings(app.conf)
            self.driver = build(self.settings, registry, CeleryDispatcher(app, self.settings.queue),
                                distributed=True, runtime=runtime, broker_url=str(app.conf.broker_url or ""),
                                coordination=coordination, **options)
            set_driver(app, self.driver)
            self._local: LocalDispatcher | None = None
        else:
            self.settings = settings or load_settings(None)
            self._local = LocalDispatcher(self._embedded_tick, workers=embedded_workers)
            self.driver = build(self.settings, registry, self._local, runtime=runtime, coordination=coordination,
                                **options)
            # From construction, not start(): the seed calls the callbacks from a bare
            # poll_once() too. Weak, so a dropped Scheduler leaves no receiver behind.
            run_resumed.connect(self._local_resumed, weak=True)
            run_failed.connect(self._local_failed, weak=True)
        self.runtime = self.driver.runtime
        self._running = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: NoticeListener | None = None
        self._lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def embedded(self) -> bool:
        return self._local is not None

    def start(self) -> None:
        """Start the embedded worker (or the distributed sweep loop) in the background.

        Raises:
            RuntimeError: already running (as in the seed).
        """
        with self._lock:
            if self._running:
                raise RuntimeError("Scheduler is already running")
            self._stop.clear()
            if self._local is not None:
                self._local.start()
            elif self.driver.coord.client is not None and (self._on_run_resumed or self._on_run_failed):
                self._listener = NoticeListener(self.driver.coord.client, self.driver.coord.notices.channel,
                                                self._relay_notice)
            self._thread = threading.Thread(target=self._poll_loop, name="arc-scheduler", daemon=True)
            self._running = True
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background loop (and the embedded worker) gracefully."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._local is not None:
            self._local.stop(timeout)
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def _poll_loop(self) -> None:
        """The seed's poll loop, now only a safety net: timers and events arrive on their own."""
        while not self._stop.is_set():
            try:
                sweep(self.driver, force=self.embedded)
            except Exception as exc:
                log.exception("sweep failed")
                self.driver.coord.stats.error(f"Poll cycle error: {exc}")
            self._stop.wait(self._poll_interval)

    def _tick_here(self, run_id: str, reason: str, message_id: Optional[str] = None) -> bool:
        """Tick in this thread; True if the run moved on (errors are counted by the tick)."""
        try:
            return self.driver.tick(run_id, reason=reason, message_id=message_id).changed
        except Exception:
            return False

    def _embedded_tick(self, run_id: str, reason: str, message_id: Optional[str] = None) -> None:
        try:
            self.driver.tick(run_id, reason=reason, message_id=message_id)
        except Exception:
            pass  # counted and reported (stats, on_run_failed) by the tick path

    # --- callbacks -----------------------------------------------------------------

    def _local_resumed(self, sender: Any = None, run_id: str = "", status: str = "", **_: Any) -> None:
        if sender is self.driver.coord.notices:
            self._call_resumed(run_id)

    def _local_failed(self, sender: Any = None, run_id: str = "", error: str = "", **_: Any) -> None:
        if sender is self.driver.coord.notices:
            self._call_failed(run_id, error)

    def _relay_notice(self, notice: dict[str, str]) -> None:
        if notice.get("kind") == "resumed":
            self._call_resumed(notice["run_id"])
        elif notice.get("kind") == "failed":
            self._call_failed(notice["run_id"], notice.get("error", ""))

    def _call_resumed(self, run_id: str) -> None:
        if self._on_run_resumed is None:
            return
        try:
            self._on_run_resumed(self.driver.load(run_id))
        except Exception:
            log.exception("on_run_resumed callback failed")

    def _call_failed(self, run_id: str, error: str) -> None:
        if self._on_run_failed is None:
            return
        try:
            self._on_run_failed(run_id, RuntimeError(error))
        except Exception:
            log.exception("on_run_failed callback failed")

    # --- the seed's API --------------------------------------------------------------

    def poll_once(self) -> int:
        """Run one sweep now; what it finds due is ticked here, in the caller, as in the
        seed (and, embedded and stopped, the ticks held meanwhile). Returns how many runs
        moved on.

        Raises:
            StoreUnavailableError: the store cannot be reached.
        """
        moved = 0

        def tick_here(run_id: str, reason: str, message_id: Optional[str]) -> None:
            nonlocal moved
            moved += self._tick_here(run_id, reason, message_id)

        if self._local is not None and not self._local.running:
            for run_id, reason, message_id in self._local.take_held():
                moved += self._tick_here(run_id, reason, message_id)
        sweep(self.driver, force=True, send=tick_here)
        return moved

    def resume_event(self, *, run_id: str, wait_key: str, payload: dict[str, Any], wait: bool = True,
                     timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """Deliver an event. It is durable (in the run's inbox) before this returns.

        Returns the run's state once the event is applied and the run has settled,
        or, with ``wait=False``, a ``RunHandle`` at once.

        Raises:
            PayloadError: payload not a JSON object, or over the size limit.
            UnknownRunError: no such run (a KeyError, as in the seed).
            UnknownWorkflowError: the registry lacks the run's workflow (a KeyError).
            RunNotWaitingError: the run has ended (a ValueError, as in the seed).
            WaitKeyMismatchError: the run waits on another key (a ValueError).
            RunWaitTimeout: ``wait`` and the event was not applied within ``timeout``.

        A broker that refuses the event's tick raises nothing once the event is stored:
        a warning is logged and the sweep re-sends the tick after ``event_redeliver_s``
        (``wait`` then waits for that, up to ``timeout``).
        """
        return self.deliver(run_id, wait_key, payload, wait=wait, timeout=timeout)

    def deliver(self, run_id: str, wait_key: Optional[str], payload: dict[str, Any], *, wait: bool = True,
                timeout: float = DEFAULT_TIMEOUT_S, answering: Optional[str] = None) -> Any:
        """``resume_event``; with ``answering`` (the ``updated_at`` of the waiting run the caller
        saw: ``respond``) the event answers only that wait: once answered, or left, the wait
        refuses it (``RunNotWaitingError``).

        Raises:
            As ``resume_event``.
        """
        event = self.driver.accept_event(run_id, wait_key, payload, dispatch=not self.embedded,
                                         answering=answering)
        if self.embedded:
            self._apply_here(event, timeout)
        handle = RunHandle(run_id, self.driver, event)
        return handle.wait(timeout) if wait else handle

    def _apply_here(self, event: Event, timeout: float) -> None:
        """Embedded: tick the run in the caller until the event is applied or the run
        cannot take it yet (a tick holding the lease is waited for, never left to a
        dispatcher that may be stopped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                outcome = self.driver.tick(event.run_id, reason="event")
            except Exception:
                return  # counted; the run stays RUNNING and a retry was sent
            if outcome.skipped != "busy" or self.driver.event_applied(event) or time.monotonic() >= deadline:
                return
            time.sleep(0.005)

    def find_waiting_runs(self, *, wait_reason: Optional[WaitReason] = None, workflow_id: Optional[str] = None,
                          limit: int = 100) -> list[RunState]:
        """Waiting runs, newest first (for UIs that show pending prompts)."""
        return self.driver.run_store.list_runs(status=RunStatus.WAITING, wait_reason=wait_reason,
                                               workflow_id=workflow_id, limit=limit)

    @property
    def stats(self) -> SchedulerStats:
        """Cluster-wide counters (Redis) or this process's (embedded)."""
        snap = self.driver.coord.stats.snapshot()
        snap.errors = snap.errors[-self._max_errors:] if self._max_errors > 0 else []
        return snap

    def resume_subworkflow_parent(self, *, child_run_id: str, child_output: dict[str, Any]) -> Optional[RunState]:
        """Resume the parent of an ended child now (the tick path also does this by itself).

        Raises:
            UnknownRunError: no such child run.
        """
        child = self.driver.load(child_run_id)
        if not child.parent_run_id:
            return None
        self.driver.tick(child.parent_run_id, reason="child")
        return self.driver.load(child.parent_run_id)

    def cancel_with_children(self, run_id: str, *, reason: Optional[str] = None) -> list[RunState]:
        """Cancel a run and every active descendant, and any child a node still running
        spawns; ticks in flight notice at their next save (their commit is refused).

        Raises:
            PayloadError: ``run_id`` is malformed.
            UnknownRunError: no such run (a KeyError).
            RunBusyError: a tick held a run's lease for ``control_timeout_s`` (non-Redis stores).
        """
        return self.driver.control.cancel_tree(check_run_id(run_id), reason)

    def cancel_run(self, run_id: str, *, reason: Optional[str] = None) -> RunState:
        """Cancel a run without losing a tick's commit (see control.py).

        Raises:
            UnknownRunError: no such run (a KeyError).
            PayloadError: ``run_id`` is malformed.
            RunBusyError: as ``cancel_with_children``.
        """
        return self.driver.control.cancel(self.driver.load(run_id).run_id, reason)

    def pause_run(self, run_id: str, *, reason: Optional[str] = None) -> RunState:
        """Pause a run: it takes no step and no event until resumed (events sent before
        wait in its inbox). A RUNNING run waits on a synthetic pause wait.

        Raises:
            UnknownRunError, PayloadError, RunBusyError: as ``cancel_run``.
        """
        return self.driver.control.pause(self.driver.load(run_id).run_id, reason)

    def resume_run(self, run_id: str) -> RunState:
        """Resume a paused run; it is ticked and takes what waited for it meanwhile.

        Raises:
            UnknownRunError, PayloadError, RunBusyError: as ``cancel_run``.
        """
        state = self.driver.control.resume(self.driver.load(run_id).run_id)
        if self.embedded and not self.is_running:
            self._tick_here(run_id, "resumed")
        return state

    def retry_run(self, run_id: str) -> RunState:
        """Restart a FAILED run at the node that failed, with a new attempt count; it is
        ticked. A child is retried only while its parent still waits on it.

        Raises:
            UnknownRunError, PayloadError, RunBusyError: as ``cancel_run``.
            RetryRefusedError: the run is not FAILED, or its parent has already taken its
                failure (a ValueError). Nothing changed.
        """
        state = self.driver.control.retry(self.driver.load(run_id).run_id)
        if self.embedded and not self.is_running:
            self._tick_here(run_id, "retried")
        return state
