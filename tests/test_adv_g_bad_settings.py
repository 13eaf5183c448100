"""Adversarial: settings that are not numbers a worker can use (``nan``, ``inf``).

"Misconfiguration fails at start, loudly: a worker that cannot ... does not say 'ready'."
``Settings.__post_init__`` checks ranges with comparisons (``x <= 0``), and every
comparison with NaN is false, so ``nan`` passes all of them; ``inf`` passes too. A worker
started with one of these says "ready", then:

* ``LEASE_TTL_S=nan``: every start and tick raises ``ValueError: cannot convert float NaN
  to integer`` (the lease's PX); a start message creates no run;
* ``TIMER_HORIZON_S=inf`` / ``nan``: every tick that parks a run on a timer raises
  (``OverflowError`` / ``ValueError``: the timer note's TTL) after its commit; with ``inf``
  a wait of any length would also get a broker ETA (no horizon at all);
* ``ORPHAN_GRACE_S=nan`` / ``EVENT_REDELIVER_S=nan``: every sweep raises (Redis refuses
  ``nan`` as a score bound), so orphans, lost events and parents are never recovered.

Real ``celery worker`` subprocesses, configured through the environment only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from abstractruntime_celery import ConfigError, Settings
from tests._adv_g import adv_cluster

CASES = [
    ("lease_ttl_s", float("nan")),
    ("timer_horizon_s", float("inf")),
    ("timer_horizon_s", float("nan")),
    ("orphan_grace_s", float("nan")),
    ("event_redeliver_s", float("nan")),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "value"), CASES, ids=[f"{n}={v}" for n, v in CASES])
def test_a_worker_whose_setting_is_not_a_usable_number_does_not_say_ready(
        name: str, value: float, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with pytest.raises(ConfigError, match=name):  # in-process: refused where it is built
        Settings(**{name: value})
    with adv_cluster(tmp_path, request) as cluster:
        env_name = f"ABSTRACTRUNTIME_CELERY_{name.upper()}"
        cluster.env_extra[env_name] = str(value)
        try:
            cluster.worker("w", concurrency=1, ready_timeout=60)
        except AssertionError as exc:  # it exited at start: what we want, naming the setting
            assert "exited at start" in str(exc) and name in str(exc), str(exc)[-2000:]
            return
        pytest.fail(f"a worker with {env_name}={value} said ready")
