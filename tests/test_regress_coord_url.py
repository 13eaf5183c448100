"""Regression: a ``coord_url`` on another Redis than the Redis store stopped every run.

The store's save script checks the run's lease in the store's own Redis, but the lease
lived in the coordination Redis, so every save was refused as "lease lost" and no run
ever moved. Such a configuration must be refused when the driver is built, with a
``ConfigError`` naming both URLs (passwords masked): in ``build``, in
``create_scheduled_runtime`` and in a worker's ``driver_for``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.driver import build
from abstractruntime_celery.errors import ConfigError
from devkit.procs import wait_for
from tests._regress_d import make_app, regress_cluster
from tests.conftest import REDIS, STORE_URL, _delete_prefix, make_settings
from tests.workflows_regress_d import registry

OTHER_URL = f"{REDIS}/13"


@pytest.fixture
def other_db(prefix: str) -> Iterator[str]:
    """The other Redis database; what a driver may have written there under the prefix goes."""
    yield OTHER_URL
    _delete_prefix(OTHER_URL, prefix)


def test_a_driver_on_a_coordination_redis_other_than_its_redis_store_is_refused(prefix: str, other_db: str) -> None:
    settings = make_settings(prefix, coord_url=other_db)
    try:
        driver = build(settings, registry)
    except ConfigError as exc:
        message = str(exc)
        assert STORE_URL in message and other_db in message, message
    else:
        # Accepted: show what it leads to. A run is created, and no tick of it ever commits.
        run_id = driver.start_run("rd-quick", dispatch=False)
        outcomes = [driver.tick(run_id) for _ in range(3)]
        state = driver.load(run_id)
        pytest.fail(f"build accepted coord_url {other_db} beside store_url {STORE_URL}; then run {run_id} "
                    f"never progressed: still {state.status.value} after 3 ticks, skipped as "
                    f"{[o.skipped for o in outcomes]}")
    # coord_url naming the store's own Redis is fine, and runs progress.
    driver = build(replace(settings, coord_url=STORE_URL), registry)
    run_id = driver.start_run("rd-quick", dispatch=False)
    assert driver.tick(run_id).status == "completed"
    assert driver.load(run_id).status == RunStatus.COMPLETED


def test_create_scheduled_runtime_and_a_worker_refuse_a_coordination_redis_other_than_the_store(
        prefix: str, other_db: str) -> None:
    from abstractruntime_celery.tasks import driver_for

    settings = make_settings(prefix, coord_url=other_db)
    with pytest.raises(ConfigError, match="coord_url"):
        create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    with pytest.raises(ConfigError, match="coord_url"):
        driver_for(make_app(settings))  # what every task of a worker calls first


def test_the_refusal_names_both_redis_urls_without_their_passwords(prefix: str, other_db: str) -> None:
    store_url = STORE_URL.replace("redis://", "redis://:store-s3cret-pw@")
    coord_url = other_db.replace("redis://", "redis://:coord-s3cret-pw@")
    with pytest.raises(ConfigError) as caught:
        build(make_settings(prefix, store_url=store_url, coord_url=coord_url), registry)
    message = str(caught.value)
    assert "s3cret" not in message, message
    assert "/10" in message and "/13" in message and "127.0.0.1" in message, message



@pytest.mark.timeout(120)
def test_a_celery_worker_whose_coord_url_is_another_redis_than_its_store_does_not_start(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with regress_cluster(tmp_path, request, coord_url=OTHER_URL) as cluster:
        try:
            node = f"w.{cluster.settings.key_prefix.strip(':')}@%h"
            proc = cluster._spawn("w", ["worker", "-P", "prefork", "-c", "1", "-n", node, "-l", "INFO",
                                        "--without-mingle", "--without-gossip", "--without-heartbeat",
                                        "-Q", cluster.settings.queue])
            wait_for(lambda: " ready." in proc.log() or not proc.alive(), 60, "the worker to start or exit")
            assert not proc.alive(), "the worker said ready"
            assert "ConfigError" in proc.log() and "coord_url" in proc.log()
        finally:
            _delete_prefix(OTHER_URL, cluster.settings.key_prefix)
