"""Workflows of the adversarial tests in tests/test_adv_n_*.py (every workflow of
tests/workflows_adv_m.py too). Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump)."""

from __future__ import annotations

from typing import Any

from tests.workflows_adv_m import build as build_adv_m


def build() -> Any:
    return build_adv_m()


registry = build()
