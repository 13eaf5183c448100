"""Small per-run notes the tick path keeps beside the store: failed-attempt counts
(``tick_max_attempts``) and when a run was first seen naming an unregistered workflow
(``unknown_workflow_grace_s``). Backends: ``coord/redis.py``, ``coord/local.py``."""

from __future__ import annotations

from typing import Protocol

from .context import TickContext

#: How long a run's notes live in Redis (a run that stops failing for a day starts over).
DAY_S = 86400
#: A backoff note outlives its deadline by this much (it is read against the clock, not by
#: its existence; this only bounds its life).
BACKOFF_SLACK_S = 60.0


def parse_backoff(raw: object) -> float | None:
    """The deadline a backoff note holds (None: none, or unreadable)."""
    try:
        return float(raw) if raw is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


class Marks(Protocol):
    def add_attempt(self, run_id: str, fresh: bool = False, run_key: str | None = None) -> int:
        """Count one more failed tick (``fresh``: the first of a new row, as the tick committed
        progress before it failed); returns the count. With ``run_key`` (the run's record in
        the coordination Redis), count only if it exists, in the same step: 0 if it is gone."""
        ...
    def back_off(self, run_id: str, until: float) -> None:
        """The failing run waits for its retry until ``until`` (epoch s): other ticks leave
        it alone meanwhile (``backoff_until``)."""
        ...
    def backoff_until(self, run_id: str) -> float | None: ...
    def clear_attempts(self, run_id: str, ctx: TickContext | None = None) -> None: ...
    def unknown_since(self, run_id: str) -> float: ...
    def clear_unknown(self, run_id: str, ctx: TickContext | None = None) -> None: ...
    def moved(self, run_id: str, ctx: TickContext | None = None) -> None:
        """A worker that knows the run's workflow moved it: its failed attempts, its backoff
        and its unknown-workflow note start over (a stale worker of an old deploy seeing it again
        later must not count from a first sighting long ago)."""
        ...
