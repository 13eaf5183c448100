"""``assert_ledger``: compare a run's ledger with the steps a test expects, and say
plainly where they part.

The ledger holds records per step (``started``, then ``completed``/``waiting``/
``failed``); a test thinks in steps, so records are folded by ``step_id`` into one
step each: its node, its effect type and its last status. The status event
AbstractRuntime emits by itself when a run ends (``system:terminal_status:...``) is
left out: no workflow asked for it; the record of an answered wait (``resume``) ends
the waiting step of its node instead of adding one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

#: The effect type of the record AbstractRuntime writes when a wait is answered.
RESUME = "resume"
#: Idempotency key prefix of the status event AbstractRuntime emits when a run ends.
SYSTEM_STATUS = "system:terminal_status:"
#: An expected step: ``"node"``, ``"node:effect_type"``, or a mapping of any of
#: ``node_id``, ``effect`` (the effect type) and ``status``.
Expected = Union[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Step:
    """One step of a run, folded from its ledger records."""

    node_id: str
    effect: Optional[str]
    status: str

    def __str__(self) -> str:
        return f"{self.node_id}:{self.effect} ({self.status})" if self.effect else f"{self.node_id} ({self.status})"


def ledger_steps(runtime: Any, run_id: str) -> list[Step]:
    """The steps of ``run_id``, in the order they started.

    Raises:
        Exception: what the ledger store raises.
    """
    steps: dict[str, dict[str, Any]] = {}
    for record in runtime.get_ledger(run_id):
        if str(record.get("idempotency_key") or "").startswith(SYSTEM_STATUS):
            continue
        effect = record.get("effect")
        kind = str(effect["type"]) if isinstance(effect, Mapping) and effect.get("type") else None
        status = record.get("status")
        status = str(getattr(status, "value", status))
        waited = [s for s in steps.values() if s["node_id"] == record.get("node_id") and s["status"] == "waiting"]
        if kind == RESUME and waited:
            waited[-1]["status"] = status  # the answer to a wait ends that wait's step
            continue
        step = steps.setdefault(str(record.get("step_id") or len(steps)), {"node_id": record.get("node_id")})
        if kind:
            step["effect"] = kind
        step["status"] = status
    return [Step(str(s.get("node_id")), s.get("effect"), s.get("status", "?")) for s in steps.values()]


def _matches(expected: Expected, step: Step) -> bool:
    if isinstance(expected, str):
        node, _, effect = expected.partition(":")
        return step.node_id == node and (not effect or step.effect == effect)
    for key, want in expected.items():
        have = {"node_id": step.node_id, "node": step.node_id, "effect": step.effect, "status": step.status}.get(key)
        if have != (want.value if hasattr(want, "value") else want):
            return False
    return True


def _label(expected: Expected) -> str:
    if isinstance(expected, str):
        return expected
    return ", ".join(f"{k}={v.value if hasattr(v, 'value') else v}" for k, v in expected.items())


def assert_ledger(runtime: Any, run_id: str, expected: Sequence[Expected], *, exact: bool = True) -> list[Step]:
    """Assert the run's steps are ``expected``, in order (``exact=False``: that they
    include them in this order, other steps in between allowed). Returns the steps.

    ``runtime``: anything with ``get_ledger(run_id)`` (a ScheduledRuntime, a Runtime).

    Raises:
        AssertionError: the steps differ; the message lists expected beside actual.
        TypeError: ``expected`` is a bare string (a list of steps is meant).
    """
    if isinstance(expected, (str, bytes)):
        raise TypeError("expected must be a list of steps, e.g. ['start', 'wait:wait_until', 'done']")
    steps = ledger_steps(runtime, run_id)
    if exact:
        ok = len(steps) == len(expected) and all(_matches(e, s) for e, s in zip(expected, steps))
    else:
        found = iter(steps)
        ok = all(any(_matches(e, s) for s in found) for e in expected)
    if ok:
        return steps
    raise AssertionError(_report(run_id, expected, steps, exact))


def _report(run_id: str, expected: Sequence[Expected], steps: list[Step], exact: bool) -> str:
    rows = [("#", "expected", "actual", "")]
    for i in range(max(len(expected), len(steps))):
        want = _label(expected[i]) if i < len(expected) else "-"
        have = str(steps[i]) if i < len(steps) else "-"
        mark = "" if i < len(expected) and i < len(steps) and _matches(expected[i], steps[i]) else "<--"
        rows.append((str(i + 1), want, have, mark))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    table = "\n".join(f"  {r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip()
                      for r in rows)
    how = "steps" if exact else "steps in this order (others allowed between)"
    return f"ledger of run {run_id} does not have the expected {how}:\n{table}"
