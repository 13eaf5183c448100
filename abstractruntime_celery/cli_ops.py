"""``abstractruntime-celery stats | sweep | health``: the cluster as a whole."""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import click
from rich.console import Console
from rich.table import Table

from .cli_target import ExitCode, Target, TargetSpec, classify, emit, target_options
from .health import Check, broker_check, overdue_check, store_check, sweep_check

console = Console()


@click.command()
@target_options
def stats(spec: TargetSpec) -> None:
    """Print the cluster-wide counters and the last errors, kept in Redis.

    \f
    Raises nothing: a failure is one line and an ``ExitCode`` (``cli_target.target_options``).
    """
    target = Target.open(spec)
    snap = target.driver.coord.stats.snapshot()

    def human() -> None:
        table = Table("counter", "value")
        for key, value in asdict(snap).items():
            if key not in ("errors", "extra"):
                table.add_row(key, str(value))
        for key, value in sorted(snap.extra.items()):
            table.add_row(key, str(value))
        console.print(table)
        for err in snap.errors[-10:]:
            click.secho(err, fg="red")

    emit(target, {"stats": asdict(snap)}, human)


@click.command()
@target_options
def sweep(spec: TargetSpec) -> None:
    """Run one sweep now (the beat job: timers, lost events, orphans, parents; and it deletes
    the runs that ended retention_s ago, only if this shell's retention_s is the one the
    workers recorded at start: else it deletes nothing and says so).

    \f
    Raises nothing: a failure is one line and an ``ExitCode`` (``cli_target.target_options``).
    """
    from .sweep import sweep as run_sweep

    target = Target.open(spec)
    target.check_broker()
    report = run_sweep(target.driver, force=True)

    def human() -> None:
        click.echo(f"sweep sent {report.total} tick(s): timers={report.timers} events={report.events} "
                   f"orphans={report.orphans} parents={report.parents}; deleted {report.expired} ended run(s) "
                   f"(retention); read {report.read}")
        if report.retention_mismatch is not None:
            click.secho(f"retention skipped: this shell has retention_s={target.driver.settings.retention_s:g}, the workers "
                        f"recorded {report.retention_mismatch:g}; set ABSTRACTRUNTIME_CELERY_RETENTION_S as they do",
                        fg="yellow", err=True)

    emit(target, {"sweep": {**asdict(report), "total": report.total}}, human)


@click.command()
@click.option("--max-sweep-age", type=float, default=None, metavar="S",
              help="Unhealthy if the last sweep is older [default: 4 x sweep_interval_s, at least 60].")
@click.option("--overdue-after", type=float, default=60.0, show_default=True, metavar="S",
              help="Unhealthy if a run's timer is due more than S seconds ago.")
@target_options
def health(spec: TargetSpec, max_sweep_age: Optional[float], overdue_after: float) -> ExitCode:
    """Check store, broker, the last sweep and overdue timers: exit 0 healthy, 1 not (for probes).

    \f
    Raises nothing: a failure is one line and an ``ExitCode`` (``cli_target.target_options``).
    """
    app = Target.make_app(spec)
    checks: list[Check] = []
    target: Optional[Target] = None
    try:
        target = Target.open(spec, app)
    except Exception as exc:
        classified = classify(exc)
        if classified is None or classified[0] != ExitCode.UNREACHABLE:
            raise
        checks.append(Check("store", False, f"unreachable: {exc}"))
    if target is not None:
        checks.append(store_check(target.driver))
    probe = (target or Target(spec, app, None)).check_broker
    checks.append(broker_check(probe))
    if target is not None and checks[0].ok:
        settings = target.settings
        age = max_sweep_age if max_sweep_age is not None else max(60.0, 4 * settings.sweep_interval_s)
        checks.append(sweep_check(target.driver, age))
        checks.append(overdue_check(target.driver, overdue_after))
    healthy = all(c.ok for c in checks)
    code = ExitCode.OK if healthy else ExitCode.REFUSED
    if target is None:
        if spec.as_json:
            import json

            click.echo(json.dumps({"ok": False, "healthy": False, "checks": [c.to_dict() for c in checks],
                                   "exit_code": int(code)}))
        else:
            failed = "; ".join(f"{c.name} {c.detail}" for c in checks if not c.ok)
            click.echo(f"abstractruntime-celery: unhealthy: {failed}", err=True)
        return code

    def human() -> None:
        for c in checks:
            click.secho(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}", fg=None if c.ok else "red")
        click.echo("healthy" if healthy else "unhealthy")

    emit(target, {"healthy": healthy, "checks": [c.to_dict() for c in checks]}, human)
    return code

