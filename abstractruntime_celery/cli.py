"""The ``abstractruntime-celery`` command: the root group, the demo, and the operator commands
attached from their modules (``cli_runs``, ``cli_ops``; exit codes in ``cli_target.ExitCode``).

``main`` is also callable from code, e.g. a Django management command mirroring it:
``main(["runs", "list", "--json"], standalone_mode=False)`` returns the exit code
(usage errors raise ``click.UsageError``).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from contextlib import ExitStack
from typing import Any

import click
from rich.console import Console

from .cli_ops import health, stats, sweep
from .cli_runs import runs
from .errors import AbstractRuntimeCeleryError
from .metrics.cli import metrics as metrics_group
from .redact import redact_url
from .webhooks.cli import webhooks as webhooks_group

console = Console()


@click.group()
@click.version_option(package_name="abstractruntime-celery")
def main() -> None:
    """Run AbstractRuntime workflows on Celery workers."""


def _status_line(state: Any) -> str:
    waiting = state.waiting
    if waiting is None:
        return state.status.value
    what = waiting.wait_key or waiting.until
    return f"{state.status.value} ({waiting.reason.value}: {what})"


@main.command()
@click.option("--broker", default=None, help="Broker URL (redis://...). Default: embedded, no server.")
@click.option("--store", "store_url", default=None, help="Shared store URL (default: the broker's Redis).")
@click.option("--external-workers", is_flag=True,
              help="Do not start an in-process worker; use workers started with "
                   "ABSTRACTRUNTIME_CELERY_REGISTRY=abstractruntime_celery.demo:registry.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the run.")
def demo(broker: str | None, store_url: str | None, external_workers: bool, timeout: float) -> None:
    """Run a workflow with a 2 s timer, an event the demo answers, and a child run."""
    from .demo import registry

    started = time.monotonic()

    def say(msg: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.2f}s[/dim]  {msg}")

    with ExitStack() as stack:
        sr = _demo_runtime(stack, broker, store_url, external_workers, say)
        run_id, state = sr.run(registry.get("demo"), vars={"nap_s": 2.0}, timeout=timeout)
        say(f"run {run_id} started: {_status_line(state)}")
        state = _drive_demo(sr, run_id, timeout, say)
        stats = sr.stats
        if state.status.value != "completed":
            console.print(f"[red]run ended as {state.status.value}: {state.error}[/red]")
            sys.exit(1)
        say(f"[green]completed[/green]: {state.output}")
        say(f"stats: resumed={stats.runs_resumed} timers={stats.timers_armed} "
            f"events={stats.events_applied} ticks={stats.ticks} duplicates={stats.duplicates}")


def _demo_runtime(stack: ExitStack, broker: str | None, store_url: str | None, external_workers: bool,
                  say: Any) -> Any:
    """The demo's ScheduledRuntime: embedded, or on ``broker`` with an in-process worker
    (unless ``external_workers``) and a private key prefix and queue, cleaned up after."""
    from . import create_scheduled_runtime
    from .config import Settings
    from .demo import registry

    if not broker:
        sr = create_scheduled_runtime(registry=registry)
        say("embedded: in-process worker, in-memory stores, no server")
        stack.callback(sr.stop)
        return sr
    from .app import make_app
    from .stores.redis import connect

    settings = Settings(store_url=store_url or broker, key_prefix=f"arc-demo-{uuid.uuid4().hex[:8]}:",
                        queue="abstractruntime" if external_workers else f"arc-demo-{uuid.uuid4().hex[:8]}",
                        registry="abstractruntime_celery.demo:registry")
    app = make_app(broker, config_module=None)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=True)
    if not external_workers:
        from celery.contrib.testing.worker import start_worker

        stack.enter_context(start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                                         queues=[settings.queue], loglevel="WARNING"))
    say(f"distributed: broker {redact_url(broker)}, store {redact_url(settings.store_url)}, "
        f"prefix {settings.key_prefix}")
    stack.callback(_delete_prefix, sr.driver.coord.client, settings.key_prefix)
    if not external_workers:  # kombu's binding record of our private queue
        stack.callback(_delete_prefix, connect(broker), f"_kombu.binding*.{settings.queue}")
    stack.callback(sr.stop)
    return sr


def _drive_demo(sr: Any, run_id: str, timeout: float, say: Any) -> Any:
    """Follow the run, answer its approval wait, until it ends or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    answered, last = False, ""
    state = sr.get_state(run_id)
    while time.monotonic() < deadline:
        state = sr.get_state(run_id)
        line = _status_line(state)
        if line != last:
            say(f"run {run_id[:8]}: {line}")
            last = line
        if state.status.value in ("completed", "failed", "cancelled"):
            break
        waiting = state.waiting
        if not answered and waiting is not None and (waiting.wait_key or "").startswith("demo:approval"):
            state = sr.respond(run_id, {"by": "the demo"}, timeout=timeout)
            answered = True
            say("event answered: {'by': 'the demo'}")
            continue
        time.sleep(0.05)
    return state


def _delete_prefix(client: Any, prefix: str) -> None:
    """The demo leaves nothing behind in the user's Redis."""
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])


# --- the operator commands: each group or command lives in its own module -------------------
# Every one takes --store/--prefix/--broker/--json (cli_target.target_options) and exits with
# a cli_target.ExitCode. Other groups (metrics, webhooks, ...) are attached here the same way:
#     main.add_command(<group>)

main.add_command(runs)
main.add_command(stats)
main.add_command(sweep)
main.add_command(health)


main.add_command(metrics_group)
main.add_command(webhooks_group)


def run() -> None:
    try:
        if "--json" in sys.argv[1:]:
            _run_json()
        main()
    except AbstractRuntimeCeleryError as exc:
        console.print(f"[red]{type(exc).__name__}: {exc}[/red]")
        sys.exit(2)


def _run_json() -> None:
    """``main`` for a ``--json`` caller: a usage error (unknown option, bad value, malformed
    payload) is one JSON object on stdout too, as every other failure, not click's usage text.

    Raises:
        SystemExit: always, with the command's exit code (2 for a usage error).
    """
    try:
        code = main.main(args=sys.argv[1:], standalone_mode=False)
    except click.ClickException as exc:
        click.echo(json.dumps({"ok": False, "error": "usage", "message": exc.format_message(),
                               "exit_code": exc.exit_code}))
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
