"""Workflows of the adversarial tests in tests/test_adv_m_*.py (every workflow of
tests/workflows_adv_l.py too). Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump)."""

from __future__ import annotations

from typing import Any

from tests.workflows_adv_l import build as build_adv_l


def build() -> Any:
    reg = build_adv_l()
    return reg


registry = build()
