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
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from . import scripts
from .context import Fence, Op, TickContext, Write, settle
from .errors import LeaseLostError
from .keys import Keys

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

    def acquire(self, run_id: str) -> Lease | None: ...
    def acquire_reading(self, run_id: str, reads: Sequence[Op]) -> tuple[Lease | None, list[Any]]: ...
    def renew(self, lease: Lease) -> bool: ...
    def release(self, lease: Lease, ctx: TickContext | None = None) -> bool: ...
    def is_held(self, run_id: str) -> bool: ...
    def holds(self, key: str, token: str) -> bool: ...


class RedisLeases:
    """Leases in Redis: ``{p}lease:<id>`` (token) and ``{p}pending:<id>``."""

    def __init__(self, client: Any, keys: Keys, ttl_s: float) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._acquire = scripts.register(client, "lease_acquire")
        self._release = scripts.register(client, "lease_release")
        self._renew = scripts.register(client, "lease_renew")
        self._many = scripts.register(client, "hincrby_many")
        # Tokens of reserved leases whose acquire has not been sent yet (see ``reserve``):
        # the keeper thread must not renew them (there is nothing in Redis to renew).
        self._unsent: set[str] = set()
        self._unsent_lock = threading.Lock()

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def _call(self, run_id: str, token: str) -> tuple[list[str], list[Any]]:
        return [self.keys.lease(run_id), self.keys.pending(run_id)], [token, self._ttl_ms]

    def acquire(self, run_id: str) -> Lease | None:
        """Take the lease, or return None (and leave a pending word) if another holds it."""
        return self.acquire_reading(run_id, ())[0]

    def acquire_reading(self, run_id: str, reads: Sequence[Op]) -> tuple[Lease | None, list[Any]]:
        """Take the lease and run ``reads`` in the same round trip; their results (or
        errors, as values: the caller holds the lease and must release it) follow."""
        token = uuid.uuid4().hex
        keys, args = self._call(run_id, token)
        pipe = self.client.pipeline(transaction=False)
        scripts.call_in(pipe, self._acquire, keys, args)
        for read in reads:
            read(pipe)
        got, *results = pipe.execute(raise_on_error=False)
        got = scripts.settle(got, self._acquire, keys, args)
        return (Lease(run_id, keys[0], token) if int(got) == 1 else None), results

    def reserve(self, ctx: TickContext, run_id: str) -> Lease:
        """Take the lease of a run that most likely does not exist yet (a start) without a
        round trip of its own: the acquire is queued first in the tick's write queue and
        goes with its first write. The tick sends that write before any node runs
        (the create is a commit), so no node runs unless the acquire succeeded."""
        token = uuid.uuid4().hex
        keys, args = self._call(run_id, token)
        script = self._acquire

        def taken(got: Any) -> None:
            self._sent(token)
            if int(got) != 1:
                raise LeaseLostError(run_id)

        with self._unsent_lock:
            self._unsent.add(token)
        ctx.queue.add(self.client, lambda target: scripts.call_in(target, script, keys, args), taken)
        return Lease(run_id, keys[0], token)

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

    def release(self, lease: Lease, ctx: TickContext | None = None) -> bool:
        """Give the lease back, in one round trip with the tick's queued writes: the writes
        before the release script, counters and cleanups after it. True if a tick was
        asked for while we held it.

        Raises:
            Exception: a queued write was refused (LeaseLostError, RunControlledError, ...)
                or failed; the lease is released (if still ours) all the same.
        """
        keys, args = [lease.key, self.keys.pending(lease.run_id)], [lease.token]
        self._sent(lease.token)  # sent now at the latest (its check runs below)
        items = ctx.queue.take(self.client) if ctx is not None else []
        after: list[Write] = []
        if ctx is not None:
            after = [Write(self.client, self._counts_op(key, counts)) for (_, key), (_, counts)
                     in ctx.queue.counts.items()] + ctx.queue.after
            ctx.queue.after, ctx.queue.counts = [], {}
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            item.op(pipe)
        scripts.call_in(pipe, self._release, keys, args)
        for item in after:
            item.op(pipe)
        results = pipe.execute(raise_on_error=False)
        n = len(items)
        refused: Exception | None = None
        try:  # first, in order: a NOSCRIPT'd save must run again while we still hold the lease
            settle(self.client, items, results[:n])
        except Exception as exc:
            refused = exc
        res = int(scripts.settle(results[n], self._release, keys, args))
        for item, result in zip(after, results[n + 1:]):
            try:
                settle(self.client, [item], [result])
            except Exception as exc:  # counters and bookkeeping: the run's state is already saved
                log.warning("a deferred write of run %s failed: %s", lease.run_id, exc)
        if res < 0:
            log.warning("lease on run %s was lost before release", lease.run_id)
        if refused is not None:
            raise refused
        return res == 1

    def _counts_op(self, key: str, counts: Any) -> Op:
        """One command for all of a tick's counts of one hash (one reply per op)."""
        items = [(f, n) for f, n in counts.items() if n] or [(next(iter(counts)), 0)]
        if len(items) == 1:
            return lambda pipe: pipe.hincrby(key, items[0][0], items[0][1])
        script, flat = self._many, [x for f, n in items for x in (f, n)]
        return lambda pipe: scripts.call_in(pipe, script, [key], flat)

    def is_held(self, run_id: str) -> bool:
        return bool(self.client.exists(self.keys.lease(run_id)))

    def holds(self, key: str, token: str) -> bool:
        """True if the lease key still holds ``token`` (the fence of non-Redis stores)."""
        value = self.client.get(key)
        if isinstance(value, bytes):
            value = value.decode()
        return value == token


class LocalLeases:
    """Leases in this process only: the embedded mode, where one process is the cluster."""

    def __init__(self, keys: Keys, ttl_s: float) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[str, float]] = {}
        self._pending: set[str] = set()

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
            return Lease(run_id, self.keys.lease(run_id), token)

    def acquire_reading(self, run_id: str, reads: Sequence[Op]) -> tuple[Lease | None, list[Any]]:
        return self.acquire(run_id), []

    def renew(self, lease: Lease) -> bool:
        with self._lock:
            entry = self._live(lease.run_id)
            if entry is None or entry[0] != lease.token:
                return False
            self._leases[lease.run_id] = (lease.token, time.monotonic() + self.ttl_s)
            return True

    def release(self, lease: Lease, ctx: TickContext | None = None) -> bool:
        """Raises what a queued write raises (none queue in the embedded mode)."""
        if ctx is not None:
            ctx.queue.flush()
            for item in ctx.queue.after:
                reply = item.op(item.client)
                if item.check is not None:
                    item.check(reply)
            ctx.queue.after, ctx.queue.counts = [], {}
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

    def holds(self, key: str, token: str) -> bool:
        run_id = key[len(self.keys.lease("")):]
        with self._lock:
            entry = self._live(run_id)
            return entry is not None and entry[0] == token


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
        self._held: dict[str, Lease] = {}
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
                self._lost.add(lease.run_id)


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
