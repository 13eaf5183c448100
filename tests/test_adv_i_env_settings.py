"""Held (coverage): a worker configured badly through the environment, on the settings of
c82cbc2 (``lost_tick_after_s``, MAX_SECONDS), exits at start and names the setting:

* ``TIMER_HORIZON_S=900`` over the ``LOST_TICK_AFTER_S=300`` the cluster sets (under the horizon);
* ``LOST_TICK_AFTER_S=1e10`` (over MAX_SECONDS);
* ``LOST_TICK_AFTER_S=nan``.

Real ``celery worker`` subprocesses (one at a time).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._adv_g import adv_cluster

CASES = [
    ({"ABSTRACTRUNTIME_CELERY_TIMER_HORIZON_S": "900"}, "lost_tick_after_s"),
    ({"ABSTRACTRUNTIME_CELERY_LOST_TICK_AFTER_S": "1e10"}, "lost_tick_after_s"),
    ({"ABSTRACTRUNTIME_CELERY_LOST_TICK_AFTER_S": "nan"}, "lost_tick_after_s"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("env", "name"), CASES, ids=["horizon-over-note-life", "note-life-1e10", "note-life-nan"])
def test_a_worker_configured_badly_through_the_environment_exits_naming_the_setting(
        env: dict[str, str], name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with adv_cluster(tmp_path, request) as cluster:
        cluster.env_extra.update(env)
        with pytest.raises(AssertionError, match="exited at start") as info:
            cluster.worker("bad", concurrency=1)
        assert name in str(info.value)
        assert "ConfigError" in str(info.value)
