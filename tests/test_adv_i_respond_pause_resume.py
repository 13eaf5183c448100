"""Adversarial: ``respond`` is refused although the run is still in the very wait it saw,
when a ``pause_run`` + ``resume_run`` landed between its check and its write.

README ("Where this differs from the seed"): ``respond`` answers the wait the run is in when
it is called, once; a second answer, or one to a run that moved on, is refused. A pause and
a resume change no wait: the run is WAITING on the same wait (same key, same node, nothing
answered it). But both are saves, so they bump the run's version and its ``updated_at``:
driver.py ``Driver._store_event`` turns the store's ``RunMovedError`` (the version guard of
``lua/inbox_put.lua``) into ``RunNotWaitingError`` at once, without checking the run again,
and ``Driver._checked`` compares ``updated_at`` (any save) rather than the wait itself. The
caller is told the run "moved on from the wait this event answers" while it still waits on it.

Deterministic, in-process: the control calls run at one point of ``respond`` (a hook on the
inbox write, Redis store, embedded). At fault: driver.py ``Driver._store_event`` /
``Driver._checked`` (``answering`` is the run's ``updated_at``, not the identity of its wait).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import Settings, create_scheduled_runtime
from tests.conftest import STORE_URL
from tests.workflows_adv_h import registry

pytestmark = pytest.mark.timeout(60)


@pytest.mark.xfail(strict=True, reason="a pause+resume between respond's check and its write refuses it though the "
                                       "wait is the same (driver.py Driver._store_event/_checked)")
def test_respond_to_a_wait_that_was_paused_and_resumed_meanwhile_is_taken(prefix: str) -> None:
    sr = create_scheduled_runtime(settings=Settings(store_url=STORE_URL, key_prefix=prefix), registry=registry)
    try:
        run_id, state = sr.run(registry.get("ah-loop"), vars={"n": 2})
        assert state.status == RunStatus.WAITING and state.waiting.wait_key == "k"
        inbox = sr.driver.coord.inbox
        real: Callable[..., Any] = inbox.put
        fired: list[int] = []

        def hooked(*args: Any, **kwargs: Any) -> Any:
            if not fired:
                fired.append(1)
                sr.pause_run(run_id)
                sr.resume_run(run_id)
                after = sr.get_state(run_id)
                assert after.status == RunStatus.WAITING and after.waiting.wait_key == "k" \
                    and after.current_node == state.current_node and not after.vars.get("got")
            return real(*args, **kwargs)

        inbox.put = hooked
        try:
            result = sr.respond(run_id, {"who": "A"})
        finally:
            inbox.put = real
        assert result.vars.get("got") == [{"who": "A"}]
    finally:
        sr.stop()
