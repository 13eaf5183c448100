"""Caller-chosen names can never meet a global key (regression, branch regress-e).

Before: the run id ``runs`` passed validation and its inbox key ``{p}inbox:runs``
was the sweep's global index of evented runs; one event to it turned the index
into a hash, after which every resume_event of any run failed with WRONGTYPE and
every sweep died (``seq`` hit ``{p}inbox:seq`` the same way).

The property: whatever run ids, wait keys, workflow ids, session ids and mailbox
names callers choose (every global key's name and every family name among them),
after a workload (runs started, waiting, evented early and late, a sweep) every
key under the prefix reads as exactly one owner of the kind its family names, with
the Redis type its family has; and a normal run still takes an event, and the
sweep still runs. Also: a prefix holding another key layout is refused at start.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Optional

import pytest
import redis
from abstractruntime import RunStatus, WaitReason, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st

from abstractruntime_celery.errors import ConfigError
from tests.conftest import STORE_URL, _delete_prefix, make_settings
from tests.workflows import event_done, event_wait, registry as test_registry

# --- adapters (the only lines that differ in the copy run against d599363) ---------------------


def _build(settings: Any, registry: Any, dispatcher: Any = None) -> Any:
    from abstractruntime_celery.driver import build

    return build(settings, registry, dispatcher, distributed=True)


def _owner_of(key: str, prefix: str) -> tuple[str, Optional[str]]:
    from abstractruntime_celery.keys import owner_of

    return owner_of(key, prefix)


def _rebuilt(prefix: str, family: str, owner: Optional[str]) -> str:
    from abstractruntime_celery.keys import Keys

    return f"{prefix}{family}" if owner is None else Keys(prefix).owned(family, owner)


# --------------------------------------------------------------------------------------------------


class Messages:
    """A dispatcher that keeps the tick messages; the test delivers them (``drain``)."""

    min_eta_s = 0.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Optional[datetime]]] = []
        self.driver: Any = None

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        self.sent.append((run_id, reason, eta))

    def tick(self, run_id: str, *, reason: str = "tick", eta: Any = None, event_id: Any = None) -> None:
        self.send(run_id, reason, eta)  # (the dispatcher method's name before the restructuring)

    def drain(self, rounds: int = 50) -> None:
        """Deliver every message that is due (ETAs in the future are left out)."""
        for _ in range(rounds):
            if not self.sent:
                return
            batch, self.sent = self.sent, []
            for run_id, reason, eta in batch:
                if eta is not None and eta.timestamp() > datetime.now().timestamp():
                    continue
                self.driver.tick(run_id, reason=reason)


#: Each family's Redis type (globals by their own name).
TYPES = {
    "run": "hash", "ledger": "list", "ledger-done": "hash", "lease": "string", "pending": "string", "next": "string", "backoff": "string",
    "inbox": "hash", "inbox-body": "hash", "timer": "string", "attempts": "string", "unknown": "string",
    "quarantine": "hash",
    "layout": "string", "ix-all": "zset", "ix-evtkeys": "zset", "due": "zset", "inbox-runs": "zset", "ended": "zset",
    "event-seq": "string", "stats": "hash", "stats-errors": "list", "sweep-lock": "string",
    "sweep-cursor": "hash", "hist": "hash", "trace": "string", "retention": "string",
}

#: Names a caller could pick to hit a global key or a family: every global, every family,
#: the names of the old layout (``{p}ix:all``, ``{p}inbox:runs``, ``{p}inbox:seq``), and friends.
TRICKY = sorted({
    "layout", "ix-all", "ix-evtkeys", "due", "inbox-runs", "event-seq", "stats", "stats-errors",
    "sweep-lock", "sweep-cursor", "notices", "hist", "trace", "ended", "retention",
    "run", "ledger", "ledger-done", "lease", "pending", "inbox", "inbox-body", "timer", "attempts", "unknown",
    "quarantine", "ix-status", "ix-wf", "ix-reason", "ix-parent", "ix-session", "ix-evt", "ix-mbox",
    "runs", "seq", "all", "evtkeys", "errors", "lock", "cursor", "ix", "status", "running", "waiting",
    "ix:all", "inbox:runs", "inbox:seq", "status:running", "ix:status:waiting", "stats:errors", "sweep:lock",
    ":", "a:b", "runs:", ":runs", "inbox-runs:x",
})
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _valid_run_id(text: str) -> bool:
    from abstractruntime_celery.payloads import check_run_id

    if not RUN_ID.fullmatch(text) or re.fullmatch(r"sub-[0-9a-f]{32}", text):
        return False
    try:
        check_run_id(text)
    except ValueError:
        return False
    return True


run_ids = st.one_of(st.sampled_from(TRICKY), st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True)) \
    .filter(_valid_run_id)
plain_names = st.one_of(
    st.sampled_from(TRICKY),
    st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=24),
    st.text(alphabet=":ab-", min_size=1, max_size=8),
).filter(lambda s: s == s.strip() and "\n" not in s)
wait_keys = st.one_of(
    st.sampled_from(TRICKY),
    st.text(min_size=1, max_size=40),
).filter(lambda s: not s.startswith(("subworkflow:", "pause:")))


def _workload(prefix: str, ids: list[str], wait_key: str, workflow_id: str, session_id: str,
              mailbox: str) -> None:
    settings = make_settings(prefix, event_redeliver_s=0.0)
    reg = WorkflowRegistry()
    reg.register(test_registry.get("event"))
    if workflow_id not in reg:
        reg.register(WorkflowSpec(workflow_id, "wait", {"wait": event_wait, "done": event_done}))
    messages = Messages()
    driver = _build(settings, reg, messages)
    messages.driver = driver
    fuzzed_vars = {"key": wait_key, "events_mailbox": [mailbox]}
    answered, early, waiting = ids
    normal = uuid.uuid4().hex

    # a run that waits on the fuzzed key and gets its event; one that gets it early (RUNNING,
    # never ticked: its event stays in the inbox); one left waiting on the key; a normal run.
    driver.start_run(workflow_id, vars=dict(fuzzed_vars), run_id=answered, session_id=session_id)
    driver.start_run(workflow_id, vars=dict(fuzzed_vars), run_id=waiting, session_id=session_id)
    driver.start_run("event", vars={"key": "k"}, run_id=normal)
    messages.drain()
    assert driver.load(answered).status == RunStatus.WAITING
    driver.start_run(workflow_id, vars=dict(fuzzed_vars), run_id=early, session_id=session_id, dispatch=False)
    driver.accept_event(early, wait_key, {"early": True}, dispatch=False)
    driver.accept_event(answered, wait_key, {"v": 1})
    messages.drain()
    assert driver.load(answered).status == RunStatus.COMPLETED
    assert driver.load(answered).output == {"event": {"v": 1}}

    from abstractruntime_celery.sweep import sweep

    sweep(driver, force=True)  # (event_redeliver_s=0: it re-sends the early run's event)

    # every key under the prefix: one owner of the kind its family names, and that family's type
    client = redis.Redis.from_url(STORE_URL, decode_responses=True)
    owners = {
        "run id": set(ids) | {normal},
        "workflow id": {workflow_id, "event"},
        "wait key": {wait_key, "k"},
        "session id": {session_id},
        "mailbox name": {mailbox},
        "run status": {s.value for s in RunStatus},
        "wait reason": {r.value for r in WaitReason},
    }
    from abstractruntime_celery import keys as keys_mod

    seen: dict[str, str] = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        family, owner = _owner_of(key, prefix)
        assert _rebuilt(prefix, family, owner) == key
        kind = keys_mod.OWNED.get(family) if owner is not None else None
        if owner is not None:
            assert owner in owners[kind], f"{key!r}: {owner!r} is no {kind} of this workload"
        expected = TYPES.get(family, "zset" if family.startswith("ix-") else None)
        assert expected is not None, key
        assert client.type(key) == expected, f"{key!r} is a {client.type(key)}, family {family!r} is a {expected}"
        seen[key] = family

    # what the workload must have made, each in its own place
    k = keys_mod.Keys(prefix)
    assert client.type(k.inbox(early)) == "hash" and client.hlen(k.inbox(early)) == 1
    assert client.type(k.inbox_body(early)) == "hash"
    assert client.type(k.inbox_runs) == "zset" and client.zscore(k.inbox_runs, early) is not None
    assert client.type(k.event_seq) == "string"
    assert client.zscore(k.index("ix-evt", wait_key), waiting) is not None
    assert client.zscore(k.index("ix-wf", workflow_id), waiting) is not None
    assert client.zscore(k.index("ix-session", session_id), waiting) is not None
    assert client.zscore(k.index("ix-mbox", mailbox), waiting) is not None
    assert client.zscore(k.all_runs, normal) is not None

    # nothing broke: the normal run takes its event, the fuzzed ones theirs, the sweep runs
    messages.drain()
    driver.accept_event(normal, "k", {"v": 2})
    driver.accept_event(waiting, wait_key, {"v": 3})
    messages.drain()
    assert driver.load(normal).output == {"event": {"v": 2}}
    assert driver.load(waiting).output == {"event": {"v": 3}}
    assert driver.load(early).output == {"event": {"early": True}}
    report = sweep(driver, force=True)
    assert not report.skipped


@hsettings(max_examples=30, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ids=st.lists(run_ids, min_size=3, max_size=3, unique=True), wait_key=wait_keys,
       workflow_id=plain_names, session_id=plain_names, mailbox=plain_names)
@example(ids=["runs", "seq", "all"], wait_key="runs", workflow_id="all", session_id="seq", mailbox="runs")
@example(ids=["inbox-runs", "event-seq", "ix-all"], wait_key="inbox:runs", workflow_id="ix:all",
         session_id="inbox-runs", mailbox="ix-evtkeys")
@example(ids=["layout", "stats", "due"], wait_key="ix-all", workflow_id="stats-errors", session_id="due",
         mailbox="layout")
def test_every_key_has_one_owner_whatever_names_callers_choose(ids: list[str], wait_key: str, workflow_id: str,
                                                               session_id: str, mailbox: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    try:
        _workload(prefix, ids, wait_key, workflow_id, session_id, mailbox)
    finally:
        _delete_prefix(STORE_URL, prefix)


def test_an_event_to_run_runs_or_seq_leaves_every_other_run_and_the_sweep_working(prefix: str) -> None:
    """The two run ids of the issue, one after the other, then a normal run and the sweep."""
    settings = make_settings(prefix, event_redeliver_s=0.0)
    messages = Messages()
    driver = _build(settings, test_registry, messages)
    messages.driver = driver
    for rid in ("runs", "seq", "all"):
        driver.start_run("event", vars={"key": "k"}, run_id=rid)
    normal = driver.start_run("event", vars={"key": "k"})
    messages.drain()
    driver.accept_event("runs", "k", {"who": "runs"})
    driver.accept_event("seq", "k", {"who": "seq"})
    messages.drain()
    from abstractruntime_celery.sweep import sweep

    sweep(driver, force=True)
    driver.accept_event(normal, "k", {"who": "normal"})
    driver.accept_event("all", "k", {"who": "all"})
    messages.drain()
    for rid, who in (("runs", "runs"), ("seq", "seq"), ("all", "all"), (normal, "normal")):
        assert driver.load(rid).output == {"event": {"who": who}}
    assert not sweep(driver, force=True).skipped


@pytest.mark.parametrize("old_key, value", [
    ("layout", "1"),          # a prefix that says it holds layout 1
    ("layout", "2"),          # layout 2: no index of ended runs, so retention could never reach them
    ("ix:all", None),         # a layout-1 index left behind (no layout key)
    ("inbox:runs", None),     # the layout-1 evented-runs index
])
def test_a_prefix_holding_another_key_layout_is_refused_at_start(prefix: str, old_key: str,
                                                                 value: Optional[str]) -> None:
    client = redis.Redis.from_url(STORE_URL, decode_responses=True)
    if value is not None:
        client.set(f"{prefix}{old_key}", value)
    else:
        client.zadd(f"{prefix}{old_key}", {"some-run": 1.0})
    with pytest.raises(ConfigError) as info:
        _build(make_settings(prefix), test_registry)
    text = str(info.value)
    assert "layout" in text and prefix in text
    # refused before it wrote anything of its own
    assert sorted(client.scan_iter(match=f"{prefix}*")) == [f"{prefix}{old_key}"]


def test_a_worker_started_on_a_prefix_holding_another_key_layout_does_not_say_ready(
        tmp_path: Any, request: Any) -> None:
    from devkit.cleanup import cleanup_broker
    from devkit.procs import Cluster
    from tests.conftest import BROKER_URL, FX_URL

    settings = make_settings(f"lay{uuid.uuid4().hex[:8]}:")
    client = redis.Redis.from_url(STORE_URL, decode_responses=True)
    client.set(f"{settings.key_prefix}layout", "1")
    c = Cluster(settings, BROKER_URL, FX_URL, tmp_path)
    try:
        try:
            c.worker("w", concurrency=1, ready_timeout=60)
            ready = True
        except AssertionError:  # it exited at start (or never got ready)
            ready = False
        assert not ready, "the worker said ready on a prefix of key layout 1"
        assert "layout" in c.procs[0].log()
    finally:
        c.stop_all()
        cleanup_broker(BROKER_URL, settings.queue)
        _delete_prefix(STORE_URL, settings.key_prefix)
