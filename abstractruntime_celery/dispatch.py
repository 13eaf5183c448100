"""How a tick gets to a worker: a Celery message, or the embedded in-process queue.

Messages carry ids only (run id, event id, a reason); the store and the inbox
hold the data. The embedded dispatcher is the same contract in one process: a
few worker threads and a timer heap, so the seed's zero-config quick start runs
with no server and its timers fire on time instead of on a 1 s poll.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable, Protocol

from .batch import flush_all
from .timers import MIN_ETA_S

log = logging.getLogger(__name__)

TICK_TASK = "abstractruntime.tick"
START_TASK = "abstractruntime.start"
RESUME_TASK = "abstractruntime.resume"
SWEEP_TASK = "abstractruntime.sweep"


class Dispatcher(Protocol):
    #: Shortest delay the transport accepts as an ETA (see timers.MIN_ETA_S).
    min_eta_s: float

    def tick(self, run_id: str, *, reason: str = "tick", eta: datetime | None = None,
             event_id: str | None = None) -> None: ...


class CeleryDispatcher:
    """Sends tick and resume messages through a Celery app."""

    def __init__(self, app: Any, queue: str) -> None:
        self.app = app
        self.queue = queue
        self.min_eta_s = MIN_ETA_S if uses_native_delayed_delivery(app) else 0.0

    def tick(self, run_id: str, *, reason: str = "tick", eta: datetime | None = None,
             event_id: str | None = None) -> None:
        """Send a tick (or a resume) message; what this tick queued lands first.

        Raises:
            Exception: a queued save refused (LeaseLostError, ...) or the broker's error.
        """
        flush_all()
        if event_id is not None:
            self.app.send_task(RESUME_TASK, args=[run_id, event_id], queue=self.queue, eta=eta)
        else:
            self.app.send_task(TICK_TASK, args=[run_id], kwargs={"reason": reason},
                               queue=self.queue, eta=eta)


def uses_native_delayed_delivery(app: Any) -> bool:
    """True when Celery routes ETAs through RabbitMQ's native delayed delivery
    (amqp broker with quorum queues), which refuses delays under one second."""
    url = str(app.conf.broker_url or "")
    if not url.startswith(("amqp", "pyamqp")):
        return False
    if str(app.conf.get("task_default_queue_type", "")) == "quorum":
        return True
    for queue in app.conf.task_queues or []:
        args = getattr(queue, "queue_arguments", None) or {}
        if args.get("x-queue-type") == "quorum":
            return True
    return False


TickHandler = Callable[[str, str], Any]


class LocalDispatcher:
    """An in-memory broker with an embedded worker: a thread pool and a timer heap."""

    min_eta_s = 0.0

    def __init__(self, handler: TickHandler, workers: int = 4) -> None:
        self._handler = handler
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._timer: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        with self._cond:
            if self._pool is not None:
                return
            self._stopping = False
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="arc-embedded")
            self._timer = threading.Thread(target=self._timer_loop, name="arc-embedded-timer", daemon=True)
            self._timer.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            pool, self._pool = self._pool, None
            self._stopping = True
            self._cond.notify_all()
        if self._timer is not None:
            self._timer.join(timeout)
            self._timer = None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=False)

    def tick(self, run_id: str, *, reason: str = "tick", eta: datetime | None = None,
             event_id: str | None = None) -> None:
        flush_all()  # what this tick queued lands before anyone looks
        when = eta.timestamp() if eta is not None else 0.0
        with self._cond:
            if self._pool is None:
                return  # stopped: the store keeps the run; the next start's sweep finds it
            if when <= time.time():
                self._submit(run_id, reason)
                return
            heapq.heappush(self._heap, (when, next(self._seq), run_id, reason))
            self._cond.notify()

    def _submit(self, run_id: str, reason: str) -> None:
        assert self._pool is not None
        self._pool.submit(self._run, run_id, reason)

    def _run(self, run_id: str, reason: str) -> None:
        try:
            self._handler(run_id, reason)
        except Exception:
            log.exception("embedded tick of run %s failed", run_id)

    def _timer_loop(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait()
                    continue
                when, _, run_id, reason = self._heap[0]
                delay = when - time.time()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                if self._pool is not None:
                    self._submit(run_id, reason)
