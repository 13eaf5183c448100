"""The seed's ``ScheduledRuntime`` and ``create_scheduled_runtime``, on Celery.

With no arguments it is zero-config: an embedded worker in this process, with
in-memory stores, so the seed's quick start runs unchanged with no server.
Given ``app`` or ``broker_url`` (and a shared ``store_url``), it dispatches to
real Celery workers and waits for results; ``wait=False`` returns a handle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional

from abstractruntime import Runtime, RunState, RunStatus, WaitReason, WorkflowSpec

from .config import Settings, load_settings
from .errors import ConfigError, PayloadError, RunNotWaitingError
from .registry import WorkflowRegistry, as_registry, require_workflow
from .scheduler import DEFAULT_TIMEOUT_S, RunHandle, Scheduler
from .stats import SchedulerStats


@dataclass
class ScheduledRuntime:
    """A Runtime bundled with a Scheduler: ``run``, ``respond``, ``tick`` and friends."""

    runtime: Runtime
    scheduler: Scheduler
    registry: WorkflowRegistry

    @property
    def driver(self) -> Any:
        return self.scheduler.driver

    def _ensure_registered(self, workflow: WorkflowSpec | str) -> WorkflowSpec:
        """Raises UnknownWorkflowError (an unregistered id) or PayloadError (not a workflow)."""
        if isinstance(workflow, str):
            return require_workflow(self.registry, workflow)
        if not isinstance(workflow, WorkflowSpec):
            raise PayloadError(f"workflow must be a WorkflowSpec or a registered workflow id, "
                               f"got {type(workflow).__name__} {workflow!r:.80}")
        if workflow.workflow_id not in self.registry:
            self.registry.register(workflow)
        return workflow

    def run(self, workflow: WorkflowSpec, *, vars: Optional[Dict[str, Any]] = None,
            actor_id: Optional[str] = None, max_steps: int = 100, wait: bool = True,
            timeout: float = DEFAULT_TIMEOUT_S, run_id: Optional[str] = None) -> tuple[str, Any]:
        """Start a run and drive it until it waits or ends; returns (run_id, state).

        Embedded: ticked here, as in the seed. Distributed: ticked by workers; this
        waits for the run to settle (or returns a RunHandle with ``wait=False``).
        ``run_id``: the new run's id (default: a fresh one); if that run exists already
        (same workflow and vars), it is driven on, not created again.

        Raises:
            PayloadError: ``vars`` is not a JSON object or is too large, or ``run_id`` is malformed.
            RunWaitTimeout: distributed and the run did not settle within ``timeout``.
            DispatchError: distributed, the run is stored but the broker refused its tick
                (``.run_id`` names it: call ``run`` again with it once the broker is back).
            Exception: embedded, whatever a node handler raised (as in the seed).
        """
        workflow = self._ensure_registered(workflow)
        embedded = self.scheduler.embedded
        run_id = self.driver.start_run(workflow, vars=vars, actor_id=actor_id, run_id=run_id,
                                       dispatch=not embedded)
        if embedded:
            # As the seed: tick here for max_steps, and return the state after them, even
            # RUNNING (then nothing ticks it at once; the sweep picks it up after orphan_grace_s).
            outcome = self.driver.tick(run_id, reason="start", max_steps=max_steps, follow_up=False)
            state = self.driver.load(run_id)
            if outcome.skipped is None and (state.status == RunStatus.RUNNING or not wait):
                return run_id, (state if wait else RunHandle(run_id, self.driver))
        handle = RunHandle(run_id, self.driver)
        if not wait:
            return run_id, handle
        return run_id, handle.wait(timeout)

    def respond(self, run_id: str, payload: Dict[str, Any], *, wait: bool = True,
                timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """Answer whatever the run waits for (the wait_key is looked up here).

        Raises:
            RunNotWaitingError: the run is not waiting, or waits with no wait_key (a ValueError, as in the seed).
            UnknownRunError, PayloadError, WaitKeyMismatchError, RunWaitTimeout: see Scheduler.resume_event.
        """
        state = self.driver.load(run_id)
        if state.status != RunStatus.WAITING or state.waiting is None:
            raise RunNotWaitingError(run_id, state.status.value)
        if state.waiting.wait_key is None:  # e.g. a timer: nothing to answer (the seed: "has no wait_key")
            raise RunNotWaitingError(run_id, state.status.value,
                                     f"has no wait_key to answer (it waits on {state.waiting.reason.value})")
        return self.scheduler.deliver(run_id, state.waiting.wait_key, payload, wait=wait, timeout=timeout,
                                      answering=state.updated_at or "")

    def start(self, *, workflow: WorkflowSpec, vars: Optional[Dict[str, Any]] = None,
              actor_id: Optional[str] = None, run_id: Optional[str] = None) -> str:
        """Create a run without ticking it here (workers or the embedded pool pick it up).
        ``run_id``: as in ``run`` (an existing run of that id gets a tick, not a twin).

        Raises:
            PayloadError: ``vars`` is not a JSON object or is too large, or ``run_id`` is malformed.
            DispatchError: the run is stored but the broker refused its tick (see ``run``).
        """
        workflow = self._ensure_registered(workflow)
        # (embedded and stopped, the pool holds the tick until it starts, or poll_once runs it)
        return self.driver.start_run(workflow, vars=vars, actor_id=actor_id, run_id=run_id, dispatch=True)

    def tick(self, run_id: str, *, max_steps: int = 100) -> RunState:
        """Tick a run here, under its lease (if a worker holds it, wait for it to settle).

        Raises:
            UnknownRunError: no such run.
            UnknownWorkflowError: the registry lacks the run's workflow.
            Exception: whatever a node handler raised.
        """
        run = self.driver.load(run_id)
        require_workflow(self.registry, run.workflow_id, run_id)
        outcome = self.driver.tick(run_id, reason="manual", max_steps=max_steps, follow_up=False)
        if outcome.skipped == "busy":
            return self.driver.wait_for(run_id, timeout=DEFAULT_TIMEOUT_S)
        return self.driver.load(run_id)

    def resume_event(self, *, run_id: str, wait_key: str, payload: Dict[str, Any], wait: bool = True,
                     timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """See Scheduler.resume_event."""
        return self.scheduler.resume_event(run_id=run_id, wait_key=wait_key, payload=payload,
                                           wait=wait, timeout=timeout)

    def wait_for(self, run_id: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 until: Optional[Callable[[RunState], bool]] = None) -> RunState:
        """Wait until ``until(run)`` holds (default: the run waits or has ended).

        Raises:
            RunWaitTimeout: not within ``timeout`` seconds.
            UnknownRunError: no such run.
        """
        return self.driver.wait_for(run_id, timeout=timeout, until=until)

    def get_state(self, run_id: str) -> RunState:
        """Raises UnknownRunError (a KeyError) for an unknown run."""
        return self.driver.load(run_id)

    def get_ledger(self, run_id: str) -> list[dict[str, Any]]:
        return self.runtime.get_ledger(run_id)

    def find_waiting_runs(self, *, wait_reason: Optional[WaitReason] = None, workflow_id: Optional[str] = None,
                          limit: int = 100) -> List[RunState]:
        return self.scheduler.find_waiting_runs(wait_reason=wait_reason, workflow_id=workflow_id, limit=limit)

    @property
    def stats(self) -> SchedulerStats:
        return self.scheduler.stats

    def resume_subworkflow_parent(self, *, child_run_id: str, child_output: Dict[str, Any]) -> Optional[RunState]:
        return self.scheduler.resume_subworkflow_parent(child_run_id=child_run_id, child_output=child_output)

    def cancel_run(self, run_id: str, *, reason: Optional[str] = None) -> RunState:
        """Cancel a run; a tick in flight notices at its next save and stops (its commit is
        refused, never the cancel).

        Raises:
            UnknownRunError: no such run (a KeyError).
            PayloadError: ``run_id`` is malformed.
            RunBusyError: a tick held the lease for ``control_timeout_s`` (non-Redis stores).
        """
        return self.scheduler.cancel_run(run_id, reason=reason)

    def pause_run(self, run_id: str, *, reason: Optional[str] = None) -> RunState:
        """See Scheduler.pause_run."""
        return self.scheduler.pause_run(run_id, reason=reason)

    def resume_run(self, run_id: str) -> RunState:
        """See Scheduler.resume_run."""
        return self.scheduler.resume_run(run_id)

    def cancel_with_children(self, run_id: str, *, reason: Optional[str] = None) -> List[RunState]:
        return self.scheduler.cancel_with_children(run_id, reason=reason)

    def retry_run(self, run_id: str) -> RunState:
        """See Scheduler.retry_run (raises as it does)."""
        return self.scheduler.retry_run(run_id)

    @property
    def is_running(self) -> bool:
        return self.scheduler.is_running

    def start_scheduler(self) -> None:
        if not self.scheduler.is_running:
            self.scheduler.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.scheduler.stop(timeout=timeout)


def create_scheduled_runtime(
    *,
    run_store: Optional[Any] = None,
    ledger_store: Optional[Any] = None,
    artifact_store: Optional[Any] = None,
    effect_policy: Optional[Any] = None,
    workflows: Optional[List[WorkflowSpec]] = None,
    effect_handlers: Optional[Dict[Any, Any]] = None,
    poll_interval_s: float = 1.0,
    auto_start: bool = True,
    on_run_resumed: Optional[Callable[[RunState], None]] = None,
    on_run_failed: Optional[Callable[[str, Exception], None]] = None,
    app: Any = None,
    broker_url: Optional[str] = None,
    store_url: Optional[str] = None,
    registry: Any = None,
    settings: Optional[Settings] = None,
) -> ScheduledRuntime:
    """The seed's factory. Zero-config by default (embedded worker, in-memory stores).

    Pass ``app`` (a Celery app) or ``broker_url`` to dispatch to real workers; the
    run store must then be shared with them (``store_url='redis://...'``, or a
    ``run_store`` they also open). Without ``registry``, the registry is the one
    ``install(app, registry=...)`` set on ``app`` (or the app's ``abstractruntime_registry``
    setting), so a user names it once; ``workflows`` are added to it.

    Raises:
        ConfigError: distributed mode with an in-memory store, or a malformed setting.
        TypeError: ``run_store`` is not a QueryableRunStore.
    """
    if broker_url is not None and app is None:
        from .app import make_app

        app = make_app(broker_url)
    if settings is not None and not isinstance(settings, Settings):
        raise ConfigError(f"settings must be an abstractruntime_celery Settings, got {type(settings).__name__}")
    base = settings or _settings_of(app, store_url)
    reg = _registry_of(registry, app, base)
    for wf in workflows or []:
        if wf.workflow_id not in reg:
            reg.register(wf)
    runtime_kwargs = {k: v for k, v in (("effect_handlers", effect_handlers), ("artifact_store", artifact_store),
                                         ("effect_policy", effect_policy)) if v is not None}
    scheduler = Scheduler(runtime=None, registry=reg, poll_interval_s=poll_interval_s,
                          on_run_resumed=on_run_resumed, on_run_failed=on_run_failed, app=app, settings=base,
                          stores={"run_store": run_store, "ledger_store": ledger_store,
                                  "runtime_kwargs": runtime_kwargs})
    if auto_start:
        scheduler.start()
    return ScheduledRuntime(runtime=scheduler.runtime, scheduler=scheduler, registry=reg)


def _settings_of(app: Any, store_url: Optional[str]) -> Settings:
    """The app's settings (a Settings ``install`` was given, else its conf and the
    environment), with ``store_url`` over them.

    Raises:
        ConfigError: a setting is malformed.
    """
    if app is None:
        return load_settings(None, store_url=store_url)
    from .tasks import settings_for

    base = settings_for(app)
    return replace(base, store_url=store_url) if store_url is not None else base


def _registry_of(registry: Any, app: Any, settings: Settings) -> WorkflowRegistry:
    """The registry given; else the app's (what ``install`` set, or its registry setting), so
    the web process and the workers read it from one place; else a new, empty one.

    Raises:
        ConfigError: the registry (or the app's registry path) cannot be loaded.
    """
    if registry is not None:
        return as_registry(registry)
    if app is not None:
        from .tasks import registry_for

        return registry_for(app, settings)
    return WorkflowRegistry()
