"""The registry is named once: ``create_scheduled_runtime(app=...)`` finds the one
``install`` set on the app (and its settings), so a web process does not pass it again."""

from __future__ import annotations

from typing import Any

from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.app import make_app as make_plain_app
from abstractruntime_celery.tasks import install, registry_for, settings_for
from tests.conftest import BROKER_URL
from tests.workflows import registry


def test_a_runtime_on_an_installed_app_uses_its_registry_and_settings(celery_app: Any, worker: Any,
                                                                      settings: Any) -> None:
    sr = create_scheduled_runtime(app=celery_app, auto_start=False)
    assert sr.registry is registry
    assert sr.driver.settings == settings
    run_id, state = sr.run("event", vars={"key": "go"}, timeout=30)
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "go"
    assert sr.respond(run_id, {"v": 1}, timeout=30).output == {"event": {"v": 1}}
    assert registry_for(celery_app, settings) is registry  # the app still has it afterwards


def test_a_registry_path_in_the_app_conf_is_loaded_once_for_the_runtime(settings: Any) -> None:
    app = make_plain_app(BROKER_URL, name="arc-registry-path", config_module=None,
                         abstractruntime_registry="tests.workflows:registry",
                         abstractruntime_store_url=settings.store_url,
                         abstractruntime_key_prefix=settings.key_prefix)
    sr = create_scheduled_runtime(app=app, auto_start=False)
    assert sr.registry is registry
    assert sr.driver.settings.key_prefix == settings.key_prefix == settings_for(app).key_prefix


def test_workflows_are_added_to_the_app_registry_and_an_explicit_one_still_wins(settings: Any) -> None:
    from abstractruntime import StepPlan, WorkflowSpec

    from abstractruntime_celery import WorkflowRegistry

    extra = WorkflowSpec(workflow_id="registry-once-extra", entry_node="a",
                         nodes={"a": lambda run, ctx: StepPlan(node_id="a", complete_output={})})
    own = WorkflowRegistry()
    app = make_plain_app(BROKER_URL, name="arc-registry-own", config_module=None)
    install(app, registry=own, settings=settings)
    sr = create_scheduled_runtime(app=app, workflows=[extra], auto_start=False)
    assert sr.registry is own and "registry-once-extra" in own
    other = WorkflowRegistry()
    sr2 = create_scheduled_runtime(app=app, registry=other, auto_start=False)
    assert sr2.registry is other
