"""pytest plugin: fixtures to test your workflows without sleeping.

Loaded by the ``pytest11`` entry point (or ``-p abstractruntime_celery.testing.plugin``).
Every name starts with ``arc_``, so it never meets Celery's own fixtures
(``celery_app``, ``celery_worker`` from ``celery.contrib.pytest``) or pytest-celery's.

Override ``arc_registry`` (required) and, if you like, ``arc_settings``,
``arc_celery_app``, ``arc_worker``, ``arc_store_url``, ``arc_broker_url``.
"""

from __future__ import annotations

import socket
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import pytest

if TYPE_CHECKING:  # the package (and AbstractRuntime) is imported by the fixtures, when a test uses one
    from ..config import Settings
    from ..runtime import ScheduledRuntime
    from .clock import VirtualClock
    from .kit import Kit


@pytest.fixture
def arc_registry() -> Any:
    """Your workflows: override it (a list of WorkflowSpec, or a WorkflowRegistry)."""
    from ..errors import ConfigError
    from .kit import REGISTRY_HELP

    raise ConfigError(REGISTRY_HELP)


@pytest.fixture
def arc_settings() -> Optional[Settings]:
    """Settings for the test's runtimes; None: the defaults (and the environment)."""
    return None


@pytest.fixture
def arc_kit(request: pytest.FixtureRequest) -> Kit:
    """What this test's arc_ fixtures share (its runtimes and clock)."""
    from .kit import Kit

    return Kit(lazy_runtime=lambda: request.getfixturevalue("arc_runtime"))


@pytest.fixture
def arc_runtime(arc_kit: Kit, arc_registry: Any, arc_settings: Optional[Settings]) -> Iterator[ScheduledRuntime]:
    """An embedded runtime (in-process worker, in-memory stores) with your registry."""
    from .kit import embedded_runtime

    sr = arc_kit.attach(embedded_runtime(arc_registry, arc_settings))
    yield sr
    sr.stop()


@pytest.fixture
def arc_clock(arc_kit: Kit) -> Iterator[VirtualClock]:
    """The virtual clock: ``arc_clock.advance(hours=24)`` fires every timer due on the way."""
    from .clock import VirtualClock

    clock = VirtualClock(arc_kit.drivers).start()
    arc_kit.clock = clock
    yield clock
    clock.stop()


@pytest.fixture
def arc_deliver(arc_kit: Kit) -> Callable[..., Any]:
    """``arc_deliver(run_id, wait_key, payload)``: deliver an event and run what it causes;
    returns the run's state."""
    return arc_kit.deliver


@pytest.fixture
def arc_settle(arc_kit: Kit) -> Callable[..., None]:
    """``arc_settle(timeout=30)``: wait until no run has work due now."""
    return arc_kit.settle


@pytest.fixture
def arc_broker_url() -> str:
    """Broker of ``arc_celery_app``: kombu's in-memory transport (no server)."""
    return "memory://"


@pytest.fixture
def arc_store_url() -> str:
    """Store of ``arc_worker_runtime``: memory (shared with the worker in this process),
    or a ``redis://`` URL (a fresh key prefix per test, deleted after it)."""
    return "memory://"


@pytest.fixture
def arc_celery_app(arc_broker_url: str) -> Iterator[Any]:
    """The Celery app ``arc_worker_runtime`` installs our tasks on. To use Celery's own
    ``celery_app`` fixture instead, override this to return it."""
    from celery import Celery

    app = Celery(f"arc-test-{uuid.uuid4().hex[:8]}", broker=arc_broker_url, set_as_current=False)
    app.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json",
                    worker_hijack_root_logger=False, broker_connection_retry_on_startup=False)
    if arc_broker_url.startswith("memory://"):
        app.conf.broker_transport_options = {"polling_interval": 0.01}  # (1 s by default: each tick would wait)
    yield app
    from .kit import drop_queue

    drop_queue(app)  # (after the worker and the runtime: the app's fixture goes last)


@pytest.fixture
def arc_worker(arc_celery_app: Any) -> Iterator[Any]:
    """An in-process Celery worker (2 threads) on ``arc_celery_app``, started after our
    tasks are installed. To use Celery's ``celery_worker`` instead, override this to
    return it."""
    from celery.contrib.testing.worker import start_worker

    from ..tasks import settings_for
    from .kit import stop_promptly

    # Its own node name: on RabbitMQ a second worker of the same name dies at start (its
    # remote-control queue is exclusive), and Celery's default names every one in a process alike.
    name = f"arc-test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    with start_worker(arc_celery_app, pool="threads", concurrency=2, perform_ping_check=False,
                      queues=[settings_for(arc_celery_app).queue], shutdown_timeout=10,
                      loglevel="WARNING", hostname=name) as worker:
        yield worker
        stop_promptly(worker)


@pytest.fixture
def arc_worker_runtime(request: pytest.FixtureRequest, arc_kit: Kit, arc_registry: Any,
                       arc_settings: Optional[Settings], arc_celery_app: Any,
                       arc_store_url: str) -> Iterator[ScheduledRuntime]:
    """A runtime whose ticks go through the broker to a real in-process Celery worker."""
    from .kit import consume, forget, worker_runtime

    sr = worker_runtime(arc_celery_app, arc_registry, arc_settings, arc_store_url)
    try:
        consume(request.getfixturevalue("arc_worker"), sr)  # the worker starts after the install
        arc_kit.attach(sr)
        yield sr
    finally:
        forget(sr)
