"""Adversarial (retention): ``retention_s`` is a setting of each process, and the most eager wins.

A deployment keeps its runs for ever (``retention_s=0`` on its workers and beat). An
operator runs ``python -m abstractruntime_celery sweep`` (here through click's runner) from a shell that holds the
workers' store, prefix, broker and registry but not ``ABSTRACTRUNTIME_CELERY_RETENTION_S``
(the command says it runs "the beat job: timers, lost events, orphans, parents"): it
sweeps with the default, 7 days, and deletes every run that ended more than 7 days ago,
ledgers included. The same goes for any process that sweeps (``Scheduler.poll_once``, a
web app's embedded scheduler, a beat of another deploy) with another ``retention_s``:
nothing records the cluster's retention where a sweep would see it.
"""

from __future__ import annotations

import os

import pytest
from abstractruntime import RunStatus
from click.testing import CliRunner

from tests.conftest import BROKER_URL, STORE_URL
from tests.test_retention import _driver, _finished


@pytest.mark.xfail(strict=True, reason="retention_s is per process: a CLI sweep from a shell without the "
                                       "workers' retention_s=0 deletes runs the deployment keeps for ever")
def test_a_cli_sweep_from_a_shell_without_the_retention_setting_keeps_what_the_workers_keep(prefix: str) -> None:
    driver = _driver(prefix, retention_s=0.0)  # the deployment: runs are kept for ever
    [rid] = _finished(driver, 1)
    run, version = driver.run_store.load_with_version(rid)
    run.updated_at = "2020-01-01T00:00:00+00:00"  # it ended years ago: an audit record
    driver.run_store.save(run, expected_version=version)
    from abstractruntime_celery.cli import main

    # what an operator's shell beside the workers holds (no retention setting: the default)
    env = {k: None for k in os.environ if k.startswith("ABSTRACTRUNTIME_CELERY_")}
    env.update({"ABSTRACTRUNTIME_CELERY_STORE_URL": STORE_URL, "ABSTRACTRUNTIME_CELERY_KEY_PREFIX": prefix,
                "ABSTRACTRUNTIME_CELERY_BROKER_URL": BROKER_URL, "ABSTRACTRUNTIME_CELERY_QUEUE": f"{prefix}q",
                "ABSTRACTRUNTIME_CELERY_REGISTRY": "tests.workflows_cli:registry"})
    result = CliRunner().invoke(main, ["sweep", "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    kept = driver.run_store.load(rid)
    assert kept is not None and kept.status == RunStatus.COMPLETED, \
        f"an operator's sweep deleted a run the workers keep for ever: {result.stdout.strip()}"
