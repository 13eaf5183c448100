"""How a tick gets to a worker: a Celery message, or the embedded in-process queue.

Messages carry a run id and a reason only; the store and the inbox hold the data.
The embedded dispatcher is the same contract in one process: a few worker threads
and a timer heap, so the seed's zero-config quick start runs with no server and
its timers fire on time instead of on a 1 s poll.
"""

from __future__ import annotations

import heapq
import itertools
import math
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable, Optional

from .timers import MIN_ETA_S

log = logging.getLogger(__name__)

TICK_TASK = "abstractruntime.tick"
START_TASK = "abstractruntime.start"
#: Kept registered for messages of earlier versions; new events are sent as ticks.
RESUME_TASK = "abstractruntime.resume"
SWEEP_TASK = "abstractruntime.sweep"
#: The message header naming the sender's store (``identity.py``); older workers ignore it.
IDENTITY_HEADER = "arc_store"


def _broker_errors() -> tuple[type[BaseException], ...]:
    """What a publish raises when the broker is unreachable: kombu wraps the transport's
    connection errors in its ``OperationalError``; a socket error may still get through."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

    return (OperationalError, OSError, RedisConnectionError, RedisTimeoutError)


BROKER_ERRORS = _broker_errors()


class CeleryDispatcher:
    """Sends tick messages through a Celery app. Each names the sender's store in a header
    (``identity.HEADER``: ``identity``, set by ``driver.build``), so a worker reading another
    store puts it back instead of dropping it; older workers ignore the header."""

    def __init__(self, app: Any, queue: str, identity: Optional[str] = None) -> None:
        self.app = app
        self.queue = queue
        self.identity = identity
        self.min_eta_s = MIN_ETA_S if uses_native_delayed_delivery(app) else 0.0

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        """Send a tick message for ``run_id`` (``eta``: not before then; ``message_id``: its
        task id, when the run's own next tick must be known by it).

        Raises:
            DispatchError: the broker cannot be reached (a ``ConnectionError`` naming the run,
                the broker with its password masked, and the cause).
        """
        countdown = None
        if eta is not None and self.min_eta_s > 0:
            countdown, eta = whole_seconds(eta, reason), None
        try:
            self.app.send_task(TICK_TASK, args=[run_id], kwargs={"reason": reason}, queue=self.queue, eta=eta,
                               countdown=countdown, task_id=message_id,
                               headers={IDENTITY_HEADER: self.identity} if self.identity else None)
        except BROKER_ERRORS as exc:
            from .errors import DispatchError
            from .redact import redact_url

            where = redact_url(str(self.app.conf.broker_url or ""))
            cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            raise DispatchError(run_id, reason, f"{where}: {cause}") from None


def whole_seconds(eta: datetime, reason: str, now: Optional[float] = None) -> Optional[int]:
    """The delay of ``eta`` in whole seconds, for native delayed delivery, or None (send now).

    Native delayed delivery counts whole seconds and raises ValueError for a delay under
    one (kombu's ``calculate_routing_key``); given an ETA, Celery truncates ``eta - now``
    itself, so a delay of 1.0 s decided in a tick is 0.99 s when published and the send
    fails. A whole countdown made here cannot. A retry rounds up (one delivered early is
    only sent again); a timer rounds down (one delivered early is armed again, and the
    worker waits out the last second: ``Ticker._wait_out_short_remainder``). Raises nothing.
    """
    ahead = eta.timestamp() - (time.time() if now is None else now)
    whole = math.ceil(ahead) if reason == "retry" else math.floor(ahead)
    if whole >= 1:
        return whole
    return 1 if reason == "retry" and ahead > 0 else None


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


#: (run id, reason, message id or None): tick the run.
TickHandler = Callable[[str, str, Optional[str]], Any]
#: A tick waiting to be run: (run id, reason, message id or None).
Held = tuple[str, str, Optional[str]]


class LocalDispatcher:
    """An in-memory broker with an embedded worker: a thread pool and a timer heap.

    While it is stopped (``auto_start=False``, or after ``stop()``), ticks are held,
    not dropped: ``start()`` sends them, ``take_held()`` hands them to a caller that
    ticks them itself (``Scheduler.poll_once``).
    """

    min_eta_s = 0.0

    def __init__(self, handler: TickHandler, workers: int = 4) -> None:
        self._handler = handler
        self._workers = workers
        self._pool: Optional[ThreadPoolExecutor] = None
        self._heap: list[tuple[float, int, str, str, Optional[str]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._timer: Optional[threading.Thread] = None
        self._stopping = False
        self._held: list[Held] = []
        self._queued: dict[Future[Any], Held] = {}

    @property
    def running(self) -> bool:
        return self._pool is not None

    def start(self) -> None:
        with self._cond:
            if self._pool is not None:
                return
            self._stopping = False
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="arc-embedded")
            self._timer = threading.Thread(target=self._timer_loop, name="arc-embedded-timer", daemon=True)
            self._timer.start()
            held, self._held = self._held, []
            for item in held:
                self._submit(*item)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking ticks: queued ones are held for the next start (not run now);
        waits at most ``timeout`` seconds for the ticks already running."""
        deadline = time.monotonic() + timeout
        with self._cond:
            pool, self._pool = self._pool, None
            self._stopping = True
            self._cond.notify_all()
            queued = list(self._queued.items())
        for future, item in queued:
            if future.cancel():
                with self._cond:
                    self._held.append(item)
        if self._timer is not None:
            self._timer.join(max(0.0, deadline - time.monotonic()))
            self._timer = None
        with self._cond:
            self._held.extend((run_id, reason, mid) for _, _, run_id, reason, mid in self._heap)
            self._heap.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            for future in [f for f, _ in queued if not f.cancelled()]:
                try:
                    future.result(timeout=max(0.0, deadline - time.monotonic()))
                except Exception:  # timed out, or the tick raised (logged by _run)
                    pass

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        when = eta.timestamp() if eta is not None else 0.0
        with self._cond:
            if self._pool is None:
                self._held.append((run_id, reason, message_id))
                return
            if when <= time.time():
                self._submit(run_id, reason, message_id)
                return
            heapq.heappush(self._heap, (when, next(self._seq), run_id, reason, message_id))
            self._cond.notify()

    def take_held(self) -> list[Held]:
        """The ticks held while stopped (the caller runs them)."""
        with self._cond:
            held, self._held = self._held, []
        return held

    def wake(self) -> None:
        """Look at the timer heap again now: the clock was moved (the test kit's virtual
        clock), and ticks that were hours away may be due."""
        with self._cond:
            self._cond.notify_all()

    def next_eta(self) -> Optional[float]:
        """The epoch second of the earliest tick waiting in the heap, or None."""
        with self._cond:
            return self._heap[0][0] if self._heap else None

    def busy(self) -> bool:
        """True while a tick is queued or running, or one in the heap is due now."""
        with self._cond:
            return bool(self._queued) or bool(self._heap and self._heap[0][0] <= time.time())

    def _submit(self, run_id: str, reason: str, message_id: Optional[str] = None) -> None:
        assert self._pool is not None
        future = self._pool.submit(self._run, run_id, reason, message_id)
        self._queued[future] = (run_id, reason, message_id)
        future.add_done_callback(self._forget)

    def _forget(self, future: "Future[Any]") -> None:
        with self._cond:  # (an RLock: the callback may run in the submitting thread)
            self._queued.pop(future, None)

    def _run(self, run_id: str, reason: str, message_id: Optional[str]) -> None:
        try:
            self._handler(run_id, reason, message_id)
        except Exception:
            log.exception("embedded tick of run %s failed", run_id)

    def _timer_loop(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait()
                    continue
                when, _, run_id, reason, message_id = self._heap[0]
                delay = when - time.time()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                if self._pool is not None:
                    self._submit(run_id, reason, message_id)
