"""A worker that reads another store than its callers (adversarial, round S).

Found: a worker whose ``key_prefix`` (or store database) differs from the callers' passes
every start check: its registry loads, its store and coordination answer, its prefix holds
no other layout. It said "ready", took the callers' tick messages, found no such run, logged
one warning ("tick for unknown run ... dropped") and acknowledged them. The runs stayed
RUNNING for ever: the only sweep that could move them is one on the callers' prefix.

Fixed (``identity.py``): a tick message names its sender's store in a header
(``arc_store: <key prefix>@<fingerprint of the store's place>``, no password). A worker on
another prefix puts the message back before ticking anything (another place: when the run
is missing here), with a backoff, one ERROR line naming both identities and the
``wrong_store`` counter; a worker of the callers' store then takes it. Messages without the
header (older senders, already queued) are taken as before.

Real Redis, real ``celery worker`` processes on a mistyped prefix and on the callers' (and an
in-process worker for the message without the header).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.app import make_app as plain_app
from abstractruntime_celery.dispatch import TICK_TASK
from abstractruntime_celery.identity import identity_of, mismatch
from abstractruntime_celery.tasks import driver_for, install
from devkit.cleanup import cleanup_broker
from devkit.procs import Cluster, wait_for
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, fx_count
from tests.workflows_adv_s import registry

pytestmark = pytest.mark.timeout(150)
REGISTRY = "tests.workflows_adv_s:registry"


def _app(settings: Any) -> Any:
    return install(plain_app(BROKER_URL, name=f"arc-{settings.key_prefix}", config_module=None),
                   registry=registry, settings=settings)


def _worker(app: Any, queue: str) -> Any:
    from celery.contrib.testing.worker import start_worker

    return start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[queue],
                        shutdown_timeout=10, loglevel="WARNING")


@contextmanager
def _clusters(settings: Any, tmp_path: Path, request: Any) -> Iterator[tuple[Cluster, Cluster]]:
    """Two fleets of real ``celery worker`` processes on one queue: one on a mistyped key
    prefix, one on the callers'. Neither is started yet."""
    settings = replace(settings, registry=REGISTRY)
    (tmp_path / "wrong").mkdir()
    (tmp_path / "right").mkdir()
    wrong = Cluster(replace(settings, key_prefix=f"{settings.key_prefix}typo:"), BROKER_URL, FX_URL, tmp_path / "wrong")
    right = Cluster(settings, BROKER_URL, FX_URL, tmp_path / "right")
    failed_before = request.session.testsfailed
    try:
        yield wrong, right
    finally:
        right.stop_all()
        wrong.stop_all()
        if request.session.testsfailed > failed_before:
            wrong.dump_logs()
            right.dump_logs()
        cleanup_broker(BROKER_URL, settings.queue)


def _put_back(wrong: Any) -> int:
    """How many tick messages the workers on ``wrong``'s key prefix put back (a Cluster or Settings)."""
    key_prefix = getattr(wrong, "settings", wrong).key_prefix
    raw = redis.Redis.from_url(STORE_URL).hget(f"{key_prefix}stats", "wrong_store")
    return int(raw or 0)


def test_a_worker_on_another_prefix_does_not_drop_the_callers_runs(settings: Any, tmp_path: Path,
                                                                  request: Any) -> None:
    settings = replace(settings, retry_backoff_s=0.1, retry_backoff_max_s=0.3)
    caller = create_scheduled_runtime(app=_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        with _clusters(settings, tmp_path, request) as (wrong, right):
            wrong.worker("wrong")
            run_id = caller.start(workflow=registry.get("steps"), vars={"n": 1})
            wait_for(lambda: _put_back(wrong) >= 3, 30.0, "the wrong worker to put the tick back, again", wrong)
            assert caller.driver.run_store.load(run_id).status == RunStatus.RUNNING
            assert not redis.Redis.from_url(STORE_URL).exists(f"{wrong.settings.key_prefix}run:{run_id}")
            log = wrong.procs[0].log()
            assert f"sent for store '{caller.driver.identity}', and this worker reads " \
                   f"'{wrong.settings.key_prefix}@" in log, log[-3000:]
            right.worker("right")  # a worker of the callers' store joins
            state = caller.wait_for(run_id, timeout=30.0, until=lambda r: r.status != RunStatus.RUNNING)
        assert state.status == RunStatus.COMPLETED
    finally:
        caller.stop()


def test_runs_bounced_between_a_wrong_and_a_right_worker_take_each_step_once(settings: Any, fx: str,
                                                                            tmp_path: Path, request: Any) -> None:
    """Put-back messages (same task id, an ETA) while workers of the right store take the
    others, a wrong worker still running: every step of every run runs once, every run completes."""
    settings = replace(settings, retry_backoff_s=0.1, retry_backoff_max_s=0.3, tick_max_steps=1)
    caller = create_scheduled_runtime(app=_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        with _clusters(settings, tmp_path, request) as (wrong, right):
            wrong.worker("wrong")
            runs = [caller.start(workflow=registry.get("as-steps"), vars={"n": 4, "fx": fx}) for _ in range(16)]
            wait_for(lambda: _put_back(wrong) >= 8, 30.0, "the wrong worker to put ticks back", wrong)
            right.worker("right")
            for run_id in runs:
                state = caller.wait_for(run_id, timeout=60.0, until=lambda r: r.status != RunStatus.RUNNING)
                assert state.status == RunStatus.COMPLETED and state.output == {"i": 4}, state
            assert [fx_count(fx, r, "step") for r in runs] == [4] * len(runs)
            assert _put_back(wrong) >= 8
    finally:
        caller.stop()


def test_a_wrong_worker_killed_while_it_holds_put_back_ticks_loses_no_run(settings: Any, fx: str,
                                                                          tmp_path: Path, request: Any) -> None:
    """The wrong worker SIGKILLed while it holds put-back ticks (reserved, waiting for their
    ETA) and originals not yet acknowledged: the sweep of the callers' store (beat, a right
    worker) brings every run forward, and no step runs twice."""
    settings = replace(settings, retry_backoff_s=0.5, retry_backoff_max_s=1.0, tick_max_steps=1,
                       lost_tick_after_s=3.0, timer_horizon_s=3.0, orphan_grace_s=2.0,
                       sweep_interval_s=1.0)
    caller = create_scheduled_runtime(app=_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        with _clusters(settings, tmp_path, request) as (wrong, right):
            killed = wrong.worker("wrong")
            runs = [caller.start(workflow=registry.get("as-steps"), vars={"n": 3, "fx": fx}) for _ in range(8)]
            wait_for(lambda: _put_back(wrong) >= 8, 30.0, "the wrong worker to put ticks back", wrong)
            killed.kill()  # (its whole process group: main process and pool children)
            right.worker("right")
            right.beat()
            for run_id in runs:
                state = caller.wait_for(run_id, timeout=60.0, until=lambda r: r.status != RunStatus.RUNNING)
                assert state.status == RunStatus.COMPLETED and state.output == {"i": 3}, state
            assert [fx_count(fx, r, "step") for r in runs] == [3] * len(runs)
    finally:
        caller.stop()


def test_a_message_without_the_header_is_taken_as_before(settings: Any, prefix: str) -> None:
    """An older sender's tick (no header) for a run of another store: dropped, as before,
    and not counted as a put-back."""
    wrong_settings = replace(settings, key_prefix=f"{prefix}typo:")
    wrong_app = _app(wrong_settings)
    caller = create_scheduled_runtime(app=_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        run_id = caller.driver.start_run("steps", vars={"n": 1}, dispatch=False)
        with _worker(wrong_app, settings.queue):
            marker = wrong_app.send_task(TICK_TASK, args=[run_id], kwargs={"reason": "old"}, queue=settings.queue)
            # a matching-store message after it, for a run of the wrong worker's own store: once it has
            # run, the older message before it in the queue was taken too
            own = driver_for(wrong_app).start_run("steps", vars={"n": 1})
            wait_for(lambda: driver_for(wrong_app).run_store.load(own).status == RunStatus.COMPLETED, 20.0,
                     "the wrong worker's own run")
            assert marker.id
        assert _put_back(wrong_settings) == 0
        assert caller.driver.run_store.load(run_id).status == RunStatus.RUNNING
    finally:
        caller.stop()


def test_identities_tell_stores_apart_and_not_spellings(prefix: str) -> None:
    def of(url: str) -> str:
        return identity_of(prefix, SimpleNamespace(client=redis.Redis.from_url(url)), None, url)

    same, spelled = of(STORE_URL), of(STORE_URL.replace("127.0.0.1", "localhost"))
    other_db, with_password = of(STORE_URL.rpartition("/")[0] + "/11"), of(STORE_URL.replace("://", "://:s3cret@"))
    assert same == spelled == with_password and same != other_db
    assert mismatch(same, None) is None and mismatch(same, same) is None
    assert mismatch(same, other_db) == "store"
    assert mismatch(same, f"{prefix}typo:@" + same.rpartition("@")[2]) == "prefix"
    assert identity_of(prefix, None, None, "sqlite:///a/runs.db") != identity_of(prefix, None, None, "sqlite:///b.db")
    assert "s3cret" not in identity_of(prefix, None, None, "sqlite://u:s3cret@/a/runs.db")
