"""Helpers of the adversarial tests in tests/test_adv_g_*.py: a cluster of real ``celery``
subprocesses on the workflows of tests/workflows_adv_g.py, with its own prefix and queue."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from devkit.cleanup import cleanup_broker
from devkit.procs import Cluster
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, _delete_prefix, make_settings

REGISTRY_PATH = "tests.workflows_adv_g:registry"
REGISTRY_WITHOUT_TWO_EVENTS = "tests.workflows_adv_g:registry_without_two_events"


def make_app(settings: Any) -> Any:
    """A Celery app with our tasks, on the adv-g workflows and ``settings``."""
    from abstractruntime_celery.app import make_app as _make_app
    from abstractruntime_celery.tasks import install
    from tests.workflows_adv_g import registry

    app = _make_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None)
    install(app, registry=registry, settings=settings)
    return app


@contextmanager
def adv_cluster(tmp_path: Path, request: Any, **overrides: Any) -> Iterator[Cluster]:
    """An empty cluster of ``celery`` subprocesses with its own prefix and queue; on the way
    out every process group is killed, logs print if the test failed, and its keys go."""
    prefix = f"ag{uuid.uuid4().hex[:8]}:"
    base = dict(lease_ttl_s=3.0, orphan_grace_s=2.0, registry=REGISTRY_PATH)
    base.update(overrides)
    c = Cluster(make_settings(prefix, **base), BROKER_URL, FX_URL, tmp_path)
    failed_before = request.session.testsfailed
    try:
        yield c
    finally:
        c.stop_all()
        if request.session.testsfailed > failed_before:
            c.dump_logs()
        cleanup_broker(BROKER_URL, c.settings.queue)
        _delete_prefix(STORE_URL, prefix)
        _delete_prefix(FX_URL, f"{prefix}fx")


def with_registry(cluster: Cluster, registry_path: str) -> Cluster:
    """Another view of ``cluster`` (same prefix, queue, tmp dir, processes list) whose new
    workers load ``registry_path``: a worker of another deploy in the same fleet."""
    other = Cluster(replace(cluster.settings, registry=registry_path), cluster.broker_url, cluster.fx_url,
                    cluster.tmp)
    other.procs = cluster.procs  # one list: the cluster's teardown stops them too
    other._count = len(cluster.procs) + 50
    return other
