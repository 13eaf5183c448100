"""Adversarial: a failing node is retried at once, not after its backoff, when a tick of the
run was asked for while it failed.

README: "A failing node is retried with backoff (``retry_backoff_s`` doubling up to
``retry_backoff_max_s``, with jitter); after ``tick_max_attempts`` failures in a row the run
is marked FAILED". ``Ticker._failed`` (tick.py) sends the retry with its ETA; but the
release of the failing tick (``lua/lease_release.lua``) also finds the pending word that any
tick delivered meanwhile leaves (an event's tick, the sweep's, a duplicate: busy acquires in
``lua/lease_acquire.lua``) and answers it with an immediate tick of the run's own
(``Ticker._follow_up``: reason "asked", no ETA). That tick runs the failing node again at
once, and counts another attempt: under steady traffic a node failing for a few seconds
(a downstream outage the backoff is there to ride out) uses up ``tick_max_attempts`` in as
many round trips and the run is FAILED.

Deterministic, in-process: a recording dispatcher, and a node that leaves the pending word
itself (what a busy acquire during it leaves). At fault: tick.py ``Ticker._follow_up`` /
``_failed`` (the own "asked" tick is sent beside the backed-off retry),
``lua/lease_release.lua``.
"""

from __future__ import annotations


import pytest

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import make_settings
from tests.workflows_adv_h import registry

pytestmark = pytest.mark.timeout(60)


def test_a_failing_node_asked_for_meanwhile_is_retried_only_after_its_backoff(prefix: str) -> None:
    settings = make_settings(prefix, retry_backoff_s=5.0, retry_jitter=False, tick_max_attempts=5)
    rec = Recorder()
    driver = build(settings, registry, rec, distributed=True)
    run_id = driver.start_run("ah-fail-asked", vars={"prefix": prefix}, dispatch=False)
    with pytest.raises(RuntimeError, match="downstream is down"):
        driver.tick(run_id)
    mine = [(reason, eta) for r, reason, eta, _ in rec.sent if r == run_id]
    assert mine and all(eta is not None for _, eta in mine), (
        f"the failing tick sent {mine}: a tick with no ETA re-runs the node at once, not after "
        f"retry_backoff_s={settings.retry_backoff_s}")
