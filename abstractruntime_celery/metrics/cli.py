"""``abstractruntime-celery metrics serve``: the endpoint of ``serve.py`` in a process of its
own (beside beat), with the operator commands' options and exit codes."""

from __future__ import annotations

import signal
import threading
from typing import Optional

import click

from ..cli_target import Target, TargetSpec, emit, target_options
from .serve import DEFAULT_PORT, start


@click.group("metrics")
def metrics() -> None:
    """The cluster's Prometheus metrics."""


@metrics.command("serve")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help=f"Port (default: the metrics_port setting, else {DEFAULT_PORT}).")
@click.option("--addr", default=None, help="Address to listen on (default: the metrics_addr setting).")
@target_options
def serve(spec: TargetSpec, port: Optional[int], addr: Optional[str]) -> None:
    """Serve /metrics for the cluster of the settings in the environment, until stopped.

    Like every operator command it takes --store/--prefix/--broker/--json, and a Redis
    that does not answer is one line and exit code 4, not a traceback.
    """
    target = Target.open(spec)
    driver = target.driver
    port = port or driver.settings.metrics_port or DEFAULT_PORT
    addr = addr or driver.settings.metrics_addr
    server = start(driver, port, addr)
    url = f"http://{addr}:{port}/metrics"
    emit(target, {"serving": url}, lambda: click.echo(f"serving metrics on {url}", err=True))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
