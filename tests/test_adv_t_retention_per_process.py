"""Adversarial (retention): ``retention_s`` is a setting of each process, and the most eager won.

A deployment keeps its runs for ever (``retention_s=0`` on its workers and beat). An
operator runs ``python -m abstractruntime_celery sweep`` (here through click's runner) from a
shell that holds the workers' store, prefix, broker and registry but not
``ABSTRACTRUNTIME_CELERY_RETENTION_S``: it swept with the default, 7 days, and deleted every
run that ended more than 7 days ago, ledgers included. The same went for any process that
sweeps (``Scheduler.poll_once``, a web app's embedded scheduler) with another ``retention_s``.

Fixed: a real ``celery worker`` records its ``retention_s`` at start (``{p}retention``),
and a sweep whose ``retention_s`` is not the recorded one deletes nothing and says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from abstractruntime import RunStatus
from click.testing import CliRunner

from abstractruntime_celery import retention
from tests.conftest import BROKER_URL, STORE_URL, make_settings
from tests.test_adv_t_start_after_expiry import _worker_exits
from tests.test_retention import _driver, _finished


def _old_run(driver: Any) -> str:
    [rid] = _finished(driver, 1)
    driver.coord.client.zadd(driver.coord.keys.ended, {rid: 1.0})  # it ended years ago: an audit record
    return rid


def _cli_sweep(prefix: str, **settings: str) -> dict[str, Any]:
    from abstractruntime_celery.cli import main

    # what an operator's shell beside the workers holds
    env: dict[str, Any] = {k: None for k in os.environ if k.startswith("ABSTRACTRUNTIME_CELERY_")}
    env.update({"ABSTRACTRUNTIME_CELERY_STORE_URL": STORE_URL, "ABSTRACTRUNTIME_CELERY_KEY_PREFIX": prefix,
                "ABSTRACTRUNTIME_CELERY_BROKER_URL": BROKER_URL, "ABSTRACTRUNTIME_CELERY_QUEUE": f"{prefix}q",
                "ABSTRACTRUNTIME_CELERY_REGISTRY": "tests.workflows_cli:registry"})
    env.update({f"ABSTRACTRUNTIME_CELERY_{k.upper()}": v for k, v in settings.items()})
    result = CliRunner().invoke(main, ["sweep", "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout)["sweep"])


@pytest.mark.timeout(120)
def test_a_cli_sweep_from_a_shell_without_the_retention_setting_keeps_what_the_workers_keep(prefix: str,
                                                                                          tmp_path: Path) -> None:
    driver = _driver(prefix, retention_s=0.0)  # the deployment: runs are kept for ever
    rid = _old_run(driver)
    code, output = _worker_exits(make_settings(prefix, retention_s=0.0), tmp_path, "keeps", {})
    assert code is None, f"the worker did not start:\n{output[-3000:]}"  # it started: it recorded 0
    assert retention.recorded(driver) == 0.0

    report = _cli_sweep(prefix)  # the default retention_s, 7 days
    kept = driver.run_store.load(rid)
    assert kept is not None and kept.status == RunStatus.COMPLETED, \
        f"an operator's sweep deleted a run the workers keep for ever: {report}"
    assert report["expired"] == 0 and report["retention_mismatch"] == 0.0


def test_a_sweep_with_the_recorded_retention_deletes(prefix: str) -> None:
    driver = _driver(prefix, retention_s=3600.0)
    rid = _old_run(driver)
    assert retention.record(driver) is None  # what a worker with retention_s=3600 does at start
    assert _cli_sweep(prefix, retention_s="7200")["retention_mismatch"] == 3600.0
    assert driver.run_store.load(rid) is not None
    report = _cli_sweep(prefix, retention_s="3600")
    assert report["expired"] == 1 and report["retention_mismatch"] is None, report
    assert driver.run_store.load(rid) is None
    # a worker started with another value takes over, and says what it replaced
    assert retention.record(_driver(prefix, retention_s=7200.0)) == 3600.0
