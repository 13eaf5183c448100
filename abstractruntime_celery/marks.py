"""Small per-run notes the tick path keeps beside the store: failed-attempt counts
(``tick_max_attempts``) and when a run was first seen naming an unregistered workflow
(``unknown_workflow_grace_s``). Backends: ``coord/redis.py``, ``coord/local.py``."""

from __future__ import annotations

from typing import Protocol

from .context import TickContext

#: How long a run's notes live in Redis (a run that stops failing for a day starts over).
DAY_S = 86400


class Marks(Protocol):
    def add_attempt(self, run_id: str) -> int: ...
    def clear_attempts(self, run_id: str, ctx: TickContext | None = None) -> None: ...
    def unknown_since(self, run_id: str) -> float: ...
    def clear_unknown(self, run_id: str, ctx: TickContext | None = None) -> None: ...
    def moved(self, run_id: str, ctx: TickContext | None = None) -> None:
        """A worker that knows the run's workflow moved it: its failed attempts and its
        unknown-workflow note start over (a stale worker of an old deploy seeing it again
        later must not count from a first sighting long ago)."""
        ...
