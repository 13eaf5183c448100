"""The Celery tasks (start, tick, resume, sweep) and ``install(app)``, which adds them,
safe defaults and the beat sweep to any Celery app: ours or a user's.

Task names are stable and read well in Flower: ``abstractruntime.tick`` and so on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

from celery import Celery
from celery.app.defaults import DEFAULTS as CELERY_DEFAULTS

from .config import Settings, load_settings
from .dispatch import RESUME_TASK, START_TASK, SWEEP_TASK, TICK_TASK, CeleryDispatcher
from .errors import ConfigError, PayloadError, RegistryError, UnknownRunError, UnknownWorkflowError
from .identity import WrongStoreError, mismatch, put_back, sender_of
from .outage import find_outage, one_line, put_back_delay, retry_later
from .payloads import check_new_run_id
from .registry import WorkflowRegistry, as_registry, load_object, load_registry
from .startcheck import check_worker, describe

log = logging.getLogger(__name__)

#: Celery settings we need; ``install`` applies each one the user has not set.
SAFE_DEFAULTS: dict[str, Any] = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_ignore_result": True,
    "broker_connection_retry_on_startup": True,
}

#: The driver lives on the app (keyed by pid, so a forked child builds its own):
#: a module-level map keyed by id(app) would hand a new app an old app's driver.
_DRIVER_ATTR = "_abstractruntime_driver"
_drivers_lock = threading.Lock()


def _refuse_pickle(app: Celery) -> None:
    accept = app.conf.accept_content or []
    if any("pickle" in str(c) for c in accept) or "pickle" in str(app.conf.task_serializer):
        raise ConfigError("abstractruntime_celery accepts JSON messages only: remove pickle from "
                          "accept_content / task_serializer")


def install(app: Celery, *, registry: Any = None, settings: Settings | None = None,
            beat: bool = True) -> Celery:
    """Add the tasks, safe defaults and (with ``beat``) the sweep schedule to ``app``.

    ``registry`` may be a WorkflowRegistry, specs, a callable, or a dotted path;
    by default workers load ``abstractruntime_registry`` from the conf/environment.

    Raises:
        ConfigError: the app accepts pickle, a setting is malformed, or a quorum queue's name
            holds a dot; ``app`` is not a
            Celery app, ``settings`` not a Settings, or ``registry`` not a registry.
    """
    if not isinstance(app, Celery):
        raise ConfigError(f"install() needs a Celery app, got {type(app).__name__}")
    if settings is not None and not isinstance(settings, Settings):
        raise ConfigError(f"settings must be an abstractruntime_celery Settings, got {type(settings).__name__}")
    if registry is not None and not isinstance(registry, str) and not callable(registry):
        as_registry(registry)  # fail here, not later in every worker
    for key, value in SAFE_DEFAULTS.items():
        # A value still equal to Celery's own default was not chosen by the user.
        # (``conf.changes`` cannot tell: before finalisation it lists every key.)
        if app.conf.get(key) == CELERY_DEFAULTS.get(key):
            app.conf[key] = value
    _refuse_pickle(app)
    app.conf.setdefault("abstractruntime_settings", None)
    if settings is not None:
        app.conf["abstractruntime_settings"] = settings
    if registry is not None:
        app.conf["abstractruntime_registry_object"] = registry
    s = settings_for(app)
    # Our tasks always follow the current settings: installing again with another
    # queue must move the routes and the sweep entry along with the dispatcher.
    routes = dict(app.conf.task_routes or {}) if isinstance(app.conf.task_routes, dict) else {}
    for name in (TICK_TASK, START_TASK, RESUME_TASK, SWEEP_TASK):
        routes[name] = {"queue": s.queue}
    app.conf.task_routes = routes
    _consume_queue_by_default(app, s.queue, s.queue_type)
    _register_tasks(app)
    _build_at_worker_start(app)
    if beat:
        schedule = dict(app.conf.beat_schedule or {})
        schedule.update({SWEEP_TASK: {
            "task": SWEEP_TASK, "schedule": s.sweep_interval_s,
            "options": {"expires": sweep_expires_s(s), "queue": s.queue},
        }})
        app.conf.beat_schedule = schedule
    return app


def sweep_expires_s(settings: Settings) -> float:
    """How long a beat sweep message may wait in the queue. It shares the queue with the
    ticks, so behind a backlog it waits its turn: expiring after one interval, every sweep
    would expire and none would run while the queue stays busy. Sweeps that pile up cost
    one round trip each (``SweepLock``: one runs per interval)."""
    return max(settings.sweep_interval_s, settings.lost_tick_after_s)


def _typed(queue_type: str) -> dict[str, str] | None:
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else None


def _consume_queue_by_default(app: Celery, queue: str, queue_type: str = "") -> None:
    """Make a worker started without ``-Q`` consume our queue beside the default one
    (raises ``ConfigError`` for a quorum queue whose name holds a dot).

    Such a worker consumes only ``task_queues`` (by default the ``celery`` queue), while
    our tasks are routed to ``queue``: ``celery -A abstractruntime_celery worker`` ran and
    never ticked anything. Queues the user lists are left alone (they add ours, or pass -Q).
    """
    if app.conf.task_queues and not app.conf.get("abstractruntime_own_queues"):
        return  # (not "changed": Celery's own CLI marks task_queues changed, with None)
    from kombu import Exchange, Queue

    conf = app.conf
    default = conf.task_default_queue or "celery"
    celery_type = str(conf.get("task_default_queue_type") or "classic")
    queues = [Queue(default, Exchange(conf.task_default_exchange or default, conf.task_default_exchange_type),
                    routing_key=conf.task_default_routing_key or default, queue_arguments=_typed(celery_type))]
    if queue != default:
        # A quorum queue gets a topic exchange: Celery's native delayed delivery (which quorum
        # queues need for ETAs) cannot route through a direct one, and would leave every timer
        # held in a worker, blocking its prefetch.
        kind = queue_type or celery_type
        if kind == "quorum" and "." in queue:
            raise ConfigError(
                f"queue {queue!r} holds a dot: on quorum queues Celery's native delayed delivery binds each "
                f"queue with '#.<name>', so a delayed tick for {queue!r} would also reach a queue named after "
                "its last dotted part (another deployment's, in the same vhost). Name the queue without dots")
        queues.append(Queue(queue, Exchange(queue, "topic" if kind == "quorum" else "direct"), routing_key=queue,
                            queue_arguments=_typed(kind)))
    conf.task_queues = queues
    conf["abstractruntime_own_queues"] = True  # ours: a later install() with other settings may redo it


def settings_for(app: Celery) -> Settings:
    """Settings for this app: an explicit Settings object, else conf + environment.

    Raises:
        ConfigError: a setting is malformed.
    """
    explicit = app.conf.get("abstractruntime_settings")
    return explicit if isinstance(explicit, Settings) else load_settings(app.conf)


def registry_for(app: Celery, settings: Settings) -> WorkflowRegistry:
    """Raises ConfigError when the configured registry cannot be loaded."""
    obj = app.conf.get("abstractruntime_registry_object")
    if obj is None:
        return load_registry(settings.registry)
    return load_registry(obj) if isinstance(obj, str) else as_registry(obj)


def runtime_options(settings: Settings) -> dict[str, Any]:
    """Extra Runtime kwargs for workers, from ``settings.runtime_options`` (a callable's path).

    Raises:
        ConfigError: the path cannot be imported, or the callable does not return a dict.
    """
    if not settings.runtime_options:
        return {}
    factory = load_object(settings.runtime_options, "runtime_options")
    options = factory() if callable(factory) else factory
    if not isinstance(options, dict):
        raise ConfigError(f"{settings.runtime_options} must return a dict of Runtime keyword arguments, "
                          f"got {type(options).__name__}")
    return options


def driver_for(app: Celery) -> Any:
    """The Driver of this process for ``app`` (built once per process, after fork).

    Raises:
        ConfigError: settings or the registry path are wrong.
    """
    pid = os.getpid()
    cached = getattr(app, _DRIVER_ATTR, None)
    if cached is not None and cached[0] == pid:
        return cached[1]
    with _drivers_lock:
        cached = getattr(app, _DRIVER_ATTR, None)
        if cached is not None and cached[0] == pid:
            return cached[1]
        from .driver import build

        settings = settings_for(app)
        driver = build(settings, registry_for(app, settings), CeleryDispatcher(app, settings.queue),
                       distributed=True, broker_url=str(app.conf.broker_url or ""),
                       runtime_kwargs=runtime_options(settings))
        setattr(app, _DRIVER_ATTR, (pid, driver))
        return driver


def _built_driver(app: Celery) -> Any:
    """This process's driver for ``app`` if it was built already, else None (never builds one)."""
    cached = getattr(app, _DRIVER_ATTR, None)
    return cached[1] if cached is not None and cached[0] == os.getpid() else None


def set_driver(app: Celery, driver: Any) -> None:
    """Use ``driver`` for ``app`` in this process (the Scheduler does, so workers in it share the runtime)."""
    with _drivers_lock:
        setattr(app, _DRIVER_ATTR, (os.getpid(), driver))


def _run_tick(app: Celery, run_id: str, reason: str, task: Any = None, message_id: str | None = None) -> str | None:
    """Tick ``run_id`` for a delivered message. A store that cannot be reached, or a
    registry whose lookup raised, sends the message again after a backoff (``task``: the
    bound task), and is logged in one line.

    A malformed message (not a run id) or an unknown run is dropped, with one line; but a
    message naming another store than this worker's (``identity.py``: another key prefix, or
    another place when the run is missing here) is put back for a worker of that store.

    Raises:
        celery.exceptions.Retry: the store or coordination is unavailable, the registry
            failed, or the message names another store (the message comes back).
        RegistryError: the registry failed and there is no task to retry.
    """
    theirs, differs = sender_of(task.request) if task is not None else None, None
    try:
        driver = driver_for(app)
        differs = mismatch(driver.identity, theirs)
        if differs == "prefix":  # another deployment's run (or a typo): never tick our namesake
            raise WrongStoreError(run_id, str(theirs), driver.identity)
        outcome = driver.tick(run_id, reason=str(reason)[:40], message_id=message_id)
    except (UnknownRunError, WrongStoreError):
        if differs is None:
            log.warning("tick for unknown run %s dropped", run_id)
            return None
        kept = put_back(task, driver, str(run_id), str(theirs), put_back_delay(task, driver.settings))
        if kept is not None:
            raise kept from None
        return None
    except PayloadError as exc:  # not a run id: a malformed message
        log.warning("tick message dropped: %s", exc)
        return None
    except RegistryError as exc:  # a lazy registry failed: ask again later, never drop the tick
        if task is None:
            raise
        raise registry_later(task, app, f"tick of run {run_id}", exc) from None
    except Exception as exc:  # a node handler raised (counted, retried by the tick path), or the store is down
        outage = find_outage(exc, _built_driver(app))
        if outage is not None and task is not None:
            raise retry_later(task, settings_for(app), outage, f"tick of run {run_id}") from None
        log.warning("tick of run %s failed: %s", run_id, one_line(exc))
        return None
    return outcome.status


def _build_at_worker_start(app: Celery) -> None:
    """Build this process's driver when a worker (or a prefork pool child) starts, not on
    its first task: a setup mistake (registry, store, coordination URL, key layout) stops
    the worker before it says "ready", instead of failing every task it takes; and the
    first task does not pay for opening the stores and AbstractRuntime's heavy imports
    (with the solo pool every held timer would wait for it)."""
    from celery.signals import celeryd_after_setup, worker_init, worker_process_init

    def at_start(sender: Any = None, **_: Any) -> None:
        worker_app = getattr(sender, "app", None)
        if worker_app is not None and worker_app is not app:
            return  # another app's worker in this process
        cli = _is_cli_worker(sender)
        try:
            driver = driver_for(app)
            # A real ``celery worker`` process also refuses in-process stores and
            # coordination and a store that does not answer (``startcheck``); in-process
            # test workers and the Scheduler's own process are left as they are.
            report = (describe(driver, _registry_source(app)), check_worker(driver, app)) if cli else None
            from .metrics.serve import start_for_worker

            start_for_worker(driver)  # (metrics_port: once, in the main process, after the checks)
        except Exception as exc:
            line = f"abstractruntime_celery: the worker cannot start: {one_line(exc, 600)}"
            if not cli:
                log.critical(line)
            # Celery's signals swallow exceptions; SystemExit stops the worker's start
            # (its message is the one line ``celery worker`` prints before exiting with 1).
            raise SystemExit(line) from None
        if report is not None:
            setattr(sender, _REPORT_ATTR, report)

    def after_setup(sender: Any = None, instance: Any = None, **_: Any) -> None:
        """Logging is set up by now (it is not at ``worker_init``): say what was found."""
        report = getattr(instance, _REPORT_ATTR, None)
        if report is None or getattr(instance, "app", None) is not app:
            return
        lines, warnings = report
        for line in lines:
            log.info("abstractruntime_celery: %s", line)
        for warning in warnings:
            log.warning("abstractruntime_celery: %s", warning)
        delattr(instance, _REPORT_ATTR)

    def in_pool_child(**_: Any) -> None:
        try:
            driver_for(app)
        except Exception as exc:  # its parent built one at start; a child reports it on its tasks
            log.error("abstractruntime_celery: pool child cannot build its driver: %s", one_line(exc))

    uid = f"abstractruntime_celery.start.{id(app)}"
    worker_init.connect(at_start, weak=False, dispatch_uid=uid)
    worker_process_init.connect(in_pool_child, weak=False, dispatch_uid=uid + ".child")
    celeryd_after_setup.connect(after_setup, weak=False, dispatch_uid=uid + ".report")


#: Where a starting worker keeps what its start checks found, until logging is set up.
_REPORT_ATTR = "_abstractruntime_start_report"


def _is_cli_worker(sender: Any) -> bool:
    """A worker started as a program (``celery worker``), not an in-process WorkController
    (``celery.contrib.testing``, an embedding app's own)."""
    from celery.apps.worker import Worker

    return isinstance(sender, Worker)


def _registry_source(app: Celery) -> str:
    """Where the registry came from, for the start log: its dotted path, or "given in code"."""
    obj = app.conf.get("abstractruntime_registry_object")
    if isinstance(obj, str):
        return obj
    return "given in code" if obj is not None else settings_for(app).registry


def start_run_id(task_id: Any) -> str:
    """The run id a start message without one gets: its task id (the same on every
    delivery of the message), or a digest of it when it is not a valid run id."""
    import hashlib

    text = str(task_id or "")
    try:
        return check_new_run_id(text)
    except PayloadError:
        if not text:
            return uuid.uuid4().hex  # called directly, not as a message: a fresh run
        return "t-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def keep_start(task: Any, driver: Any, exc: UnknownWorkflowError, since: Any) -> BaseException:
    """A start for a workflow this worker does not know (a worker of an old deploy beside
    the new one took it): the message goes back to the queue after a backoff, for a worker
    that knows it, until ``unknown_workflow_grace_s`` has passed since it was first seen.
    Returns the exception to raise (Celery's Retry, or ``exc`` once the grace is over)."""
    now = time.time()
    first = float(since) if isinstance(since, (int, float)) and not isinstance(since, bool) else now
    stats, grace = driver.coord.stats, driver.settings.unknown_workflow_grace_s
    stats.incr("unknown_workflow")
    if not _plausible_workflow_id(exc.workflow_id):
        return exc  # garbage, not a workflow of another deploy: no message is sent again for it
    if now - first >= grace:
        stats.error(f"{exc}; a start message still unknown after {grace:.0f}s was dropped")
        return exc
    if since is None:
        stats.error(f"{exc}; the start message is sent again until a worker that knows it takes it")
    return task.retry(kwargs={**(task.request.kwargs or {}), "unknown_since": first},
                      countdown=put_back_delay(task, driver.settings),
                      exc=exc, throw=False)


def registry_later(task: Any, app: Celery, what: str, exc: RegistryError) -> BaseException:
    """A lookup of the registry raised (a lazy catalogue): the message comes back after a
    backoff, with one line naming the cause (``retry_later``). Returns Celery's Retry.

    Raises:
        Exception: the broker's error, if the retry itself cannot be sent.
    """
    return retry_later(task, settings_for(app), exc.__cause__ or exc, what,
                       f"registry lookup of '{exc.workflow_id:.120}' failed")


def _start_failed(task: Any, app: Celery, run_id: Any, exc: Exception) -> None:
    """A start's create or first tick raised. A store that is down: the message comes back
    later. A node's error once the run exists: the tick path counted it and sent a retry,
    so the start is done. Anything else fails the task (raised).

    Raises:
        celery.exceptions.Retry: the store or coordination is unavailable.
        Exception: ``exc``, when no run was created and the store is up.
    """
    driver = _built_driver(app)
    outage = find_outage(exc, driver)
    try:
        created = outage is None and driver is not None and isinstance(run_id, str) \
            and driver.run_store.load(check_new_run_id(run_id)) is not None
    except Exception as again:  # the store went down after the failure
        outage = find_outage(again, driver)
        if outage is None:
            raise exc from None
        created = False
    if outage is not None:
        raise retry_later(task, settings_for(app), outage, f"start of run {run_id}") from None
    if not created:
        raise exc
    log.warning("first tick of run %s failed: %s", run_id, one_line(exc))


def _plausible_workflow_id(workflow_id: Any) -> bool:
    return isinstance(workflow_id, str) and 0 < len(workflow_id) <= 256 and workflow_id.isprintable()


def _register_tasks(app: Celery) -> None:
    if TICK_TASK in app.tasks:
        return
    # shared=False: each app gets its own tasks, bound to its own settings and driver.
    # max_retries=None: a message meeting a store that is down comes back until it is up
    # (``outage.retry_later``, with a capped backoff); nothing else retries these tasks.
    opts = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True,
            "serializer": "json", "shared": False, "max_retries": None}

    @app.task(name=TICK_TASK, bind=True, **opts)
    def tick(self: Any, run_id: str, reason: str = "tick") -> str | None:
        """Advance one run under its lease; duplicates and early deliveries are no-ops."""
        return _run_tick(app, run_id, reason, self, self.request.id)

    @app.task(name=RESUME_TASK, bind=True, **opts)
    def resume(self: Any, run_id: str, event_id: str) -> str | None:
        """Apply the run's inbox (this event included) under its lease, then tick."""
        return _run_tick(app, run_id, "event", self)

    @app.task(name=START_TASK, bind=True, **opts)  # (unknown workflows: bounded by the grace, keep_start)
    def start(self: Any, workflow_id: str, vars: dict[str, Any] | None = None, run_id: str | None = None,
              unknown_since: float | None = None) -> str:
        """Create a run and tick it here, under one lease (one message per run). Without a
        ``run_id`` the run's id is the message's task id, so a start delivered twice makes one
        run: the second delivery ticks the run the first created (an orphan, if this worker died
        first, is ticked by the sweep). A start that could not create its run fails the task; a
        node's error is the tick path's. One for a workflow this worker lacks (``keep_start``), or
        meeting a store that is down or a registry lookup that raises (``retry_later``), is sent
        again later (same task id: one run); a malformed one (bad vars, run id) fails and is dropped."""
        run_id = run_id if run_id is not None else start_run_id(self.request.id)
        try:
            driver = driver_for(app)
            driver.start_and_tick(workflow_id, vars=vars, run_id=run_id)
        except UnknownWorkflowError as exc:
            raise keep_start(self, driver, exc, unknown_since) from exc
        except RegistryError as exc:  # (before the create, or in its first tick: same task id, one run)
            raise registry_later(self, app, f"start of run {run_id}", exc) from None
        except PayloadError:
            raise  # a malformed message (vars, run id): the task fails, the message is dropped
        except Exception as exc:
            _start_failed(self, app, run_id, exc)
        return run_id

    @app.task(name=SWEEP_TASK, ignore_result=True, serializer="json", shared=False)
    def sweep() -> int:
        """The safety net: re-send ticks for due, orphaned, evented and parent runs."""
        from .sweep import sweep as run_sweep

        started = time.perf_counter()
        try:
            report = run_sweep(driver_for(app))  # sends through the dispatcher
        except Exception as exc:
            outage = find_outage(exc, _built_driver(app))
            if outage is None:
                raise
            # beat sends the next one: no retry, and one line instead of a chained traceback
            log.warning("sweep skipped: store unavailable (%s)", one_line(outage))
            return 0
        log.debug("sweep took %.1f ms", (time.perf_counter() - started) * 1000)
        return report.total
