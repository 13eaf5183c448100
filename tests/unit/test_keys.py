"""Key names, without any service: per-owner keys and global keys cannot meet."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abstractruntime_celery.keys import GLOBAL, OWNED, Keys, owner_of

P = "arc:"
KEYS = Keys(P)


def test_every_global_key_reads_back_as_global() -> None:
    for name in ("layout", "all_runs", "event_keys", "due", "inbox_runs", "event_seq", "stats",
                 "stats_errors", "sweep_lock", "sweep_cursor", "notices", "ended"):
        family, owner = owner_of(getattr(KEYS, name), P)
        assert family in GLOBAL and owner is None


@given(st.text(min_size=1, max_size=40))
def test_a_key_made_from_any_owner_string_reads_back_as_that_owner(owner: str) -> None:
    for family in OWNED:
        assert owner_of(KEYS.owned(family, owner), P) == (family, owner)


@given(st.sampled_from(sorted(OWNED)), st.text(max_size=40))
def test_no_owner_string_makes_a_per_owner_key_equal_a_global_one(family: str, owner: str) -> None:
    key = KEYS.owned(family, owner)
    assert all(key != f"{P}{name}" for name in GLOBAL)


def test_layout_1_names_are_not_names_of_this_layout() -> None:
    for old in ("inbox:runs", "inbox:seq", "ix:all", "stats:errors", "sweep:lock"):
        with pytest.raises(ValueError):
            family, owner = owner_of(P + old, P)
            assert (family, owner) in ((f, o) for f, o in [(family, owner)] if f == "inbox" and o)  # not reached
            raise ValueError("inbox owner")  # inbox:runs reads as run 'runs': a run id, not a global key
