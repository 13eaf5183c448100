"""The Prometheus endpoint on real processes: a ``celery worker -P prefork -c 2``
subprocess serves it (``metrics_port``) while its pool children tick timers and
events; the test scrapes it over HTTP, parses it with prometheus_client's own parser,
and checks the shipped Grafana dashboard against what it serves. A second endpoint,
``abstractruntime-celery metrics serve`` in its own process, shows the same cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus
from prometheus_client.parser import text_string_to_metric_families

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.errors import ConfigError
from abstractruntime_celery.metrics import histograms
from devkit.procs import ROOT, Cluster, wait_for, worker_cluster
from devkit.redisproc import free_port
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, make_app, make_settings
from tests.workflows import registry

TIMEOUT = 60.0
NS = "abstractruntime_celery_"
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(prefix: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    settings = make_settings(prefix, lease_ttl_s=3.0, metrics_port=free_port())
    with worker_cluster(settings, tmp_path, request, ["w"], BROKER_URL, STORE_URL, FX_URL) as c:
        yield c


def scrape(port: int) -> tuple[str, dict[str, Any]]:
    """The endpoint's text, and its families by name (prometheus_client's parser)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return text, {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, suffix: str = "", **labels: str) -> float:
    values = [s.value for s in families[name].samples if s.name == name + suffix
              and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(values) == 1, (name, suffix, labels, families[name].samples)
    return float(values[0])


def answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False


def test_prefork_worker_serves_cluster_metrics(cluster: Cluster, tmp_path: Path) -> None:
    settings = cluster.settings
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        timer_id, state = sr.run(registry.get("timer"), vars={"delay": 0.3}, timeout=TIMEOUT)
        assert state.status == RunStatus.WAITING
        event_id, state = sr.run(registry.get("event"), vars={"key": "go"}, timeout=TIMEOUT)
        assert state.status == RunStatus.WAITING
        done = sr.scheduler.resume_event(run_id=event_id, wait_key="go", payload={"v": 1}, timeout=TIMEOUT)
        assert done.status == RunStatus.COMPLETED
        sr.wait_for(timer_id, timeout=TIMEOUT, until=lambda run: run.status == RunStatus.COMPLETED)
        from abstractruntime_celery.sweep import sweep

        sweep(sr.driver, force=True)  # (the last sweep's age is shown once one has run)
    finally:
        sr.stop()

    text, families = scrape(settings.metrics_port)
    # The ticks ran in the pool children; the main process serves what they recorded.
    for h in histograms.ALL:
        assert families[h.metric].type == "histogram", h.metric
        assert sample(families, h.metric, "_count") > 0, h.metric
        assert sample(families, h.metric, "_bucket", le="+Inf") == sample(families, h.metric, "_count")
        assert sample(families, h.metric, "_sum") >= 0
    assert sample(families, NS + "timer_lateness_seconds", "_count") >= 1
    assert sample(families, NS + "resume_latency_seconds", "_count") == 1  # one event, applied once
    assert sample(families, NS + "runs", status="completed") == 2
    assert sample(families, NS + "runs", status="waiting") == 0
    assert sample(families, NS + "ticks", "_total") >= 4
    assert sample(families, NS + "events_applied", "_total") == 1
    assert sample(families, NS + "timers_due") == 0 and sample(families, NS + "timers_overdue") == 0
    assert sample(families, NS + "inbox_runs") == 0
    assert 0 <= sample(families, NS + "last_sweep_age_seconds") < TIMEOUT

    # Prometheus conventions: one namespace, counters end in _total, durations in _seconds.
    for family in families.values():
        assert family.name.startswith(NS), family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name

    # The dashboard queries only what the endpoint serves.
    served = {s.name for f in families.values() for s in f.samples}
    queried = {name for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]
               for name in re.findall(r"\babstractruntime_celery_\w+", target["expr"])}
    assert queried and not queried - served, sorted(queried - served)

    # One endpoint per worker, in its main process: no pool child tried to bind the port.
    assert all("Cannot serve metrics" not in p.log() for p in cluster.procs)

    # Tracing is off: no trace context was read or written.
    assert not list(redis.Redis.from_url(STORE_URL).scan_iter(match=f"{settings.key_prefix}trace:*"))

    # ``metrics serve``, its own process, shows the same cluster.
    port = free_port()
    log = open(tmp_path / "metrics-serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "abstractruntime_celery", "metrics", "serve", "--port", str(port)],
                            cwd=str(tmp_path), env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: answers(port) or proc.poll() is not None, TIMEOUT, "metrics serve to answer")
        assert proc.poll() is None, (tmp_path / "metrics-serve.log").read_text()
        _, other = scrape(port)
        for h in histograms.ALL:
            assert sample(other, h.metric, "_count") >= sample(families, h.metric, "_count")
        assert sample(other, NS + "resume_latency_seconds", "_count") == 1
        assert sample(other, NS + "runs", status="completed") == 2
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_endpoint_setup_mistakes_fail_loudly(settings: Any) -> None:
    from abstractruntime_celery import Settings
    from abstractruntime_celery.driver import build
    from abstractruntime_celery.metrics.serve import registry_for, start

    with pytest.raises(ConfigError, match="metrics_port"):
        Settings(metrics_port=70000)
    with pytest.raises(ConfigError, match="Redis"):
        registry_for(build(Settings(), registry))  # embedded: no cluster to scrape
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            start(build(settings, registry), port)
