"""Adversarial: ``respond()`` whose run moved on to the next wait under the same key
while the call was in flight answers that next wait.

README ("Where this differs from the seed"): "``respond`` answers only the wait the run is
in when it is called, once: a second concurrent answer, or one to a run that moved on
meanwhile, is refused (``RunNotWaitingError``), never accepted and then dropped".

Two callers A and B answer the same wait W of a run that waits on the same key again
after each answer (``ah-loop``). B's answer is taken; the run moves on and parks on the
next wait under key ``k``. A, a second concurrent answer to W, is not refused: it is
stored and applied to the *next* wait, a wait that did not exist when A was called.

Two ways in, each made deterministic by letting B's whole ``respond`` run at one point of A's:

* between ``ScheduledRuntime.respond``'s own read of the run (runtime.py: it takes the wait
  key from it) and ``Driver.accept_event``'s read: ``accept_event`` checks the run it reads
  then, not the wait ``respond`` was called for, so nothing pins A to W at all;
* between ``accept_event``'s read and its inbox write. On the Redis store the version guard
  (``lua/inbox_put.lua``, ``OneAnswer``) refuses the write, but ``accept_event`` answers
  ``RunMovedError`` by reading the run again and answering whatever it waits on now
  (``ANSWER_TRIES`` loop), current_wait or not (distributed too: the last test, with an
  in-process Celery worker). On the memory and SQLite stores there is no
  version at all (``OneAnswer.run_key`` is None): ``LocalInbox.put`` only checks that no
  event is queued, and B's was applied already.

At fault: driver.py ``Driver.accept_event`` (the retry on ``RunMovedError`` for
``current_wait``; no version for non-Redis stores) and runtime.py ``ScheduledRuntime.respond``
(the wait it read is not handed down). Embedded mode on Redis, memory and SQLite stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import Settings, create_scheduled_runtime
from abstractruntime_celery.errors import RunNotWaitingError
from tests.conftest import STORE_URL
from tests.workflows_adv_h import registry

pytestmark = pytest.mark.timeout(120)

STORES = ["redis", "memory", "sqlite"]


def _runtime(kind: str, prefix: str, tmp_path: Path) -> Any:
    url = {"redis": STORE_URL, "memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/runs.db"}[kind]
    # (a short lease: stores without versions check an answer under the run's lease, and B's
    # respond, run inside A's put by the hook, waits for A's lease to expire)
    return create_scheduled_runtime(settings=Settings(store_url=url, key_prefix=prefix, lease_ttl_s=2.0),
                                    registry=registry)


def _shown(result: Any) -> str:
    return repr(result) if isinstance(result, Exception) else f"the run {result.status.value}, got={result.vars.get('got')}"


def _race(sr: Any, where: str) -> tuple[Any, Any]:
    """A responds to wait 1; at ``where`` in A's call, B's respond to wait 1 runs to the end.
    Returns (A's result or error, the run after both)."""
    run_id, state = sr.run(registry.get("ah-loop"), vars={"n": 3})
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "k"
    driver = sr.driver
    target: Any = driver if where == "accept" else driver.coord.inbox
    name = "accept_event" if where == "accept" else "put"
    real: Callable[..., Any] = getattr(target, name)
    fired = []

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if not fired:
            fired.append(1)
            b = sr.respond(run_id, {"who": "B"})  # B answers wait 1 and the run parks on wait 2
            assert b.status == RunStatus.WAITING and b.vars["got"] == [{"who": "B"}]
        return real(*args, **kwargs)

    setattr(target, name, hooked)
    try:
        try:
            a: Any = sr.respond(run_id, {"who": "A"})  # A: called while the run is in wait 1
        except Exception as exc:
            a = exc
    finally:
        setattr(target, name, real)
    return a, sr.get_state(run_id)


@pytest.mark.parametrize("kind", STORES)
def test_a_respond_overtaken_before_its_check_is_refused_not_applied_to_the_next_wait(
        kind: str, prefix: str, tmp_path: Path) -> None:
    sr = _runtime(kind, prefix, tmp_path)
    try:
        a, run = _race(sr, "accept")
        assert isinstance(a, RunNotWaitingError), (
            f"A answered wait 1 after B did; A got {_shown(a)}, and the run took {run.vars.get('got')}")
        assert run.vars.get("got") == [{"who": "B"}]
    finally:
        sr.stop()


@pytest.mark.parametrize("kind", STORES)
def test_a_respond_overtaken_between_its_check_and_its_write_is_refused_not_applied_to_the_next_wait(
        kind: str, prefix: str, tmp_path: Path) -> None:
    sr = _runtime(kind, prefix, tmp_path)
    try:
        a, run = _race(sr, "put")
        assert isinstance(a, RunNotWaitingError), (
            f"A answered wait 1 after B did; A got {_shown(a)}, and the run took {run.vars.get('got')}")
        assert run.vars.get("got") == [{"who": "B"}]
    finally:
        sr.stop()


@pytest.fixture
def distributed(prefix: str) -> Any:
    from celery.contrib.testing.worker import start_worker

    from tests.conftest import make_settings
    from tests._adv_h import make_app

    settings = make_settings(prefix)
    app = make_app(settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                      shutdown_timeout=10, loglevel="WARNING"):
        yield sr
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(settings.queue)


def test_distributed_a_respond_overtaken_between_its_check_and_its_write_is_refused(distributed: Any) -> None:
    a, run = _race(distributed, "put")
    assert isinstance(a, RunNotWaitingError), (
        f"A answered wait 1 after B did; A got {_shown(a)}, and the run took {run.vars.get('got')}")
