"""Test your workflows without sleeping: a virtual clock that fires timers, event
delivery that waits for what it causes, and a readable ledger assertion.

The pytest fixtures (``arc_registry``, ``arc_runtime``, ``arc_clock``, ``arc_deliver``,
``arc_worker_runtime`` ...) come from ``abstractruntime_celery.testing.plugin``, which
pip registers as a pytest plugin. See the README, "Testing your workflows".
"""

from __future__ import annotations

from .clock import VirtualClock
from .kit import Kit, embedded_runtime, worker_runtime
from .ledger import Step, assert_ledger, ledger_steps
from .settle import SettleTimeout, busy_runs, settle

__all__ = ["VirtualClock", "Kit", "embedded_runtime", "worker_runtime", "Step", "assert_ledger",
           "ledger_steps", "SettleTimeout", "busy_runs", "settle"]
