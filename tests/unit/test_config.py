"""Settings and registry loading: one place, clear errors, safe defaults."""

from __future__ import annotations

import pytest
from celery import Celery

from abstractruntime_celery import ConfigError, Settings, install, load_settings
from abstractruntime_celery.registry import as_registry, load_registry
from abstractruntime_celery.stores import open_stores
from tests.workflows import WORKFLOWS


def test_environment_beats_conf_beats_defaults() -> None:
    conf = {"abstractruntime_timer_horizon_s": 120, "abstractruntime_queue": "from-conf"}
    env = {"ABSTRACTRUNTIME_CELERY_QUEUE": "from-env", "ABSTRACTRUNTIME_CELERY_LEASE_TTL_S": "7.5"}
    s = load_settings(conf, env)
    assert (s.timer_horizon_s, s.queue, s.lease_ttl_s, s.sweep_interval_s) == (120.0, "from-env", 7.5, 15.0)


def test_malformed_values_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="lease_ttl_s"):
        load_settings({}, {"ABSTRACTRUNTIME_CELERY_LEASE_TTL_S": "soon"})
    with pytest.raises(ConfigError, match="timer_horizon_s"):
        Settings(timer_horizon_s=0)


@pytest.mark.parametrize("name", ["lease_ttl_s", "timer_horizon_s", "orphan_grace_s", "event_redeliver_s",
                                  "sweep_interval_s", "control_ttl_s", "retry_backoff_s"])
@pytest.mark.parametrize("raw", ["nan", "inf", "-inf"])
def test_a_number_setting_that_is_not_finite_is_refused_by_name(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({}, {f"ABSTRACTRUNTIME_CELERY_{name.upper()}": raw})


def test_the_unknown_workflow_grace_may_be_infinite_meaning_never() -> None:
    assert load_settings({}, {"ABSTRACTRUNTIME_CELERY_UNKNOWN_WORKFLOW_GRACE_S": "inf"}).unknown_workflow_grace_s \
        == float("inf")
    with pytest.raises(ConfigError, match="unknown_workflow_grace_s"):
        Settings(unknown_workflow_grace_s=float("nan"))


def test_lost_tick_after_s_left_at_0_follows_the_timer_horizon_and_a_smaller_one_is_refused() -> None:
    assert Settings().lost_tick_after_s == 300.0
    assert Settings(timer_horizon_s=900.0).lost_tick_after_s == 900.0
    with pytest.raises(ConfigError, match="lost_tick_after_s"):
        Settings(timer_horizon_s=900.0, lost_tick_after_s=600.0)
    for name in ("orphan_grace_s", "event_redeliver_s", "unknown_workflow_grace_s"):
        with pytest.raises(ConfigError, match=name):
            Settings(**{name: -1.0})


def test_a_retry_never_waits_past_the_timer_horizon() -> None:
    from abstractruntime_celery.tick import retry_delay

    s = Settings(timer_horizon_s=5.0, retry_backoff_s=20.0, retry_jitter=False)
    assert [retry_delay(s, n) for n in (1, 2, 5)] == [5.0, 5.0, 5.0]
    assert retry_delay(Settings(retry_jitter=False), 3) == 2.0


def test_coordination_follows_the_first_redis_url() -> None:
    assert Settings().resolved_coord_url() == "memory://"
    assert Settings().resolved_coord_url("redis://b:6379/0") == "redis://b:6379/0"
    assert Settings(store_url="redis://s/1").resolved_coord_url("redis://b/0") == "redis://s/1"
    with pytest.raises(ConfigError, match="coord_url"):
        Settings(coord_url="sqlite:///x.db").resolved_coord_url()


def test_registry_from_path_specs_or_callable() -> None:
    assert "timer" in load_registry("tests.workflows:registry").list_ids()
    assert "timer" in load_registry("tests.workflows:build_registry").list_ids()
    assert len(as_registry(WORKFLOWS).list_ids()) == len(WORKFLOWS)
    with pytest.raises(ConfigError, match="no_such_module"):
        load_registry("no_such_module:registry")
    with pytest.raises(ConfigError, match="nothing_here"):
        load_registry("tests.workflows:nothing_here")
    with pytest.raises(ConfigError, match="WorkflowRegistry"):
        as_registry(42)


def test_unknown_store_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="ftp://x"):
        open_stores("ftp://x", prefix="p:", still_ours=lambda k, t: True)


def test_install_sets_safe_defaults_and_refuses_pickle() -> None:
    app = Celery("cfg-test", broker="memory://")
    install(app, beat=True)
    assert list(app.conf.accept_content) == ["json"] and app.conf.task_acks_late
    assert app.conf.task_reject_on_worker_lost and app.conf.worker_prefetch_multiplier == 1
    assert "abstractruntime.sweep" in app.conf.beat_schedule
    assert {"abstractruntime.tick", "abstractruntime.resume", "abstractruntime.start",
            "abstractruntime.sweep"} <= set(app.tasks.keys())
    risky = Celery("cfg-pickle", broker="memory://")
    risky.conf.accept_content = ["json", "pickle"]
    with pytest.raises(ConfigError, match="pickle"):
        install(risky)
