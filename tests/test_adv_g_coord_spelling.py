"""Adversarial: ``coord_url`` naming the store's own Redis, spelled another way.

``driver._check_one_redis`` accepts a ``coord_url`` that names the Redis store's server and
database however it is written (``localhost`` and ``127.0.0.1`` "meet": host names are
resolved). But each URL string gets its own connection pool (``connection.connect``), and
the driver decides whether store and coordination share one Redis by *pool identity*
(``RedisRunStore.shares_connection``). So with ``store_url=redis://127.0.0.1:6379/10`` and
``coord_url=redis://localhost:6379/10`` (the README's advice: "set it to the store's URL")
the driver silently runs as if they were two Redis servers: the sweep falls back to
``GenericSource``, which reads every candidate record of every pass (O(runs) per sweep,
not O(sweep_batch)), and ticks use the weaker non-atomic event path of the file/SQLite
stores.

The sweep is the one a worker runs (``sweep.sweep`` on the driver ``build`` makes).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


from abstractruntime_celery.driver import build
from abstractruntime_celery.sweep import sweep
from bench.roundtrips import count_roundtrips
from tests._regress_d import Recorder
from tests.conftest import STORE_URL, make_settings
from tests.workflows_adv_g import registry

BATCH = 5
STUCK = 40
READ_BOUND = 2 * BATCH + 4  # as tests/test_regress_sweep_starvation.py
RECORD_READS = ("HGET", "HMGET", "HGETALL")


def _record_reads(rt: object, db: int = 10) -> int:
    return sum(1 for trip_db, names in rt.trips if trip_db == db for n in names if n in RECORD_READS)  # type: ignore[attr-defined]


def test_a_coord_url_naming_the_stores_redis_another_way_still_sweeps_o_of_the_batch(prefix: str) -> None:
    assert STORE_URL.startswith("redis://127.0.0.1:")
    settings = make_settings(prefix, sweep_batch=BATCH, coord_url=STORE_URL.replace("127.0.0.1", "localhost"))
    driver = build(settings, registry, Recorder(), distributed=True)  # accepted: the same Redis
    until = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()
    for _ in range(STUCK):  # paused runs whose timer is due
        run_id = driver.start_run("timer", vars={"until": until}, dispatch=False)
        driver.tick(run_id)
        driver.control.pause(run_id)
    with count_roundtrips() as rt:
        report = sweep(driver, force=True)
    reads = _record_reads(rt)
    assert reads <= READ_BOUND, (
        f"one sweep with sweep_batch={BATCH} and {STUCK} stuck runs read {reads} run records "
        f"(SweepReport.read={report.read})")


def test_the_same_sweep_with_coord_url_spelled_as_the_store_url_reads_o_of_the_batch(prefix: str) -> None:
    # Holds (the control of the test above): the very same Redis, written the same way.
    settings = make_settings(prefix, sweep_batch=BATCH, coord_url=STORE_URL)
    driver = build(settings, registry, Recorder(), distributed=True)
    until = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()
    for _ in range(STUCK):
        run_id = driver.start_run("timer", vars={"until": until}, dispatch=False)
        driver.tick(run_id)
        driver.control.pause(run_id)
    with count_roundtrips() as rt:
        sweep(driver, force=True)
    assert _record_reads(rt) <= READ_BOUND
