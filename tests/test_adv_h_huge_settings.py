"""Adversarial: finite settings too large for Redis pass the check that now refuses
``nan``/``inf``, and break every tick or sweep, as ``nan`` did.

``Settings.__post_init__`` (config.py) now refuses what is not finite, and values <= 0.
Redis takes time-to-live values in milliseconds as 64-bit integers (at most about
9.2e18 ms, 2.9e8 years): a finite number of seconds above about 9.2e15 is refused by Redis
at the first use, not by the settings check, so a worker configured with it says "ready"
and then:

* ``lease_ttl_s=1e16``: every start and every tick raises ``ResponseError: value is not an
  integer or out of range`` (``lua/lease_acquire.lua``'s PX): no run is ever made or moved;
* ``timer_horizon_s=1e16``: every sweep raises on the first timer it arms (``lua/timer_arm.lua``'s PX):
  the timer, event, orphan and parent passes never run again;
* ``sweep_interval_s=1e17``: every beat sweep raises taking its lock (``RedisSweepLock``'s
  PX of 0.8 x interval).

The same class of defect as adv-g's ``test_adv_g_bad_settings.py`` (a setting that is not a
number a worker can use must fail at start, naming it). At fault: config.py
``Settings.__post_init__`` (no upper bound). In-process, embedded on the Redis store.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from abstractruntime_celery import ConfigError, Settings, create_scheduled_runtime
from abstractruntime_celery.sweep import sweep
from tests.conftest import STORE_URL
from tests.workflows_adv_h import registry

pytestmark = pytest.mark.timeout(60)


def _start(sr: Any) -> None:
    sr.run(registry.get("timer"), vars={"delay": 0.2})


def _sweep_with_a_timer(sr: Any) -> None:
    run_id = sr.driver.start_run("timer", vars={"delay": 100.0}, dispatch=False)
    sr.driver.tick(run_id)
    sr.driver.coord.client.delete(f"{sr.driver.settings.key_prefix}timer:{run_id}")  # as if its message went
    sweep(sr.driver, force=True)


def _beat_sweep(sr: Any) -> None:
    sweep(sr.driver)


CASES: list[tuple[str, float, Callable[[Any], None]]] = [
    ("lease_ttl_s", 1e16, _start),
    ("timer_horizon_s", 1e16, _sweep_with_a_timer),
    ("sweep_interval_s", 1e17, _beat_sweep),
]


@pytest.mark.parametrize(("name", "value", "use"), CASES, ids=[f"{n}={v:g}" for n, v, _ in CASES])
def test_a_setting_redis_cannot_use_is_refused_at_start(name: str, value: float, use: Callable[[Any], None],
                                                        prefix: str) -> None:
    try:
        settings = Settings(store_url=STORE_URL, key_prefix=prefix, **{name: value})
    except ConfigError:
        return  # refused where it is built: what we want
    sr = create_scheduled_runtime(settings=settings, registry=registry, auto_start=False)
    try:
        use(sr)
    except Exception as exc:
        pytest.fail(f"{name}={value:g} was accepted, then: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        sr.stop()
