"""A create under a prefix whose layout mark was written by another version since we opened it
(adversarial, round U).

Found: since 47413b1 opening a prefix only reads its layout mark (``keys.check_layout``); the first
run's create writes it with ``SET NX`` (``lua/save_run.lua``, option ``layout``). A caller
process (no worker start: ``build`` then ``start_run``) that opened an unused prefix claims
nothing. Window: between that open and its first create, a process of layout 2 opens the same
prefix and writes its own mark (``SET <p>layout 2``, what a layout-2 version did at open). The
caller's create then finds the mark taken: ``SET NX`` does nothing, and the create writes a
layout-3 run record under a prefix marked layout 2, with no error: the two versions now share
a prefix each thinks is its own. Before 47413b1 the caller's open wrote '3' (so the layout-2
process refused to start) or saw '2' and refused itself. Fixed: a new record's save reads
the mark in its script and is refused (``ConfigError``, nothing written) under another one.

Real Redis, in-process driver, a recording dispatcher.
"""

from __future__ import annotations

import pytest
import redis

from abstractruntime_celery.driver import build
from abstractruntime_celery.errors import ConfigError
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, make_settings
from tests.workflows_adv_i import registry

pytestmark = pytest.mark.timeout(60)


def test_a_create_under_another_layouts_mark_written_since_open_is_refused(prefix: str) -> None:
    driver = build(make_settings(prefix), registry, Recorder(), distributed=True)
    r = redis.Redis.from_url(STORE_URL)
    assert r.get(f"{prefix}layout") is None  # (opening wrote nothing)
    r.set(f"{prefix}layout", "2", nx=True)  # a layout-2 process opens the prefix now
    try:
        with pytest.raises(ConfigError, match="layout 2"):
            driver.start_run("timer", vars={"delay": 0.05}, dispatch=False)
        assert r.get(f"{prefix}layout") == b"2" and list(r.scan_iter(f"{prefix}run:*")) == []  # nothing written
    finally:
        stored = r.get(f"{prefix}layout")
        runs = [k for k in r.scan_iter(f"{prefix}run:*")]
        print("mark", stored, "runs", runs)
