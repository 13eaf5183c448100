"""What a refused save invalidates goes with it, the ledger included?

A tick applying an event queues AbstractRuntime's "resume" ledger record (a COMPLETED
record carrying the payload) and then the save that commits the resume. When a pause lands
between the tick's read and that save, the save is refused (the event stays in the inbox,
as it should), but the ledger append ahead of it is fenced only by the lease and lands.
After ``resume_run`` the event is applied again, and the ledger holds two resume records
for one event: a ledger-only replay applies it twice. ``control_ttl_s=0`` changes nothing
here (the resume path does not probe the control state; the store's check refuses the save).

The window is opened from outside the package, as in tests/test_regress_refused_event_save.py:
the worker's registry lookup (after the read, before any write) waits at a gate.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest

from abstractruntime_celery.driver import build
from tests import workflows_adv_f as wf
from tests import workflows_regress_c as rc
from tests._adv_f import Side, wait_until
from tests.conftest import make_settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def gate() -> Iterator[rc.Gate]:
    g = rc.Gate(f"af{uuid.uuid4().hex[:8]}:gate")
    yield g
    g.open()
    g.clear()


def resume_records(ledger: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in ledger if isinstance(r.get("effect"), dict) and r["effect"].get("type") == "resume"]


@pytest.mark.parametrize("control_ttl_s", [0.0, 0.25])
def test_an_event_whose_apply_a_pause_refused_has_one_resume_record_in_the_ledger(
        prefix: str, fx: str, gate: rc.Gate, control_ttl_s: float) -> None:
    settings = make_settings(prefix, control_ttl_s=control_ttl_s)
    ctl = build(settings, wf.build_registry())
    worker = build(settings, wf.build_registry(rc.GatedRegistry, gate.name, True))
    run_id = ctl.start_run("rc-event", vars={"fx": fx}, dispatch=False)
    assert ctl.tick(run_id).status == "waiting"
    ctl.accept_event(run_id, "go", {"v": 1}, dispatch=False)

    gate.arm()
    tick = Side(lambda: worker.tick(run_id))
    wait_until(lambda: gate.entered() == 1, 30, "the event's tick to read the run and its event")
    ctl.control.pause(run_id)
    gate.open()
    tick.result()
    assert rc.fx_count(fx, run_id, "done") == 0  # the refused tick stopped before the node after the wait
    assert ctl.coord.inbox.has(run_id, ctl.coord.inbox.pending(run_id).events[0].event_id)

    ctl.control.resume(run_id)
    final = ctl.tick(run_id)
    assert final.status == "completed"
    assert ctl.load(run_id).output == {"event": {"v": 1}}
    assert rc.fx_count(fx, run_id, "done") == 1
    records = resume_records(ctl.runtime.ledger_store.list(run_id))
    assert len(records) == 1, [r["effect"]["payload"]["payload"] for r in records]
