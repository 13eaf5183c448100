"""Per-run leases: at most one process mutates a run at a time, cluster-wide.

A lease is a Redis key holding a random token with a time to live. The holder
renews it while its tick runs (``LeaseKeeper``), gives it back when done, and
every save it makes is fenced: the store refuses the write unless the lease key
still holds the holder's token. A tick asked for while the lease is held is not
dropped: it leaves a *pending* word that the holder finds on release.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence

from . import _scripts
from .batch import Ahead, Op, ahead, settle_ahead

log = logging.getLogger(__name__)

#: Leases held by the current thread of execution: run_id -> (lease key, token).
_held: contextvars.ContextVar[dict[str, tuple[str, str]] | None] = contextvars.ContextVar(
    "abstractruntime_celery_held_leases", default=None
)


def current_fence(run_id: str) -> tuple[str, str] | None:
    """The (lease key, token) this context holds for ``run_id``, for fenced saves."""
    held = _held.get()
    return None if held is None else held.get(run_id)


@contextmanager
def fenced(run_id: str, key: str, token: str) -> Iterator[None]:
    """Mark ``run_id`` as leased by this context while the block runs."""
    held = dict(_held.get() or {})
    held[run_id] = (key, token)
    reset = _held.set(held)
    try:
        yield
    finally:
        _held.reset(reset)


@dataclass(frozen=True)
class Lease:
    """A lease we hold on one run."""

    run_id: str
    key: str
    token: str


class Leases(Protocol):
    """What the tick path needs from a lease backend."""

    ttl_s: float

    def acquire(self, run_id: str) -> Lease | None: ...
    def renew(self, lease: Lease) -> bool: ...
    def release(self, lease: Lease, ops: Sequence[Op] = (), ahead: Sequence[Ahead] = ()) -> bool: ...
    def is_held(self, run_id: str) -> bool: ...
    def still_ours(self, lease: Lease) -> bool: ...
    def holds(self, key: str, token: str) -> bool: ...


class RedisLeases:
    """Leases in Redis: ``<prefix>lease:<run_id>`` (token) and ``<prefix>pending:<run_id>``."""

    def __init__(self, client: Any, prefix: str, ttl_s: float) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._acquire = _scripts.register(client, "lease_acquire")
        # Tokens of reserved leases whose acquire has not been sent yet (see ``reserve``):
        # the keeper thread must not renew them (there is nothing in Redis to renew).
        self._unsent: set[str] = set()
        self._unsent_lock = threading.Lock()
        self._release = _scripts.register(client, "lease_release")
        self._renew = _scripts.register(client, "lease_renew")

    def key(self, run_id: str) -> str:
        return f"{self.prefix}lease:{run_id}"

    def _pending_key(self, run_id: str) -> str:
        return f"{self.prefix}pending:{run_id}"

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def acquire(self, run_id: str, reads: Sequence[Op] = ()) -> Lease | None:
        """Take the lease, or return None (and leave a pending word) if another holds it."""
        return self.acquire_reading(run_id, reads)[0]

    def acquire_reading(self, run_id: str, reads: Sequence[Op]) -> tuple[Lease | None, list[Any]]:
        """Take the lease and run ``reads`` in the same round trip; their results (or errors) follow."""
        token = uuid.uuid4().hex
        key = self.key(run_id)
        keys, args = [key, self._pending_key(run_id)], [token, self._ttl_ms]
        pipe = self.client.pipeline(transaction=False)
        _scripts.call_in(pipe, self._acquire, keys, args)
        for read in reads:
            read(pipe)
        got, *results = pipe.execute(raise_on_error=False)
        got = _scripts.settle(got, self._acquire, keys, args)
        # Read errors come back as values: the caller holds the lease and must release it.
        return (Lease(run_id, key, token) if int(got) == 1 else None), results

    def reserve(self, run_id: str) -> Lease:
        """Take the lease of a run whose id this process has just made up (nobody else can
        know it yet), without a round trip of its own: the acquire is queued ahead of the
        tick's first write (``batch.ahead``), and that write is fenced by it.

        Raises:
            RuntimeError: no tick is collecting writes.
        """
        token = uuid.uuid4().hex
        key = self.key(run_id)
        keys, args = [key, self._pending_key(run_id)], [token, self._ttl_ms]
        script = self._acquire

        def taken(got: Any) -> None:
            self._sent(token)
            if int(got) != 1:
                from .errors import LeaseLostError

                raise LeaseLostError(run_id)

        with self._unsent_lock:
            self._unsent.add(token)
        ahead(self.client, lambda target: _scripts.call_in(target, script, keys, args), taken)
        return Lease(run_id, key, token)

    def _sent(self, token: str) -> None:
        with self._unsent_lock:
            self._unsent.discard(token)

    def renew(self, lease: Lease) -> bool:
        """Extend the lease; False if it was lost (expired and maybe taken). A reserved lease
        not sent yet is kept as it is: its acquire, when it goes, sets a full time to live."""
        with self._unsent_lock:
            if lease.token in self._unsent:
                return True
        return bool(int(self._renew(keys=[lease.key], args=[lease.token, self._ttl_ms])))

    def release(self, lease: Lease, ops: Sequence[Op] = (), ahead: Sequence[Ahead] = ()) -> bool:
        """Give the lease back, in one round trip with the tick's queued writes:
        ``ahead`` (ledger appends) before the release script, ``ops`` (counters,
        bookkeeping) after it. True if a tick was asked for while we held it.

        Raises:
            Exception: an ``ahead`` write failed (Redis's own error); the lease is released anyway.
        """
        keys, args = [lease.key, self._pending_key(lease.run_id)], [lease.token]
        self._sent(lease.token)  # sent now at the latest (its check runs below)
        pipe = self.client.pipeline(transaction=False)
        for item in ahead:
            item.op(pipe)
        _scripts.call_in(pipe, self._release, keys, args)
        for op in ops:
            op(pipe)
        results = pipe.execute(raise_on_error=False)
        n = len(ahead)
        refused: Exception | None = None
        try:  # first, in order: a NOSCRIPT'd save must run again while we still hold the lease
            settle_ahead(self.client, list(ahead), results[:n])
        except Exception as exc:
            refused = exc
        res = int(_scripts.settle(results[n], self._release, keys, args))
        try:
            _scripts.run_ops(self.client, ops, results[n + 1:])
        except Exception as exc:  # counters and bookkeeping; the run's state is already saved
            log.warning("a deferred write of run %s failed: %s", lease.run_id, exc)
        if res < 0:
            log.warning("lease on run %s was lost before release", lease.run_id)
        if refused is not None:
            raise refused
        return res == 1

    def is_held(self, run_id: str) -> bool:
        return bool(self.client.exists(self.key(run_id)))

    def still_ours(self, lease: Lease) -> bool:
        return self.holds(lease.key, lease.token)

    def holds(self, key: str, token: str) -> bool:
        """True if the lease key still holds ``token`` (the fence of non-Redis stores)."""
        value = self.client.get(key)
        if isinstance(value, bytes):
            value = value.decode()
        return value == token


class LocalLeases:
    """Leases in this process only: the embedded mode, where one process is the cluster."""

    def __init__(self, prefix: str, ttl_s: float) -> None:
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[str, float]] = {}
        self._pending: set[str] = set()

    def key(self, run_id: str) -> str:
        return f"{self.prefix}lease:{run_id}"

    def _live(self, run_id: str) -> tuple[str, float] | None:
        entry = self._leases.get(run_id)
        if entry is not None and entry[1] <= time.monotonic():
            del self._leases[run_id]
            return None
        return entry

    def acquire(self, run_id: str) -> Lease | None:
        with self._lock:
            if self._live(run_id) is not None:
                self._pending.add(run_id)
                return None
            token = uuid.uuid4().hex
            self._leases[run_id] = (token, time.monotonic() + self.ttl_s)
            self._pending.discard(run_id)
            return Lease(run_id, self.key(run_id), token)

    def renew(self, lease: Lease) -> bool:
        with self._lock:
            entry = self._live(lease.run_id)
            if entry is None or entry[0] != lease.token:
                return False
            self._leases[lease.run_id] = (lease.token, time.monotonic() + self.ttl_s)
            return True

    def release(self, lease: Lease, ops: Sequence[Op] = (), ahead: Sequence[Ahead] = ()) -> bool:
        # In the embedded mode nothing defers its writes: ``ops`` and ``ahead`` stay empty.
        with self._lock:
            entry = self._live(lease.run_id)
            if entry is None or entry[0] != lease.token:
                return False
            del self._leases[lease.run_id]
            asked = lease.run_id in self._pending
            self._pending.discard(lease.run_id)
            return asked

    def is_held(self, run_id: str) -> bool:
        with self._lock:
            return self._live(run_id) is not None

    def still_ours(self, lease: Lease) -> bool:
        with self._lock:
            entry = self._live(lease.run_id)
            return entry is not None and entry[0] == lease.token

    def holds(self, key: str, token: str) -> bool:
        run_id = key[len(self.key("")):]
        return self.still_ours(Lease(run_id, key, token))


class LeaseKeeper:
    """One daemon thread per process that renews every lease held here, every ttl/3.

    A tick that outlives its lease (a long effect) keeps it; a process that is
    frozen or cut off loses it, and its late save is refused by the fence.
    """

    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self._lock = threading.Lock()
        self._held: dict[str, Lease] = {}
        self._lost: set[str] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _ensure_thread(self) -> None:
        import os

        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._loop, name="arc-lease-keeper", daemon=True)
        self._thread.start()

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._held[lease.run_id] = lease
            self._lost.discard(lease.run_id)
            self._ensure_thread()

    def drop(self, lease: Lease) -> bool:
        """Stop renewing; True if the lease was seen lost while held."""
        with self._lock:
            self._held.pop(lease.run_id, None)
            lost = lease.run_id in self._lost
            self._lost.discard(lease.run_id)
            return lost

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.leases.ttl_s / 3.0)
            with self._lock:
                leases = list(self._held.values())
            for lease in leases:
                try:
                    ok = self.leases.renew(lease)
                except Exception:  # a blip: the next round tries again, the fence guards
                    log.exception("renewing lease on run %s failed", lease.run_id)
                    continue
                if not ok:
                    log.warning("lease on run %s lost while its tick runs", lease.run_id)
                    with self._lock:
                        self._lost.add(lease.run_id)
