"""Per-run leases: at most one process mutates a run at a time, cluster-wide.

A lease is a Redis key holding a random token with a time to live. The holder
renews it while its tick runs (``LeaseKeeper``), gives it back when done, and
every save it makes is fenced: the store refuses the write unless the lease key
still holds the holder's token. A tick asked for while the lease is held is not
dropped: it leaves a *pending* word that the holder finds on release.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from .context import Fence, Op, TickContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """A lease we hold on one run."""

    run_id: str
    key: str
    token: str

    @property
    def fence(self) -> Fence:
        return Fence(self.key, self.token)


class Leases(Protocol):
    """What the tick path needs from a lease backend."""

    ttl_s: float

    def acquire(self, run_id: str, message_id: str = "") -> Lease | None: ...
    def acquire_reading(self, run_id: str, reads: Sequence[Op],
                        message_id: str = "") -> tuple[Lease | None, list[Any] | None]: ...
    def renew(self, lease: Lease) -> bool: ...
    def release(self, lease: Lease, ctx: TickContext) -> bool: ...
    def is_held(self, run_id: str) -> bool: ...
    def holds(self, key: str, token: str) -> bool: ...
    def claim(self, run_ids: Sequence[str]) -> dict[str, str]:
        """The runs no tick holds and none is queued for, each with the id of the tick
        message to send it (noted as the run's pending tick, so the next sweep and the
        run's own follow-up send none while it is queued)."""
        ...


class LeaseKeeper:
    """One daemon thread per process that renews every lease held here, every ttl/3.

    A tick that outlives its lease (a long effect) keeps it; a process that is
    frozen, cut off, or held by one long C call that keeps the GIL loses it, and
    its late save is refused by the fence. The keeper notes when it last got to
    run, so a tick that lost its lease can say why (``starved_s``).
    """

    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self._lock = threading.Lock()
        self._held: dict[str, Lease] = {}  # by token: a stale tick of a run never drops a newer one's
        self._lost: set[str] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._last_round = time.monotonic()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._loop, name="arc-lease-keeper", daemon=True)
        self._thread.start()

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._held[lease.token] = lease
            self._lost.discard(lease.token)
            self._ensure_thread()

    def drop(self, lease: Lease) -> bool:
        """Stop renewing; True if the lease was seen lost while held."""
        with self._lock:
            self._held.pop(lease.token, None)
            lost = lease.token in self._lost
            self._lost.discard(lease.token)
            return lost

    def starved_s(self) -> float:
        """Seconds since the keeper last renewed: far over ttl/3 means it could not run."""
        return time.monotonic() - self._last_round

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.leases.ttl_s / 3.0)
            self._last_round = time.monotonic()
            with self._lock:
                leases = list(self._held.values())
            for lease in leases:
                self._renew_one(lease)

    def _renew_one(self, lease: Lease) -> None:
        try:
            ok = self.leases.renew(lease)
        except Exception:  # a blip: the next round tries again, the fence guards
            log.exception("renewing lease on run %s failed", lease.run_id)
            return
        if not ok:
            log.warning("lease on run %s lost while its tick runs", lease.run_id)
            with self._lock:
                self._lost.add(lease.token)


def wait_for_lease(leases: Leases, run_id: str, timeout: float,
                   sleep: Callable[[float], None] = time.sleep) -> Lease | None:
    """Take the lease, waiting up to ``timeout`` seconds for its holder to let go."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        lease = leases.acquire(run_id)
        if lease is not None or time.monotonic() >= deadline:
            return lease
        sleep(delay)
        delay = min(delay * 2, 0.1)
