"""``abstractruntime-celery runs ...``: find, inspect and act on runs.

Every action goes through the same operation the API uses, with its checks:
``respond`` is ``Scheduler.resume_event`` (or ``respond``'s one answer to the current
wait), ``cancel``/``pause``/``resume``/``retry`` are the compare-and-set control
operations of ``control.py``. Commands that must send a tick check the broker first,
so a dead broker changes nothing.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import click
from abstractruntime import RunState, RunStatus, WaitReason
from rich.console import Console
from rich.table import Table

from .errors import ConfigError, RunNotWaitingError, UnknownWorkflowError
from .cli_target import Target, TargetSpec, emit, load_json_object, target_options
from .runlist import Filters, list_page, row_of

console = Console()

STATUSES = [s.value for s in RunStatus]
REASONS = [r.value for r in WaitReason]


@click.group()
def runs() -> None:
    """Find, inspect and act on runs (list, show, respond, cancel, pause, resume, retry)."""


# --- reading -----------------------------------------------------------------------------

@runs.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs in this status.")
@click.option("--workflow", metavar="ID", help="Only runs of this workflow.")
@click.option("--reason", type=click.Choice(REASONS), help="Only WAITING runs waiting for this reason.")
@click.option("--parent", metavar="RUN", help="Only the children of this run (newest created first).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Runs per page.")
@click.option("--after", metavar="CURSOR", help="Start after this cursor (printed as 'next' by the previous page).")
@target_options
def list_runs(spec: TargetSpec, status: Optional[str], workflow: Optional[str], reason: Optional[str],
              parent: Optional[str], limit: int, after: Optional[str]) -> None:
    """List runs, newest first, a page at a time.

    \f
    Raises nothing: a failure is one line and an ``ExitCode`` (``cli_target.target_options``).
    """
    target = Target.open(spec)
    page = list_page(target.driver.run_store, Filters(status, workflow, reason, parent), limit=limit, after=after)

    def human() -> None:
        table = Table()
        for name in ("run", "workflow", "status", "waiting", "parent", "updated"):
            table.add_column(name, overflow="fold")
        for row in page.rows:
            status_text = row.status + (" (paused)" if row.paused else "")
            waiting = f"{row.reason} {row.wait_key or row.until}".strip() if row.status == "waiting" else ""
            table.add_row(row.run_id, row.workflow_id, status_text, waiting, row.parent, _when(row.updated))
        if page.rows:
            console.print(table)
        click.echo(f"{len(page.rows)} run(s)" + (f"; next page: --after {page.next}" if page.next else "")
                   + ("" if page.rows or after else
                      f" under prefix {target.settings.key_prefix!r} (the workers' ABSTRACTRUNTIME_CELERY_KEY_PREFIX?)"))

    emit(target, {"runs": [r.to_dict() for r in page.rows], "next": page.next}, human)


@runs.command("show")
@click.argument("run_id", metavar="RUN")
@click.option("--ledger", "ledger_limit", default=50, show_default=True, type=click.IntRange(0, 100_000),
              help="Show the last N ledger records (0: none).")
@target_options
def show(spec: TargetSpec, run_id: str, ledger_limit: int) -> None:
    """A run's state, what it waits for, its children, its inbox and its ledger as a timeline.

    \f
    Raises nothing: a failure is one line and an ``ExitCode`` (``cli_target.target_options``).
    """
    target = Target.open(spec)
    driver = target.driver
    run = driver.load(run_id)
    children = [row_of(c) for c in driver.run_store.list_children(parent_run_id=run.run_id)]
    total, shown = _ledger_tail(driver.runtime, run.run_id, ledger_limit)
    inbox = driver.coord.inbox.pending(run.run_id).events
    backoff = driver.coord.marks.backoff_until(run.run_id)
    leased = driver.coord.leases.is_held(run.run_id)
    data = {"run": _state_dict(run), "children": [c.to_dict() for c in children],
            "inbox": [{"event_id": e.event_id, "wait_key": e.wait_key, "accepted_at": e.accepted_at, "size": e.size}
                      for e in inbox],
            "leased": leased, "retry_due_at": backoff, "ledger_total": total, "ledger": shown}

    def human() -> None:
        _print_state(run, leased, backoff)
        if children:
            table = Table("child", "workflow", "status", "updated", title="children")
            for c in children:
                table.add_row(c.run_id, c.workflow_id, c.status + (" (paused)" if c.paused else ""), _when(c.updated))
            console.print(table)
        if inbox:
            click.echo(f"inbox: {len(inbox)} event(s) not applied yet: "
                       + ", ".join(f"{e.event_id} ({e.wait_key})" for e in inbox[:10]))
        if shown:
            table = Table("#", "started", "node", "status", "effect", "detail",
                          title=f"ledger (last {len(shown)} of {total})")
            first = total - len(shown) + 1
            for i, rec in enumerate(shown):
                table.add_row(str(first + i), str(rec.get("started_at") or "")[:23], str(rec.get("node_id") or ""),
                              str(rec.get("status") or ""), _effect_type(rec.get("effect")), _detail(rec))
            console.print(table)

    emit(target, data, human)


def _ledger_tail(runtime: Any, run_id: str, n: int) -> tuple[int, list[dict[str, Any]]]:
    """(how many records the run's ledger holds, its last ``n``): on a ledger store that
    counts and reads from a position (Redis), without reading the rest."""
    store = runtime.ledger_store
    if hasattr(store, "count") and hasattr(store, "list_after"):
        total = int(store.count(run_id))
        if n == 0:
            return total, []
        return total, store.list_after(run_id=run_id, after=max(0, total - n), limit=n)[0]
    ledger = runtime.get_ledger(run_id)
    return len(ledger), (ledger[-n:] if n else [])


# --- acting ------------------------------------------------------------------------------

@runs.command("respond")
@click.argument("run_id", metavar="RUN")
@click.option("--key", "wait_key", metavar="K",
              help="The wait key the event answers (default: the run's current wait, answered once).")
@click.option("--payload", "-p", "payload_text", required=True, metavar="JSON",
              help="The event's payload: a JSON object, @file, or - for stdin.")
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="Wait until a worker applied the event and the run settled.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds --wait waits.")
@target_options
def respond(spec: TargetSpec, run_id: str, wait_key: Optional[str], payload_text: str, wait: bool,
            timeout: float) -> None:
    """Send a run an event, through resume_event and its checks (wait key, paused runs,
    payload and inbox limits). Stored durably before this returns.

    \f
    Raises nothing: a failure is one line and an ``ExitCode`` (``cli_target.target_options``).
    """
    payload = load_json_object(payload_text, "--payload")
    target = Target.open(spec)
    target.check_broker()
    try:
        handle = _deliver(target, run_id, wait_key, payload)
    except UnknownWorkflowError as exc:
        raise ConfigError(f"{exc}: set ABSTRACTRUNTIME_CELERY_REGISTRY to the workers' registry "
                          "(an event is checked against the run's workflow)") from None
    event = handle.event
    state = handle.wait(timeout) if wait else None
    data: dict[str, Any] = {"run_id": run_id, "event_id": event.event_id, "wait_key": event.wait_key,
                            "applied": state is not None}
    if state is not None:
        data["run"] = _summary(state)

    def human() -> None:
        click.echo(f"event {event.event_id} for run {run_id} (wait key {event.wait_key}) stored"
                   + (f"; applied: run is {_status_text(state)}" if state is not None else "; a worker applies it"))

    emit(target, data, human)


def _deliver(target: Target, run_id: str, wait_key: Optional[str], payload: dict[str, Any]) -> Any:
    """``resume_event`` under ``wait_key``; without one, the answer to the wait the run is in
    now, taken once (``ScheduledRuntime.respond``). Returns the RunHandle. Raises as they do."""
    scheduler = target.scheduler
    if wait_key is not None:
        return scheduler.resume_event(run_id=run_id, wait_key=wait_key, payload=payload, wait=False)
    run = target.driver.load(run_id)
    if run.status != RunStatus.WAITING or run.waiting is None:
        raise RunNotWaitingError(run_id, run.status.value)
    if not run.waiting.wait_key:
        raise RunNotWaitingError(run_id, run.status.value, "waits on no key an event can answer; pass --key")
    return scheduler.deliver(run_id, run.waiting.wait_key, payload, wait=False, answering=run.updated_at or "")


@runs.command("cancel")
@click.argument("run_id", metavar="RUN")
@click.option("--children", is_flag=True, help="Also cancel every active descendant, and any child spawned later.")
@click.option("--reason", default=None, help="Recorded as the run's error.")
@target_options
def cancel(spec: TargetSpec, run_id: str, children: bool, reason: Optional[str]) -> None:
    """Cancel a run (compare-and-set: a tick in flight is refused at its next save).

    \f
    Raises nothing: a failure is one line and an ``ExitCode`` (``cli_target.target_options``).
    """
    target = Target.open(spec)
    target.check_broker()
    if children:
        states = target.scheduler.cancel_with_children(run_id, reason=reason)
        _acted(target, "cancelled", [_summary(s) for s in states])
    else:
        _acted(target, "cancelled", [_summary(target.scheduler.cancel_run(run_id, reason=reason))])


@runs.command("pause")
@click.argument("run_id", metavar="RUN")
@click.option("--reason", default=None, help="Why (kept with the pause).")
@target_options
def pause(spec: TargetSpec, run_id: str, reason: Optional[str]) -> None:
    """Pause a run: no step, no event, no child result until resumed.

    \f
    Raises nothing: a failure is one line and an ``ExitCode`` (``cli_target.target_options``).
    """
    target = Target.open(spec)
    state = _summary(target.scheduler.pause_run(run_id, reason=reason))
    _acted(target, "paused", [state])
    if not state["paused"] and not spec.as_json:  # AbstractRuntime's pause_run leaves these as they are
        click.echo(f"{run_id}: not paused: a run that ended, or that waits for a user's answer (ASK_USER), "
                   "is left as it is", err=True)


@runs.command("resume")
@click.argument("run_id", metavar="RUN")
@target_options
def resume(spec: TargetSpec, run_id: str) -> None:
    """Resume a paused run; it is ticked and takes what waited for it.

    \f
    Raises nothing: a failure is one line and an ``ExitCode`` (``cli_target.target_options``).
    """
    target = Target.open(spec)
    target.check_broker()
    _acted(target, "resumed", [_summary(target.scheduler.resume_run(run_id))])


@runs.command("retry")
@click.argument("run_id", metavar="RUN")
@target_options
def retry(spec: TargetSpec, run_id: str) -> None:
    """Restart a FAILED run at the node that failed, with a new attempt count. Refused
    (exit 1) for a run that is not FAILED, or a child whose parent already took its failure.

    \f
    Raises nothing: a failure is one line and an ``ExitCode`` (``cli_target.target_options``).
    """
    target = Target.open(spec)
    target.check_broker()
    _acted(target, "retried", [_summary(target.scheduler.retry_run(run_id))])


# --- output ------------------------------------------------------------------------------

def _acted(target: Target, verb: str, states: list[dict[str, Any]]) -> None:
    def human() -> None:
        if not states:
            click.echo(f"nothing {verb}")
        for s in states:
            click.echo(f"{s['run_id']}: {s['status']}" + (" (paused)" if s["paused"] else ""))

    emit(target, {"action": verb, "runs": states}, human)


def _summary(run: RunState) -> dict[str, Any]:
    row = row_of(run)
    return {"run_id": run.run_id, "workflow_id": run.workflow_id, "status": run.status.value, "paused": row.paused,
            "current_node": run.current_node, "waiting": _waiting_dict(run), "error": run.error}


def _waiting_dict(run: RunState) -> Optional[dict[str, Any]]:
    w = run.waiting
    if w is None:
        return None
    return {"reason": w.reason.value, "wait_key": w.wait_key, "until": w.until, "prompt": w.prompt,
            "choices": w.choices}


def _state_dict(run: RunState) -> dict[str, Any]:
    import dataclasses

    out = dataclasses.asdict(run)
    out["status"] = run.status.value
    out["paused"] = row_of(run).paused
    out["waiting"] = _waiting_dict(run)
    return out


def _status_text(run: RunState) -> str:
    text = run.status.value
    if run.waiting is not None and run.status == RunStatus.WAITING:
        text += f" ({run.waiting.reason.value}: {run.waiting.wait_key or run.waiting.until})"
    return text + (" (paused)" if row_of(run).paused else "")


def _print_state(run: RunState, leased: bool, backoff: Optional[float]) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("run", run.run_id)
    table.add_row("workflow", str(run.workflow_id))
    table.add_row("status", _status_text(run))
    table.add_row("node", str(run.current_node))
    for name, value in (("parent", run.parent_run_id), ("error", run.error), ("created", run.created_at),
                        ("updated", run.updated_at)):
        if value:
            table.add_row(name, str(value))
    if run.waiting is not None and run.waiting.prompt:
        table.add_row("prompt", str(run.waiting.prompt))
    if run.output is not None:
        table.add_row("output", _cut(run.output, 300))
    runtime_ns = run.vars.get("_runtime") if isinstance(run.vars, dict) else None
    retried = runtime_ns.get("retried") if isinstance(runtime_ns, dict) else None
    if isinstance(retried, dict):
        table.add_row("retried", f"{retried.get('count')} time(s); last error: {_cut(retried.get('last_error'), 200)}")
    table.add_row("leased", "yes (a tick holds it now)" if leased else "no")
    if backoff is not None:
        table.add_row("retry due", _when(backoff))
    console.print(table)


def _effect_type(effect: Any) -> str:
    if isinstance(effect, dict):
        return str(effect.get("type") or "")
    return ""


def _detail(rec: dict[str, Any]) -> str:
    if rec.get("error"):
        return _cut(rec["error"], 120)
    if rec.get("result") is not None:
        return _cut(rec["result"], 120)
    return ""


def _cut(value: Any, n: int) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= n else text[:n] + "..."


def _when(epoch: float) -> str:
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + "Z"
