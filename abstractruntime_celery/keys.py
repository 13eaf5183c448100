"""Every Redis key name the package uses, in one place, in name spaces that cannot meet.

A key is either ``<prefix><family>`` (a *global* key: nothing follows the family)
or ``<prefix><family>:<owner>`` (a key owned by one run, one wait key, one
workflow id ...). A family is a fixed word without ``:``; a caller-chosen
string (run id, wait key, workflow id, session id, mailbox name) only ever
appears after the first ``:``. So whatever a caller chooses, a per-owner key
can never equal a global key, nor a key of another family: the family, read up
to the first ``:``, names the owner kind of every key. ``owner_of`` does that
reading, for tests and for operators.

The layout has a version (``LAYOUT_VERSION``), stored at ``<prefix>layout`` by a worker's
start and with the first run created; a process refuses to start on a prefix that holds
another one (``check_layout``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

#: Bumped whenever a key name or a value format changes (0.x: no migration, refuse instead).
LAYOUT_VERSION = 3

#: Families of per-owner keys, and what their owner is.
OWNED: dict[str, str] = {
    "run": "run id",            # hash: the run record (stores/lua/save_run.lua)
    "ledger": "run id",         # list: step records
    "ledger-done": "run id",    # hash: idempotency key -> first COMPLETED record
    "lease": "run id",          # string: the token of the process ticking the run
    "pending": "run id",        # string: a tick was asked while the lease was held
    "next": "run id",           # string: the message id of the run's one pending tick of its own
    "inbox": "run id",          # hash: event id -> "<seq>|<header JSON>"
    "inbox-body": "run id",     # hash: event id -> payload JSON
    "timer": "run id",          # string: the `until` a timer message is in flight for
    "attempts": "run id",       # counter: failing ticks in a row
    "backoff": "run id",        # string: until when (epoch s) a failing run waits for its retry
    "unknown": "run id",        # string: when the run was first seen with an unknown workflow
    "quarantine": "run id",     # hash: event id -> an unreadable inbox entry, moved aside
    "trace": "run id",          # string: the run's trace context (W3C traceparent), tracing only
    "ix-status": "run status",  # zset by updated
    "ix-wf": "workflow id",     # zset by updated
    "ix-reason": "wait reason",  # zset by updated
    "ix-parent": "run id",      # zset by created: the run's children
    "ix-session": "session id",  # zset by updated
    "ix-evt": "wait key",       # zset by updated: runs WAITING(EVENT) on that key
    "ix-mbox": "mailbox name",  # zset by updated: active runs declaring that events_mailbox
    "hook-seen": "webhook route and id",  # string, PX retention: a webhook delivery stored (lua/inbox_put.lua)
}
#: Global keys (and the notices channel).
GLOBAL: frozenset[str] = frozenset({
    "layout",         # string: LAYOUT_VERSION
    "ix-all",         # zset by updated: every run
    "ix-evtkeys",     # zset, lex: "<wait key>\\0<run id>"
    "due",            # zset by deadline: WAITING runs with `until`
    "ended",          # zset by end time: runs that ended (completed, failed, cancelled), for retention
    "inbox-runs",     # zset by oldest accepted: runs with unapplied events
    "event-seq",      # counter: global event order
    "stats",          # hash: cluster counters
    "hist",           # hash: cluster histograms (metrics/histograms.py)
    "stats-errors",   # list: recent errors
    "sweep-lock",     # string: one sweep per interval
    "sweep-cursor",   # hash: where each sweep pass goes on from
    "retention",      # string: the retention_s the workers run with (written at worker start)
    "notices",        # pub/sub channel
})
#: Families whose owner is one run: what retention deletes with a run (``lua/expire_runs.lua``).
RUN_FAMILIES: tuple[str, ...] = tuple(family for family, owner in OWNED.items() if owner == "run id")
#: Keys of layout 1 (before 0.1.x+keys): if one exists without ``layout``, the prefix holds old data.
_LAYOUT_1_MARKERS = ("ix:all", "inbox:runs", "inbox:seq")


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix. Methods take the owner; properties are the globals."""

    prefix: str

    def owned(self, family: str, owner: str) -> str:
        return f"{self.prefix}{family}:{owner}"

    # --- one run -----------------------------------------------------------------
    def run(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    def ledger(self, run_id: str) -> str:
        return f"{self.prefix}ledger:{run_id}"

    def ledger_done(self, run_id: str) -> str:
        return f"{self.prefix}ledger-done:{run_id}"

    def lease(self, run_id: str) -> str:
        return f"{self.prefix}lease:{run_id}"

    def pending(self, run_id: str) -> str:
        return f"{self.prefix}pending:{run_id}"

    def next_tick(self, run_id: str) -> str:
        return f"{self.prefix}next:{run_id}"

    def inbox(self, run_id: str) -> str:
        return f"{self.prefix}inbox:{run_id}"

    def inbox_body(self, run_id: str) -> str:
        return f"{self.prefix}inbox-body:{run_id}"

    def timer(self, run_id: str) -> str:
        return f"{self.prefix}timer:{run_id}"

    def attempts(self, run_id: str) -> str:
        return f"{self.prefix}attempts:{run_id}"

    def unknown(self, run_id: str) -> str:
        return f"{self.prefix}unknown:{run_id}"

    def backoff(self, run_id: str) -> str:
        return f"{self.prefix}backoff:{run_id}"

    def quarantine(self, run_id: str) -> str:
        return f"{self.prefix}quarantine:{run_id}"

    def hook_seen(self, route: str, delivery_id: str) -> str:
        """The mark of a webhook delivery ``delivery_id`` received on ``route`` (``<route>:<id>``)."""
        return f"{self.prefix}hook-seen:{route}:{delivery_id}"

    def trace(self, run_id: str) -> str:
        return f"{self.prefix}trace:{run_id}"

    def index(self, family: str, value: str) -> str:
        """An index zset (``ix-status``, ``ix-wf``, ``ix-reason``, ...)."""
        if family not in OWNED or not family.startswith("ix-"):
            raise ValueError(f"not an index family: {family!r}")
        return f"{self.prefix}{family}:{value}"

    # --- globals -----------------------------------------------------------------
    @property
    def layout(self) -> str:
        return f"{self.prefix}layout"

    @property
    def all_runs(self) -> str:
        return f"{self.prefix}ix-all"

    @property
    def event_keys(self) -> str:
        return f"{self.prefix}ix-evtkeys"

    @property
    def due(self) -> str:
        return f"{self.prefix}due"

    @property
    def inbox_runs(self) -> str:
        return f"{self.prefix}inbox-runs"

    @property
    def ended(self) -> str:
        """Sorted set of ended runs by end time (written by ``save_run.lua``; retention walks it)."""
        return f"{self.prefix}ended"

    @property
    def event_seq(self) -> str:
        return f"{self.prefix}event-seq"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def hist(self) -> str:
        return f"{self.prefix}hist"

    @property
    def stats_errors(self) -> str:
        return f"{self.prefix}stats-errors"

    @property
    def sweep_lock(self) -> str:
        return f"{self.prefix}sweep-lock"

    @property
    def sweep_cursor(self) -> str:
        return f"{self.prefix}sweep-cursor"

    @property
    def retention(self) -> str:
        """The workers' ``retention_s`` (written at a worker's start; a sweep with another skips deleting)."""
        return f"{self.prefix}retention"

    @property
    def notices(self) -> str:
        return f"{self.prefix}notices"


def owner_of(key: str, prefix: str) -> tuple[str, str | None]:
    """``(family, owner)`` of a key of ours (owner None for a global key).

    Raises:
        ValueError: the key is not under ``prefix`` or names no family of this layout.
    """
    if not key.startswith(prefix):
        raise ValueError(f"key {key!r} is not under prefix {prefix!r}")
    rest = key[len(prefix):]
    family, sep, owner = rest.partition(":")
    if not sep:
        if family in GLOBAL:
            return family, None
        raise ValueError(f"key {key!r}: {family!r} is not a global key of layout {LAYOUT_VERSION}")
    if family in OWNED:
        return family, owner
    raise ValueError(f"key {key!r}: {family!r} is not a key family of layout {LAYOUT_VERSION}")


def check_layout(client: Any, keys: Keys, where: str) -> bool:
    """Refuse a prefix that holds data of another layout; True if it holds our layout's mark.

    Reads only: a process that only looks (a CLI ``stats`` under a mistyped prefix) leaves
    nothing behind. The mark is written by a worker's start (``record_layout``) and with the
    first run created under the prefix (``lua/save_run.lua``, in the create's own step).

    Raises:
        ConfigError: the prefix holds data of another layout version (names both versions,
            the prefix and ``where``, the Redis it was read from).
    """
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.layout)
    for marker in _LAYOUT_1_MARKERS:
        pipe.exists(f"{keys.prefix}{marker}")
    stored, *old = pipe.execute()
    if stored is None and any(old):
        stored = "1"
    if stored is None:
        return False
    _refuse_other(stored, keys, where)
    return True


def record_layout(client: Any, keys: Keys, where: str) -> None:
    """Write this layout's mark under the prefix unless one is there (a worker at start).

    Raises:
        ConfigError: the prefix holds another layout's mark (see ``check_layout``).
    """
    if not check_layout(client, keys, where):
        client.set(keys.layout, str(LAYOUT_VERSION), nx=True)
        _refuse_other(client.get(keys.layout), keys, where)


def _refuse_other(stored: Any, keys: Keys, where: str) -> None:
    if isinstance(stored, bytes):
        stored = stored.decode()
    if str(stored) != str(LAYOUT_VERSION):
        raise ConfigError(
            f"Redis {where} holds data of key layout {stored} under prefix {keys.prefix!r}; this "
            f"version of abstractruntime-celery uses layout {LAYOUT_VERSION} and cannot read it. "
            "There is no migration in 0.x: use another key_prefix, or delete the old keys."
        )
