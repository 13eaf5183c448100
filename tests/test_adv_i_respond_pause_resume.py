"""``respond`` when a ``pause_run`` + ``resume_run`` land between its check and its write.

The run then still waits on the same wait (same key, same node, nothing answered it), but
both control actions are saves: they change the run's version and ``updated_at``, which is
how ``respond`` tells "the wait I answer" from "a later wait under the same key" (the two
cannot be told apart from the wait itself: a loop re-enters an identical wait). The choice
(README, "Where this differs from the seed"): such a ``respond`` is refused with
``RunNotWaitingError`` and stores nothing; the caller answers again and is taken. A refusal
of an answer that could have been taken is safe; an answer taken by a wait it was not meant
for is not (``tests/test_adv_h_respond_moved_on.py``).

Found by the adversarial round I, as a false refusal. Deterministic, in-process: the control
calls run at one point of ``respond`` (a hook on the inbox write, Redis store, embedded).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import RunNotWaitingError, Settings, create_scheduled_runtime
from tests.conftest import STORE_URL
from tests.workflows_adv_h import registry

pytestmark = pytest.mark.timeout(60)


def test_respond_overlapped_by_a_pause_and_resume_is_refused_cleanly_and_taken_when_sent_again(prefix: str) -> None:
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
            with pytest.raises(RunNotWaitingError, match="moved on"):
                sr.respond(run_id, {"who": "A"})
        finally:
            inbox.put = real
        before = sr.get_state(run_id)
        assert before.status == RunStatus.WAITING and not before.vars.get("got")  # nothing was stored
        result = sr.respond(run_id, {"who": "A"})  # answered again: taken
        assert result.vars.get("got") == [{"who": "A"}]
    finally:
        sr.stop()
