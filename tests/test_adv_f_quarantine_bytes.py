"""An inbox entry that is not UTF-8 (corruption, a client writing bytes) must be quarantined
like any other unreadable entry, and the run must go on taking its good events.

The tick's read of the inbox rides the lease-acquire pipeline on a client that decodes
replies: a reply that is not UTF-8 makes the whole pipeline raise ``UnicodeDecodeError``.
Every tick of the run then fails before it can quarantine anything, leaving the lease it
just took to expire; nothing is reported in ``stats.errors``, the good event is stranded.

The entry is written by hand into the run's inbox hash, as a Redis client would; a real
Celery worker ticks the run.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from tests import workflows_adv_f as wf
from tests.conftest import STORE_URL

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sr(celery_app: Any, settings: Any, worker: Any) -> Iterator[Any]:
    rt = create_scheduled_runtime(app=celery_app, settings=settings, registry=wf.build_registry(), auto_start=False)
    yield rt
    rt.stop()


@pytest.mark.parametrize("field,raw", [
    (b"junk", b"\xff\xfe not utf-8"),
    (b"\xff\xfejunk", b"1|{}"),
], ids=["value", "field"])
def test_an_inbox_entry_that_is_not_utf8_is_quarantined_and_the_run_takes_its_good_event(
        sr: Any, prefix: str, fx: str, field: bytes, raw: bytes) -> None:
    run_id, state = sr.run(sr.registry.get("rc-event"), vars={"fx": fx})
    assert state.status == RunStatus.WAITING
    r = redis.Redis.from_url(STORE_URL)
    r.hset(f"{prefix}inbox:{run_id}", field, raw)

    done = sr.resume_event(run_id=run_id, wait_key="go", payload={"v": 1}, timeout=15)
    assert done.status == RunStatus.COMPLETED, (done.status, done.error)
    assert done.output == {"event": {"v": 1}}
    assert r.hlen(f"{prefix}inbox:{run_id}") == 0
    assert r.hlen(f"{prefix}quarantine:{run_id}") == 1
    assert sr.stats.events_quarantined == 1
