"""The Django example's tests run in a process of their own, so ``django.setup()`` and the
example's settings never reach the rest of the suite.

In the suite (``python -m pytest``), only ``test_django_suite.py`` is collected here: it runs
``pytest examples/django/tests`` again in a subprocess with ``ARC_DJANGO_INNER=1``. In that
process this conftest sets Django up on the example project (its own key prefix, queue and
SQLite file), migrates, and starts the README's worker command as a subprocess; every other
``test_*.py`` in this folder (drop more in) is collected there, and the runner is not.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from django_example_env import EXAMPLE, HERE, RUNNER, ROOT, example_env

INNER = os.environ.get("ARC_DJANGO_INNER") == "1"


def pytest_ignore_collect(collection_path: Path, config: Any) -> bool | None:
    if collection_path.parent != HERE or not collection_path.name.startswith("test_"):
        return None
    return (collection_path.name == RUNNER) if INNER else (collection_path.name != RUNNER)


if INNER:
    if "MYSITE_KEY_PREFIX" not in os.environ:  # run by hand: ARC_DJANGO_INNER=1 pytest examples/django/tests
        _tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"arc-django-{uuid.uuid4().hex[:8]}"
        _tmp.mkdir(parents=True)
        os.environ.update(example_env(_tmp, f"dj{uuid.uuid4().hex[:8]}:"))
    for _name in [k for k in os.environ if k.startswith("ABSTRACTRUNTIME_CELERY_")] + ["CELERY_BROKER_URL"]:
        os.environ.pop(_name, None)  # the project's settings, not the caller's environment
    sys.path.append(str(EXAMPLE))  # ``mysite`` and ``myapp``, as manage.py finds them
    os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    import django

    django.setup()


@pytest.fixture(scope="session")
def site(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The migrated example project, with a ``celery -A mysite worker`` subprocess (the
    README's command, threads pool for a quick start) consuming its queue."""
    import redis
    from django.conf import settings
    from django.core.management import call_command

    from devkit.cleanup import cleanup_broker, delete_prefix
    from devkit.procs import Proc, wait_for

    call_command("migrate", verbosity=0)
    prefix, queue = settings.CELERY_ABSTRACTRUNTIME_KEY_PREFIX, settings.CELERY_ABSTRACTRUNTIME_QUEUE
    log_path = Path(settings.DATABASES["default"]["NAME"]).parent / f"worker-{prefix.strip(':')}.log"
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLE), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mysite", "worker", "-Q", queue, "-n", f"w1.{prefix.strip(':')}@%h",
             "-P", "threads", "-c", "4", "-l", "INFO", "--without-mingle", "--without-gossip", "--without-heartbeat"],
            cwd=str(EXAMPLE), env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    worker = Proc("django-worker", popen, log_path)
    try:
        wait_for(lambda: " ready." in worker.log() or not worker.alive(), 60, "the Django worker to be ready")
        assert worker.alive(), f"the worker exited at start:\n{worker.log()}"
        yield worker
    finally:
        worker.stop(grace_s=0)  # the tests are done with it; its unacked messages are cleaned up below
        if request.session.testsfailed or os.environ.get("ARC_DJANGO_SHOW_LOG"):
            sys.stderr.write(worker.log())
        cleanup_broker(settings.CELERY_BROKER_URL, queue)
        delete_prefix(redis.Redis.from_url(settings.CELERY_ABSTRACTRUNTIME_STORE_URL), prefix)
        redis.Redis.from_url(settings.OUTBOX_URL).delete(settings.OUTBOX_KEY)
