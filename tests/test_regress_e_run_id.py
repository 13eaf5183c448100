"""One run, one id: a run id that would change under normalisation is refused everywhere
(regression, branch regress-e).

Before: the run-id check was ``re.match(r"^...$")``, which lets a trailing newline
through, and the stores strip the id while leases, inboxes and fences used it raw.
So ``job-1\\n`` addressed run ``job-1`` under another lease: an event sent to it was
stored where no tick applies it, and a start message with ``run_id="job-1\\n"`` for an
existing run executed its node while its lease was held elsewhere.

(The ``abstractruntime-celery`` command has no sub-command that takes a run id, so the
entry points are the Python API and the task messages.)
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterator

import pytest
import redis
from abstractruntime import RunStatus
from celery.contrib.testing.worker import start_worker
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from abstractruntime_celery import PayloadError, create_scheduled_runtime
from abstractruntime_celery.context import TickContext
from devkit.procs import wait_for
from tests.conftest import FX_URL, STORE_URL, fx_count, make_app, make_settings
from tests.workflows import registry

#: Whitespace a store's ``strip()`` (or a ``$`` that matches before a final newline) would eat.
SPACES = " \t\n\r\x0b\x0c\u00a0\u2028\u3000"


@pytest.fixture
def run() -> str:
    """A fresh run id per test (no state of one test can meet another's run)."""
    return f"job-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sr(settings: Any, celery_app: Any) -> Iterator[Any]:
    rt = create_scheduled_runtime(app=celery_app, settings=settings, registry=registry, auto_start=False)
    yield rt
    rt.stop()


def _waiting_run(sr: Any, run: str) -> Any:
    """Run ``run``, waiting on event key "k" (ticked here: no worker needed)."""
    sr.driver.start_run("event", vars={"key": "k"}, run_id=run, dispatch=False)
    state = sr.tick(run)
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "k"
    return state


def _pending_events(sr: Any, run_id: str) -> list[Any]:
    return list(sr.driver.coord.inbox.pending(run_id).events)


def _keys_with_odd_ids(prefix: str) -> list[str]:
    client = redis.Redis.from_url(STORE_URL, decode_responses=True)
    return [k for k in client.scan_iter(match=f"{prefix}*") if k != k.strip() or any(c.isspace() for c in k)]


API: dict[str, Callable[[Any, str], Any]] = {
    "start_run": lambda sr, rid: sr.driver.start_run("event", vars={"key": "k"}, run_id=rid, dispatch=False),
    "start_and_tick": lambda sr, rid: sr.driver.start_and_tick("event", vars={"key": "k"}, run_id=rid),
    "resume_event": lambda sr, rid: sr.resume_event(run_id=rid, wait_key="k", payload={"v": 1}, wait=False),
    "scheduler.resume_event": lambda sr, rid: sr.scheduler.resume_event(run_id=rid, wait_key="k",
                                                                        payload={"v": 1}, wait=False),
    "respond": lambda sr, rid: sr.respond(rid, {"v": 1}, wait=False),
    "get_state": lambda sr, rid: sr.get_state(rid),
    "tick": lambda sr, rid: sr.tick(rid),
    "driver.tick": lambda sr, rid: sr.driver.tick(rid, reason="manual"),
    "cancel_run": lambda sr, rid: sr.cancel_run(rid),
    "pause_run": lambda sr, rid: sr.pause_run(rid),
    "resume_run": lambda sr, rid: sr.resume_run(rid),
    "wait_for": lambda sr, rid: sr.wait_for(rid, timeout=0.5),
}


@pytest.mark.parametrize("entry", sorted(API))
def test_a_run_id_with_a_trailing_newline_is_refused_by_every_api_and_changes_nothing(
        sr: Any, prefix: str, run: str, entry: str) -> None:
    before = _waiting_run(sr, run)
    with pytest.raises(PayloadError) as info:
        API[entry](sr, f"{run}\n")
    assert "run_id" in str(info.value)
    after = sr.get_state(run)
    assert (after.status, after.updated_at, after.waiting.wait_key) == (before.status, before.updated_at, "k")
    assert _pending_events(sr, run) == []
    assert _keys_with_odd_ids(prefix) == []
    # and the real id still works: the event is applied to the one run
    sr.resume_event(run_id=run, wait_key="k", payload={"v": 2}, wait=False)
    assert sr.tick(run).output == {"event": {"v": 2}}


def test_cancel_with_children_given_a_run_id_with_a_trailing_newline_cancels_nothing(
        sr: Any, prefix: str, run: str) -> None:
    before = _waiting_run(sr, run)
    with pytest.raises((PayloadError, KeyError)):
        sr.cancel_with_children(f"{run}\n")
    after = sr.get_state(run)
    assert (after.status, after.updated_at) == (RunStatus.WAITING, before.updated_at)
    assert _keys_with_odd_ids(prefix) == []


def test_cancel_with_children_refuses_a_run_id_with_a_trailing_newline_as_malformed(sr: Any, run: str) -> None:
    _waiting_run(sr, run)
    with pytest.raises(PayloadError):
        sr.cancel_with_children(f"{run}\n")


@hsettings(max_examples=40, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(head=st.text(alphabet=SPACES, max_size=3), tail=st.text(alphabet=SPACES, max_size=3),
       entry=st.sampled_from(sorted(API)))
def test_no_spelling_of_an_id_that_normalises_to_it_is_accepted(sr: Any, prefix: str, run: str, head: str,
                                                                tail: str, entry: str) -> None:
    if not head and not tail:
        tail = "\n"
    if sr.driver.run_store.load(run) is None:
        _waiting_run(sr, run)
    before = sr.get_state(run)
    with pytest.raises(PayloadError):
        API[entry](sr, head + run + tail)
    after = sr.get_state(run)
    assert (after.status, after.updated_at) == (before.status, before.updated_at)
    assert _keys_with_odd_ids(prefix) == []


# --- task messages to a real worker ------------------------------------------------------------------

def test_task_messages_naming_a_run_with_a_trailing_newline_run_nothing_while_its_lease_is_held(
        prefix: str, fx: str, run: str) -> None:
    RUN = run
    settings = make_settings(prefix, lease_ttl_s=60.0)
    celery_app = make_app(settings)
    sr = create_scheduled_runtime(app=celery_app, settings=settings, registry=registry, auto_start=False)
    queue = settings.queue
    # one worker thread: messages run in the order they were sent
    with start_worker(celery_app, pool="threads", concurrency=1, perform_ping_check=False, queues=[queue],
                      shutdown_timeout=10, loglevel="WARNING"):
        # the run exists, RUNNING at its first node (a side effect), never ticked
        sr.driver.start_run("slow", vars={"fx": fx, "sleep": 0}, run_id=RUN, dispatch=False)
        before = sr.get_state(RUN)
        started_before = sr.stats.runs_started
        lease = sr.driver.coord.leases.acquire(RUN)  # held elsewhere: nobody may run its node now
        assert lease is not None
        for rid in (f"{RUN}\n", f"{RUN}\r\n", f" {RUN}"):
            celery_app.send_task("abstractruntime.start", args=["slow", {"fx": fx, "sleep": 0}, rid], queue=queue)
            celery_app.send_task("abstractruntime.tick", args=[rid], kwargs={"reason": "tick"}, queue=queue)
            celery_app.send_task("abstractruntime.resume", args=[rid, uuid.uuid4().hex], queue=queue)
        # a sentinel behind them (one worker thread: in order): once it ran, they all did
        sentinel = f"sentinel-{uuid.uuid4().hex[:8]}"
        celery_app.send_task("abstractruntime.start", args=["slow", {"fx": fx, "sleep": 0}, sentinel], queue=queue)
        wait_for(lambda: (sr.driver.run_store.load(sentinel) or before).status == RunStatus.COMPLETED, 60,
                 "the sentinel run to complete")

        assert fx_count(fx, RUN, "work_started") == 0      # its node never ran, under any spelling
        effects = redis.Redis.from_url(FX_URL, decode_responses=True).hgetall(fx)
        assert all(field.startswith(f"{sentinel}:") for field in effects), effects
        after = sr.get_state(RUN)
        assert (after.status, after.current_node, after.updated_at) == (RunStatus.RUNNING, "work",
                                                                        before.updated_at)
        assert _keys_with_odd_ids(prefix) == []              # no lease, inbox or run under an odd id
        assert sr.stats.runs_started == started_before + 1   # the sentinel only
        assert sr.driver.coord.leases.holds(lease.key, lease.token)  # our lease was never touched

        # the one real id, once the lease is free: the node runs once and the run completes
        sr.driver.coord.leases.release(lease, TickContext(RUN))
        celery_app.send_task("abstractruntime.tick", args=[RUN], kwargs={"reason": "tick"}, queue=queue)
        done = sr.wait_for(RUN, timeout=60, until=lambda r: r.status == RunStatus.COMPLETED)
        assert done.output == {"ok": True}
        assert fx_count(fx, RUN, "work_started") == 1
    sr.stop()
