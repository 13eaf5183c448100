"""A virtual clock for tests: ``advance(hours=24)`` fires every timer that falls due.

The clock is time-machine's: ``time.time()`` and ``datetime.now()`` move in every
thread of the process, so a node computing ``until = now + 24h`` and the driver
comparing it agree. ``time.monotonic()`` is left alone (leases, sleeps and Celery's
own timers keep real time).

``advance`` walks the deadlines in order, like a discrete-event simulation: it moves
the clock to the next deadline that falls within the step (a run's ``until`` in the
store, or a tick waiting in the embedded worker's heap), fires what is due, waits
until the ticks that causes are done (``settle``), and goes on; a timer a fired
node sets within the step fires too. Timers are fired by sending the run a tick now
(the path the sweep takes), so this works embedded, with an in-process Celery
worker, and on brokers that hold delayed messages themselves (RabbitMQ quorum
queues); the message armed earlier arrives later as a harmless duplicate.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Optional

from abstractruntime import RunStatus

from ..dispatch import LocalDispatcher
from ..errors import ConfigError
from ..isotime import from_epoch, to_epoch
from ..runstate import paused
from .settle import SCAN_LIMIT, settle

#: Deadlines one ``advance`` may step through (a timer loop that re-arms itself within
#: the step fires this many times at most before the kit calls it runaway).
MAX_DEADLINES = 10_000


def _time_machine() -> Any:
    """Raises ConfigError when time-machine is not installed."""
    try:
        import time_machine
    except ImportError as exc:
        raise ConfigError("the test kit's virtual clock needs time-machine: "
                          "pip install 'abstractruntime-celery[testing]'") from exc
    return time_machine


class VirtualClock:
    """The process's wall clock, moved by the test. ``drivers`` returns the drivers whose
    runs ``advance`` fires (the test kit's runtimes)."""

    def __init__(self, drivers: Callable[[], Iterable[Any]] = lambda: ()) -> None:
        self._drivers = drivers
        self._travel: Any = None
        self._traveller: Any = None
        self.fired: list[tuple[str, str]] = []

    def start(self) -> "VirtualClock":
        """Take over the clock (it goes on from the real now, ticking).

        Raises:
            ConfigError: time-machine is not installed.
        """
        if self._travel is None:
            self._travel = _time_machine().travel(time.time(), tick=True)
            self._traveller = self._travel.start()
        return self

    def stop(self) -> None:
        """Give the real clock back."""
        if self._travel is not None:
            self._travel.stop()
            self._travel = self._traveller = None

    def now(self) -> datetime:
        """The virtual now, in UTC."""
        return datetime.now(timezone.utc)

    def advance(self, delta: timedelta | float | None = None, *, days: float = 0, hours: float = 0,
                minutes: float = 0, seconds: float = 0, timeout: float = 30.0) -> list[str]:
        """Move the clock forward, firing every timer that falls due on the way, in
        deadline order, and running the ticks each causes before going on. Returns the
        ids of the runs whose timers fired, in the order they fired.

        Raises:
            ValueError: a negative step.
            SettleTimeout: ticks were still due ``timeout`` real seconds after a firing.
            RuntimeError: the clock is not started, or more than ``MAX_DEADLINES`` deadlines
                fell within the step (a timer that re-arms itself at once).
        """
        if self._traveller is None:
            raise RuntimeError("the virtual clock is not started (use the arc_clock fixture)")
        step = delta.total_seconds() if isinstance(delta, timedelta) else float(delta or 0.0)
        step += days * 86400 + hours * 3600 + minutes * 60 + seconds
        if step < 0:
            raise ValueError(f"the clock only moves forward, got a step of {step:g} s")
        target = time.time() + step
        fired: list[str] = []
        drivers = list(self._drivers())
        for _ in range(MAX_DEADLINES):
            for driver in drivers:
                settle(driver, timeout)
            due = min((d for d in (_next_deadline(x, target) for x in drivers) if d is not None), default=None)
            if due is None:
                break
            # Read what falls due before the clock moves: once it has, the embedded worker's
            # timer heap may fire some first, and they would be missed from the report.
            waits = [(driver, _waiting_until(driver, due)) for driver in drivers]
            if due > time.time():
                self._traveller.move_to(due)
            for driver, found in waits:
                fired += self._fire(driver, found)
        else:
            raise RuntimeError(f"more than {MAX_DEADLINES} deadlines fell within one advance of {step:g} s")
        if target > time.time():
            self._traveller.move_to(target)
        for driver in drivers:
            settle(driver, timeout)
        return fired

    def _fire(self, driver: Any, due: list[tuple[float, str, str]]) -> list[str]:
        """Send a tick now to each run of ``due`` that no tick holds or is queued for
        (that one takes the timer with it); returns their ids, in deadline order."""
        if isinstance(driver.dispatcher, LocalDispatcher):
            driver.dispatcher.wake()  # ticks already in its heap (timers, retries) that are due now
        claimed = driver.coord.leases.claim([run_id for _, run_id, _ in due])
        for _, run_id, until in due:
            if run_id in claimed:
                driver.send(run_id, "timer", None, claimed[run_id])
            self.fired.append((run_id, until))
        return [run_id for _, run_id, _ in due]


def _waiting_until(driver: Any, when: float) -> list[tuple[float, str, str]]:
    """(deadline, run id, until) of the runs whose wait falls due by ``when``, earliest first."""
    runs = driver.run_store.list_due_wait_until(now_iso=from_epoch(when), limit=SCAN_LIMIT)
    found = []
    for run in runs:
        if _waits_until(run):
            try:
                deadline = to_epoch(run.waiting.until)
            except ValueError:
                continue
            if deadline <= when:
                found.append((deadline, run.run_id, run.waiting.until))
    return sorted(found, key=lambda item: item[0])


def _waits_until(run: Any) -> bool:
    waiting = run.waiting
    return (run.status == RunStatus.WAITING and waiting is not None and bool(waiting.until)
            and not paused(run))


def _next_deadline(driver: Any, target: float) -> Optional[float]:
    """The earliest deadline at or before ``target``: a run's ``until``, or (embedded) a
    tick waiting in the heap; None if there is none."""
    found = [deadline for deadline, _, _ in _waiting_until(driver, target)[:1]]
    if isinstance(driver.dispatcher, LocalDispatcher):
        eta = driver.dispatcher.next_eta()
        if eta is not None and eta <= target:
            found.append(eta)
    return min(found) if found else None
