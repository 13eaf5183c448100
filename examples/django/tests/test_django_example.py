"""The Django example, driven through Django's test client and a real ``celery -A mysite
worker`` (conftest.py). Runs only inside the Django process test_django_suite.py starts."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client

from abstractruntime_celery.contrib.django import get_runtime, runtime, start_run
from abstractruntime_celery.contrib.process import ProcessRuntime
from abstractruntime_celery.sweep import sweep
from devkit.cleanup import queue_len, unacked_for
from devkit.procs import wait_for

pytestmark = pytest.mark.timeout(120)
TIMEOUT = 30.0


def emails_of(run_id: str) -> list[str]:
    """Subjects the example's stand-in mailer sent for ``run_id``: one per node that ran."""
    raw = redis.Redis.from_url(settings.OUTBOX_URL).lrange(settings.OUTBOX_KEY, 0, -1)
    return [m["subject"] for m in map(json.loads, raw) if m["run_id"] == run_id]


def status_of(client: Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/runs/{run_id}/")
    return response.json() if response.status_code == 200 else {"status": f"http {response.status_code}"}


def wait_status(client: Client, run_id: str, status: str) -> dict[str, Any]:
    return wait_for(lambda: (s := status_of(client, run_id))["status"] == status and s, TIMEOUT,
                    f"run {run_id} to be {status}")


def drained() -> bool:
    """Every message of the project's queue was delivered and acked (tasks are acks_late)."""
    broker = settings.CELERY_BROKER_URL
    return queue_len(broker, settings.CELERY_ABSTRACTRUNTIME_QUEUE) == 0 and not unacked_for(
        redis.Redis.from_url(broker), [settings.CELERY_ABSTRACTRUNTIME_QUEUE])


def test_the_settings_are_the_django_celery_abstractruntime_names(site: Any) -> None:
    s = get_runtime().driver.settings
    assert s.key_prefix == settings.CELERY_ABSTRACTRUNTIME_KEY_PREFIX
    assert s.queue == settings.CELERY_ABSTRACTRUNTIME_QUEUE and s.orphan_grace_s == 1.0
    assert s.store_url == settings.CELERY_ABSTRACTRUNTIME_STORE_URL
    assert "onboarding" in get_runtime().registry  # CELERY_ABSTRACTRUNTIME_REGISTRY, named once


def test_signup_starts_a_run_that_waits_for_approval_and_the_answer_view_completes_it(site: Any) -> None:
    client = Client()
    response = client.post("/signup/", {"email": "ada@example.com"})
    assert response.status_code == 201, response.content
    run_id = response.json()["run_id"]
    waiting = wait_status(client, run_id, "waiting")
    assert waiting["prompt"] == "Approve ada@example.com?"
    assert emails_of(run_id) == ["Welcome! Your account waits for approval."]

    response = client.post(f"/runs/{run_id}/answer/", {"approved": "yes"})
    assert response.status_code == 202, response.content
    done = wait_status(client, run_id, "completed")
    assert done["output"] == {"email": "ada@example.com", "approved": True}
    assert emails_of(run_id) == ["Welcome! Your account waits for approval.", "Your account is active."]
    assert client.post(f"/runs/{run_id}/answer/", {"approved": "yes"}).status_code == 409  # answered once
    assert client.get("/runs/not-a-run/").status_code == 404


def test_a_rolled_back_transaction_leaves_no_run_and_nothing_of_it_ever_runs(site: Any) -> None:
    from myapp.models import Signup

    class Rollback(Exception):
        pass

    rolled_back = eager = ""
    with pytest.raises(Rollback), transaction.atomic():
        rolled_back = start_run("onboarding", {"email": "gone@example.com"})  # on_commit=True
        Signup.objects.create(email="gone@example.com", run_id=rolled_back)
        raise Rollback
    with pytest.raises(Rollback), transaction.atomic():  # what on_commit prevents
        eager = start_run("onboarding", {"email": "eager@example.com"}, on_commit=False)
        raise Rollback
    assert not Signup.objects.filter(run_id=rolled_back).exists()
    # The eager start ran its first node although its transaction rolled back.
    wait_for(lambda: emails_of(eager), TIMEOUT, "the eager run's welcome email")

    time.sleep(settings.CELERY_ABSTRACTRUNTIME_ORPHAN_GRACE_S + 0.2)  # past the orphan grace
    sweep(get_runtime().driver, force=True)  # one sweep: it re-ticks orphans past their grace
    wait_for(drained, TIMEOUT, "the queue to drain")
    assert emails_of(rolled_back) == []  # no node of it ran
    assert get_runtime().driver.run_store.load(rolled_back) is None  # and nothing is left to run


def test_a_committed_start_runs_once_its_transaction_commits(site: Any) -> None:
    client = Client()
    with transaction.atomic():
        run_id = start_run("onboarding", {"email": "later@example.com"})
        assert get_runtime().driver.run_store.load(run_id) is None  # not yet: the transaction is open
    wait_status(client, run_id, "waiting")
    assert emails_of(run_id) == ["Welcome! Your account waits for approval."]


def test_one_runtime_per_process_built_once_under_a_lock_and_shared_by_threads(site: Any) -> None:
    built = []

    def slow_build() -> Any:
        time.sleep(0.05)  # widen the window two unlocked builds would both enter
        built.append(1)
        return get_runtime()

    holder = ProcessRuntime(slow_build)
    barrier = threading.Barrier(12)
    got: list[Any] = []

    def use() -> None:
        barrier.wait()
        got.append(holder.get())

    threads = [threading.Thread(target=use) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 12 and all(g is got[0] for g in got) and built == [1] and holder.builds == 1
    assert runtime.builds == 1  # the Django app's own runtime too, after every test here

    run_ids: list[str] = []
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            run_ids.append(start_run("onboarding", {"email": f"t{i}@example.com"}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(run_ids)) == 8
    client = Client()
    for run_id in run_ids:
        wait_status(client, run_id, "waiting")


def test_manage_py_abstractruntime_sweep_runs_and_stats_reach_the_projects_store_and_queue(
        site: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # A RUNNING run whose first tick was never sent: only a sweep moves it.
    orphan = get_runtime().driver.start_run("onboarding", vars={"email": "orphan@example.com"}, dispatch=False)
    time.sleep(settings.CELERY_ABSTRACTRUNTIME_ORPHAN_GRACE_S + 0.2)
    assert emails_of(orphan) == []
    call_command("abstractruntime", "sweep")
    wait_status(Client(), orphan, "waiting")
    assert emails_of(orphan) == ["Welcome! Your account waits for approval."]

    capsys.readouterr()
    call_command("abstractruntime", "runs", "list", "--workflow", "onboarding", "--json")
    assert orphan in capsys.readouterr().out
    # respond needs the registry: the command gets CELERY_ABSTRACTRUNTIME_REGISTRY too.
    call_command("abstractruntime", "runs", "respond", orphan, "--payload", '{"approved": true}')
    wait_status(Client(), orphan, "completed")
    assert emails_of(orphan)[-1] == "Your account is active."

    capsys.readouterr()
    call_command("abstractruntime", "stats")
    out = capsys.readouterr().out
    assert "runs_started" in out, out
    with pytest.raises(CommandError, match="no-such-command"):
        call_command("abstractruntime", "no-such-command")


def test_manage_py_abstractruntime_as_the_shell_runs_it_passes_every_argument_to_the_cli(
        site: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from abstractruntime_celery.contrib.django.management.commands.abstractruntime import Command

    # What ``python manage.py abstractruntime ...`` calls: click parses the arguments, its --help too.
    Command().run_from_argv(["manage.py", "abstractruntime", "--help"])
    out = capsys.readouterr().out
    assert "manage.py abstractruntime" in out and "sweep" in out and "stats" in out, out
    Command().run_from_argv(["manage.py", "abstractruntime", "stats"])
    assert "runs_started" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        Command().run_from_argv(["manage.py", "abstractruntime", "no-such-command"])
    assert exited.value.code == 1 and "no-such-command" in capsys.readouterr().err


def test_a_wrong_app_setting_is_a_config_error_naming_it(site: Any) -> None:
    from django.test import override_settings

    from abstractruntime_celery import ConfigError
    from abstractruntime_celery.contrib.django import celery_app

    with override_settings(CELERY_ABSTRACTRUNTIME_APP="mysite.nowhere:app"), \
            pytest.raises(ConfigError, match="mysite.nowhere"):
        celery_app()
    with override_settings(CELERY_ABSTRACTRUNTIME_APP="mysite.settings:DEBUG"), \
            pytest.raises(ConfigError, match="CELERY_ABSTRACTRUNTIME_APP"):
        celery_app()
