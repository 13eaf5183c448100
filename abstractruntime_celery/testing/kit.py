"""The test kit of one test: the runtimes it made, its clock, and how to build a runtime
embedded or on an in-process Celery worker.

The pytest fixtures (``plugin.py``) are thin wrappers over this, so a test that does
not use pytest (or builds its runtime itself) can use it directly.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, Callable, Optional

from ..config import Settings, load_settings
from ..dispatch import START_TASK, TICK_TASK
from ..errors import ConfigError
from ..runtime import ScheduledRuntime, create_scheduled_runtime
from .clock import VirtualClock
from .settle import settle

#: The key prefix and queue of a worker runtime start so (a fresh tag follows): only what
#: starts so is ever deleted after a test.
TEST_PREFIX = "arct"
TEST_QUEUE = "arc-test-"
REGISTRY_HELP = (
    "the arc_registry fixture is not defined: override it in your conftest.py with your workflows, e.g.\n\n"
    "    @pytest.fixture\n"
    "    def arc_registry():\n"
    "        return [my_workflow]          # a list of WorkflowSpec, or a WorkflowRegistry\n")


class Kit:
    """What one test's fixtures share. ``lazy_runtime`` makes the embedded runtime when a
    helper needs one and the test asked for none."""

    def __init__(self, lazy_runtime: Optional[Callable[[], ScheduledRuntime]] = None) -> None:
        self.runtimes: list[ScheduledRuntime] = []
        self.clock: Optional[VirtualClock] = None
        self._lazy = lazy_runtime

    def attach(self, runtime: ScheduledRuntime) -> ScheduledRuntime:
        self.runtimes.append(runtime)
        return runtime

    def drivers(self) -> list[Any]:
        return [sr.driver for sr in self.runtimes]

    @property
    def runtime(self) -> ScheduledRuntime:
        """The test's runtime (the embedded one is made if none was asked for).

        Raises:
            ConfigError: the test made more than one (name the runtime: ``sr.resume_event``).
        """
        if not self.runtimes and self._lazy is not None:
            self._lazy()
        if len(self.runtimes) != 1:
            raise ConfigError(f"the test has {len(self.runtimes)} runtimes; deliver through one of them "
                              "(runtime.resume_event) and settle with arc_settle")
        return self.runtimes[0]

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until no run of the test's runtimes has work due now.

        Raises:
            SettleTimeout: as ``settle.settle``.
        """
        for sr in self.runtimes:
            settle(sr.driver, timeout)

    def deliver(self, run_id: str, wait_key: str, payload: dict[str, Any], *, timeout: float = 30.0) -> Any:
        """Deliver an event, wait until it is applied and every tick it causes (next nodes,
        children, parents) is done; returns the run's state then.

        Raises:
            As ``ScheduledRuntime.resume_event``; SettleTimeout as ``settle``.
        """
        sr = self.runtime
        sr.resume_event(run_id=run_id, wait_key=wait_key, payload=payload, wait=True, timeout=timeout)
        self.settle(timeout)
        return sr.get_state(run_id)


def embedded_runtime(registry: Any, settings: Optional[Settings] = None) -> ScheduledRuntime:
    """An embedded runtime (in-process worker, in-memory stores) with ``registry``.

    Raises:
        ConfigError: ``registry`` is not a registry or list of workflows; a bad setting.
    """
    return create_scheduled_runtime(registry=_checked(registry), settings=settings)


def worker_runtime(app: Any, registry: Any, settings: Optional[Settings] = None,
                   store_url: str = "memory://") -> ScheduledRuntime:
    """A distributed runtime on ``app`` for a worker in this process: our tasks are
    installed on the app and its in-process worker uses this runtime's driver (so an
    in-memory store is shared). A fresh key prefix and queue keep tests apart.

    Start the worker after this (or reload it: ``consume(worker, sr)``).

    Raises:
        ConfigError: as ``embedded_runtime``; the app accepts pickle.
    """
    base = settings or load_settings(app.conf)
    tag = uuid.uuid4().hex[:10]
    base = replace(base, store_url=store_url, key_prefix=f"{TEST_PREFIX}{tag}:", queue=f"{TEST_QUEUE}{tag}")
    stores: dict[str, Any] = {}
    if store_url == "memory://":
        from abstractruntime import InMemoryLedgerStore, InMemoryRunStore

        stores = {"run_store": InMemoryRunStore(), "ledger_store": InMemoryLedgerStore()}
    sr = create_scheduled_runtime(app=app, registry=_checked(registry), settings=base, auto_start=False, **stores)
    ping = app.tasks.get("celery.ping")
    if ping is not None:  # Celery's test worker checks it answers "pong": install() made results ignored
        ping.ignore_result = False
    return sr


def consume(worker: Any, sr: ScheduledRuntime) -> None:
    """Make a worker started before our tasks were installed take them: refresh its task
    table (Celery's ``reload``) and add our queue to the ones it consumes.

    Raises:
        Exception: the broker's error while the worker declares the queue.
    """
    consumer = getattr(worker, "consumer", None)
    if consumer is None:
        return
    if TICK_TASK not in getattr(consumer, "strategies", {}) or START_TASK not in consumer.strategies:
        consumer.update_strategies()
    queue = sr.scheduler.settings.queue
    consuming = {q.name for q in getattr(getattr(consumer, "task_consumer", None), "queues", [])}
    if consuming and queue not in consuming:
        consumer.add_task_queue(queue)


def stop_promptly(worker: Any) -> None:
    """Ask an in-process worker (``celery.contrib.testing.worker.start_worker``) to stop
    and wake its event loop: on RabbitMQ nothing else wakes it for up to 10 s (the hub's
    longest poll), past ``start_worker``'s own wait, which then fails the test. Call it
    as the ``with start_worker(...)`` block ends."""
    from celery.worker import state

    state.should_terminate = 0
    hub = getattr(worker, "hub", None)
    if hub is not None:
        hub.call_soon(lambda: None)


def drop_queue(app: Any) -> None:
    """Delete the queue ``worker_runtime`` made on ``app``'s broker (once its worker
    stopped); any other queue is left alone."""
    queue = str(getattr(app.conf.get("abstractruntime_settings"), "queue", ""))
    if not queue.startswith(TEST_QUEUE):
        return
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            channel.queue_delete(queue)
            if conn.transport.driver_type == "amqp":
                channel.exchange_delete(queue)
            elif conn.transport.driver_type == "redis":  # kombu keeps the exchange's bindings in keys
                channel.client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    except Exception:  # best effort: a broker gone at teardown must not fail the test
        pass


def forget(sr: ScheduledRuntime) -> None:
    """Stop the runtime and delete its keys under its key prefix in Redis (if any).

    Raises:
        redis.RedisError: the coordination Redis cannot be reached.
    """
    sr.stop()
    client = sr.driver.coord.client
    prefix = sr.scheduler.settings.key_prefix
    if client is not None and prefix.startswith(TEST_PREFIX):
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)


def _checked(registry: Any) -> Any:
    if registry is None:
        raise ConfigError(REGISTRY_HELP)
    return registry
