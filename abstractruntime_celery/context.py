"""The tick context: everything one leased tick carries, in one object you can see.

A ``TickContext`` is created when a tick takes its lease and passed explicitly
through the tick path (``tick.py``). AbstractRuntime calls our stores and our
effect wrappers without a way to pass it, so at those seams (and only there) it
is found with ``current()``: one ambient lookup of the one object.

It holds:

* ``fences``: the leases held, run id -> (lease key, token); every save and
  ledger append of those runs is fenced by them;
* ``queue``: writes that ride the next round trip the tick makes anyway
  (``WriteQueue``), with one flush rule: what a refused save invalidates is
  dropped with it;
* ``control``: the cancel/pause state the tick last confirmed for its run;
* ``applying``: the inbox events the next save of the run commits (the save
  script drops them from the inbox in the same atomic step, and counts
  ``applying_hist``, their resume latency, only then);
* ``listeners`` and ``children``: runs the tick must send ticks to when it is done;
* ``handoff``: the run as read with the lease, for the Runtime's first load;
* ``notices``: what to tell ``on_run_resumed``/``on_run_failed`` after the release.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple, Optional

from abstractruntime import RunState

Op = Callable[[Any], Any]
Check = Callable[[Any], None]
#: Control fields as the Redis run store keeps them: (status value, paused).
Control = tuple[str, bool]


class Fence(NamedTuple):
    """A lease held: every fenced write checks ``GET key == token`` atomically."""

    key: str
    token: str


class Write(NamedTuple):
    """One queued write: ``op(target)`` queues it on a pipeline (or runs it on a client);
    ``check(reply)`` raises if the reply says it was refused; ``commit``: it saves run
    state, which must land before the tick runs another node or tells anyone to look."""

    client: Any
    op: Op
    check: Optional[Check] = None
    commit: bool = False


@dataclass
class QueuedSave:
    """The tick's last save of its own run while it is still queued: what the tick says about
    its commit (counters, the "resumed" notice, events to drop, notes to clear) can ride it as
    save options (``lua/save_run.lua``) instead of a command of its own (``lua/if_saved.lua``)."""

    write: "Write"
    args: list[Any]
    updated: str
    #: Called once the save is known to have landed.
    on_landed: list[Callable[[], None]] = field(default_factory=list)

    def queued_in(self, queue: "WriteQueue") -> bool:
        return any(w is self.write for w in queue.writes)


def _pool(client: Any) -> Any:
    return getattr(client, "connection_pool", client)


class WriteQueue:
    """Writes a tick puts off to send them with a round trip it makes anyway.

    ``writes`` (ledger appends, the tick's own saves, a start's create) go out in
    the order they were made, first in the pipeline of the next save, read or
    message, or with the lease release. ``after`` (counters, cleanups) go after
    the release script in the release pipeline. Redis runs a pipeline in order,
    so the Runtime's order of writes is kept; only round trips go.
    """

    def __init__(self, owner: str = "") -> None:
        #: The run of the tick: only a refusal of its own writes is remembered (a synchronous
        #: child's refusal is the child's: its parent goes on).
        self.owner = owner
        self.writes: list[Write] = []
        self.after: list[Write] = []
        self.counts: dict[tuple[int, str], tuple[Any, Counter[str]]] = {}
        #: The first refusal a send met (lease lost, a cancel or pause landed). Kept: every
        #: later write or send raises it again, so a caller that swallowed it (AbstractRuntime's
        #: control probe does) cannot run another node as if nothing had happened.
        self.refused: Optional[BaseException] = None

    def check(self) -> None:
        """Raises the refusal this tick met, if any."""
        if self.refused is not None:
            raise self.refused

    def add(self, client: Any, op: Op, check: Check | None = None, *, commit: bool = False) -> Write:
        self.check()
        item = Write(client, op, check, commit)
        self.writes.append(item)
        return item

    def add_after(self, client: Any, op: Op, check: Check | None = None) -> None:
        """A write that goes after the release script (a cleanup, a timer note), with
        ``check`` seeing its reply."""
        self.after.append(Write(client, op, check))

    def withdraw(self, item: Write) -> bool:
        """Take ``item`` back out if it has not been sent; True if it was still queued."""
        for i, queued in enumerate(self.writes):
            if queued is item:
                del self.writes[i]
                return True
        return False

    def has_commit(self) -> bool:
        return any(w.commit for w in self.writes)

    def count(self, client: Any, key: str, name: str, by: int = 1) -> None:
        """Add to a counter of hash ``key``; all of a tick's counts go out as one command."""
        slot = (id(_pool(client)), key)
        if slot not in self.counts:
            self.counts[slot] = (client, Counter())
        self.counts[slot][1][name] += by

    def take(self, client: Any) -> list[Write]:
        """The queued writes for ``client``'s Redis, in order, handed over for sending in a
        pipeline of it (then ``settle``). Writes for another Redis go out first, on their own.

        Raises:
            Exception: as ``settle``, for those other writes.
        """
        items, self.writes = self.writes, []
        mine = [w for w in items if _pool(w.client) is _pool(client)]
        for other in (w for w in items if _pool(w.client) is not _pool(client)):
            settle(other.client, [other], [other.op(other.client)])
        return mine

    def flush(self) -> None:
        """Send every queued write now, one pipeline per Redis (a node or a message is next).

        Raises:
            Exception: the first refused write (LeaseLostError, RunControlledError, ...).
            StoreUnavailableError: a Redis dropped, refused or timed out the send (the store's
                fault, never counted as the node's: ``tick._step``).
        """
        from .errors import StoreUnavailableError
        from .stores.redis.connection import redis_errors

        self.check()
        while self.writes:
            client = self.writes[0].client
            try:
                with redis_errors(client):
                    items = self.take(client)
                    pipe = client.pipeline(transaction=atomic(len(items)))
                    for item in items:
                        item.op(pipe)
                    self.settle(client, items, pipe.execute(raise_on_error=False))
            except StoreUnavailableError as exc:
                exc.write_dropped = True  # (ours: not an error a node raised)
                raise

    def settle(self, client: Any, items: list[Write], results: list[Any]) -> None:
        """``settle``, remembering a refusal (see ``refused``).

        Raises:
            Exception: as ``settle``.
        """
        try:
            settle(client, items, results)
        except BaseException as exc:
            if getattr(exc, "run_id", self.owner) == self.owner:
                self.refused = self.refused or exc
            raise

    def send_before(self, client: Any, then: Op | None = None) -> Any:
        """Send the queued writes in one pipeline with ``then`` (a read or write that must
        see them) last; returns ``then``'s reply (None without one). A NOSCRIPT reply is
        returned as it is, for the caller's ``scripts.settle``. A read that went out behind
        a write the server answered NOSCRIPT (it ran nothing, and ``settle`` runs it again
        after the pipeline) saw the state before that write: it is read again after it.

        Raises:
            Exception: as ``settle``; or ``then``'s own Redis error.
        """
        from redis.exceptions import NoScriptError

        self.check()
        items = self.take(client)
        if not items:
            return then(client) if then is not None else None
        pipe = client.pipeline(transaction=atomic(len(items) + (then is not None)))
        for item in items:
            item.op(pipe)
        scripted = False
        if then is not None:
            queued = len(pipe.command_stack)
            then(pipe)
            scripted = _scripts_in(pipe, queued)
        results = pipe.execute(raise_on_error=False)
        self.settle(client, items, results[:len(items)])
        reply = results[-1] if then is not None else None
        if then is not None and not scripted and any(isinstance(r, NoScriptError) for r in results[:len(items)]):
            reply = then(client)  # (the writes have run now: a read, so safe to run again)
        if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
            raise reply
        return reply


def atomic(commands: int) -> bool:
    """Whether a pipeline of ``commands`` needs MULTI/EXEC: several writes go as one atomic
    step (all or none, and the guards in their scripts see one state); one command (a
    script) is atomic on its own, and MULTI/EXEC around it is two commands for nothing.
    (A start's lease acquire and create stay in MULTI: sent apart, a connection cut or a
    script reload between them left a lease without a run, and the start was lost:
    ``tests/test_adv_u_split_*.py``.)"""
    return commands > 1


def _scripts_in(pipe: Any, since: int) -> bool:
    """Did the commands queued on ``pipe`` from index ``since`` on call a script? (A write of
    ours is a script; a script is never run twice: its own NOSCRIPT is its caller's to settle.)"""
    return any(str(args[0]).upper() in ("EVALSHA", "EVAL") for args, _ in pipe.command_stack[since:])


def settle(client: Any, items: list[Write], results: list[Any]) -> None:
    """After ``pipe.execute(raise_on_error=False)``: in order, run again on ``client`` a
    write whose script the server had forgotten (NOSCRIPT ran nothing), raise a Redis
    error, and let each check see its reply.

    Raises:
        Exception: the first Redis error or refused check (LeaseLostError, ...).
    """
    from redis.exceptions import NoScriptError

    from .scripts import preload

    reloaded = False
    for item, result in zip(items, results):
        if isinstance(result, NoScriptError):
            if not reloaded:  # every script at once: see below
                preload(client)
                reloaded = True
            result = item.op(client)
        elif isinstance(result, Exception):
            raise result
        if item.check is not None:
            item.check(result)
    # (Reloading only the script that failed left the server with some scripts cached and
    # some not: a later pipeline of a ledger append then a save ran the cached save first
    # and the append after it, which found the run moved on and was refused: a restarted
    # Redis lost the completed steps of the ledger of every run ticked right after.)


@dataclass
class TickContext:
    """One leased tick of ``run_id`` (see the module docstring)."""

    run_id: str
    fences: dict[str, Fence] = field(default_factory=dict)
    #: The control state this tick last saw of the other runs it holds a lease on (a synchronous
    #: child ticked inline): their saves and appends check it, as the run's own do ``control``.
    controls: dict[str, Control] = field(default_factory=dict)
    #: Those runs whose save a control action refused (the child was cancelled or paused).
    controlled: set[str] = field(default_factory=set)
    #: The id of the message this tick runs for (the run's pending tick, or another).
    message_id: Optional[str] = None
    #: Send the run a tick of its own when done, if it needs one (False: the caller drives it).
    follow_up: bool = True
    #: The run needs another tick (RUNNING after max_steps, or more input than one tick takes).
    want_more: bool = False
    #: The id of that tick's message, should the release say to send one.
    next_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: The release said: send the run a tick of its own, with ``next_id``.
    send_own: bool = False
    #: That tick is a retry of a failing node: sent with this ETA (its backoff).
    retry_eta: Any = None
    #: How long that tick's note lives, if not ``lost_tick_after_s`` (a retry held by a worker
    #: until its ETA: its deadline plus ``orphan_grace_s``, so a killed holder costs no more).
    note_ttl_s: Optional[float] = None
    #: The run backs off after a failure until then (epoch s; read with the lease).
    backoff_until: Optional[float] = None
    queue: WriteQueue = field(default_factory=WriteQueue)
    control: Optional[Control] = None
    confirmed_at: float = 0.0
    #: The completed-steps index of the run was empty when the lease was taken: only
    #: this tick can have added to it (``done``), so the idempotency probe needs no read.
    done_empty: bool = False
    done: dict[str, str] = field(default_factory=dict)
    applying: list[str] = field(default_factory=list)
    #: ``{p}hist`` fields the save committing ``applying`` adds if it lands (the resume latency).
    applying_hist: dict[str, int] = field(default_factory=dict)
    listeners: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    #: Messages to send once the lease is released: (run id, reason, eta, message id or None).
    sends: list[tuple[str, str, Any, Optional[str]]] = field(default_factory=list)
    handoff: Optional[RunState] = None
    #: The lease was reserved (a start): the run's create is queued behind its acquire.
    reserved: bool = False
    #: The run was created by this tick (a start).
    created: bool = False
    #: Called once the run's create is known to have landed (counts ``runs_started``).
    on_created: Optional[Callable[[], None]] = None
    #: The run's create counts ``runs_started`` itself, in its own step (``lua/save_run.lua``
    #: option ``started``): the store and the counters share one Redis.
    count_started: bool = False
    #: A create queued behind a reserved lease (a start), until it is sent.
    queued_create: Optional[Write] = None
    #: The run as this tick's create wrote it, for the Runtime's first load.
    created_run: Optional[RunState] = None
    #: The ``updated`` score of the last save of the run this tick made (queued or sent).
    last_saved_updated: Optional[str] = None
    #: That save, while it is queued.
    queued_save: Optional[QueuedSave] = None
    #: A write of this tick was refused (lease lost, a cancel or pause landed).
    refused: Optional[BaseException] = None
    notices: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, run_id, status or error)
    #: Counters of what the tick committed (transitions, runs_resumed, ...): sent only if it held.
    commit_counts: Counter[str] = field(default_factory=Counter)
    #: The tick's last save held (known after the release when its saves were queued).
    commit_held: bool = False
    #: The "resumed" notice rides the release pipeline (``lua/if_saved.lua``).
    published: bool = False
    #: After the release, cancel the run's children (it was cancelled with them).
    cascade: bool = False
    #: Events the run never took, dropped only if the save that ends it holds (and their notes).
    drop_on_commit: list[str] = field(default_factory=list)
    drop_notes: list[str] = field(default_factory=list)
    #: Inbox entries the lease's read could not decode, moved aside (to be reported).
    repaired: list[Any] = field(default_factory=list)
    #: The run had an unknown-workflow note when the lease was taken (None: not read).
    unknown_noted: Optional[bool] = None
    #: The run moved under this tick: clear its failure notes once its commit is known to hold.
    clear_marks: bool = False
    #: Notes the lease release deletes, only if the lease is still this tick's.
    release_clears: list[str] = field(default_factory=list)
    #: A save that lands, of a run this context leases, clears that run's failure notes: a
    #: tick's saves move the run. A control action's do not (``Control._leased``), nor a
    #: save a node makes while it runs (``in_node``: a checkpoint, not a move).
    clears_notes: bool = True
    #: How many node handlers are running now (``tick.py: _SavedFirst``).
    in_node: int = 0
    #: A save of this tick's run that moved it (outside a node) has landed.
    moved: bool = False
    #: The tracing of this tick while its span is open (``tracing.py``; None: off), and the
    #: trace context its span would store for the run if the run has none yet.
    tracing: Any = None
    trace_unsaved: Optional[tuple[str, Any]] = None

    def moves(self, run_id: str) -> bool:
        """Does a save of ``run_id`` now move it (clear its failure notes if it lands)?"""
        return self.clears_notes and self.in_node == 0 and self.fence(run_id) is not None

    def __post_init__(self) -> None:
        self.queue.owner = self.run_id

    # --- the fence ---------------------------------------------------------------
    def fence(self, run_id: str) -> Optional[Fence]:
        return self.fences.get(run_id)

    # --- control state -------------------------------------------------------------
    def guard(self, run_id: str) -> Optional[Control]:
        """The control state a write of ``run_id`` must find stored (None: no check)."""
        if run_id == self.run_id:
            return self.control
        return self.controls.get(run_id) if run_id in self.fences else None

    def confirm(self, control: Control, at: float | None = None) -> None:
        self.control = control
        self.confirmed_at = time.monotonic() if at is None else at

    def fresh_control(self, ttl_s: float) -> Optional[Control]:
        """The confirmed control fields if confirmed within ``ttl_s``, else None."""
        if self.control is None or time.monotonic() - self.confirmed_at > ttl_s:
            return None
        return self.control

    # --- handoff -------------------------------------------------------------------
    def take_handoff(self, run_id: str) -> Optional[RunState]:
        """The run offered for the Runtime's next load of ``run_id``, once."""
        run = self.handoff
        if run is None or run.run_id != run_id:
            return None
        self.handoff = None
        return run


_current: contextvars.ContextVar[Optional[TickContext]] = contextvars.ContextVar(
    "abstractruntime_celery_tick", default=None
)


def current() -> Optional[TickContext]:
    """The tick context of this thread of execution, at the seams where AbstractRuntime
    calls our code and cannot pass it (stores, effect wrappers); None outside a tick."""
    return _current.get()


@contextmanager
def entered(ctx: TickContext) -> Iterator[TickContext]:
    """Make ``ctx`` the current tick context for the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


@contextmanager
def outside() -> Iterator[None]:
    """Run the block outside any tick (a driver call made from inside a node)."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)
