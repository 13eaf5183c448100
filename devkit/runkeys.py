"""What one run occupies in Redis: the keys it owns, the index keys that name it, and their
memory (``MEMORY USAGE``). For retention tests (nothing of a deleted run may remain) and
for measuring the memory per waiting and per finished run (``python -m devkit.run_memory``).
"""

from __future__ import annotations

from typing import Any

from abstractruntime_celery.keys import GLOBAL, RUN_FAMILIES, owner_of

#: Global keys that may name a run as a position, not as a run of theirs (a sweep cursor).
POSITIONS = frozenset({"sweep-cursor"})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def owned_keys(client: Any, prefix: str, run_id: str) -> list[str]:
    """The keys of the families owned by a run id (``keys.RUN_FAMILIES``) that exist."""
    names = [f"{prefix}{family}:{run_id}" for family in RUN_FAMILIES]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.exists(name)
    return [name for name, there in zip(names, pipe.execute()) if there]


def keys_naming(client: Any, prefix: str, run_id: str) -> list[str]:
    """Every key under ``prefix`` that belongs to ``run_id``: owned by it, or holding it as a
    member of an index (a sorted set, or ``ix-evtkeys``'s ``<key>\\0<id>``)."""
    out = []
    for raw in client.scan_iter(match=f"{prefix}*", count=1000):
        key = _text(raw)
        family, owner = owner_of(key, prefix)
        if owner == run_id and family in RUN_FAMILIES:
            out.append(key)
        elif family in POSITIONS:
            continue
        elif _text(client.type(key)) == "zset":
            if family == "ix-evtkeys":
                if any(_text(m).endswith("\0" + run_id) for m in client.zrange(key, 0, -1)):
                    out.append(key)
            elif client.zscore(key, run_id) is not None:
                out.append(key)
    return sorted(out)


def memory_of(client: Any, keys: list[str]) -> int:
    """Sum of ``MEMORY USAGE`` (bytes, with SAMPLES 0: every element) over ``keys``."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(int(n or 0) for n in pipe.execute())


def prefix_memory(client: Any, prefix: str) -> tuple[int, int]:
    """(number of keys, their total ``MEMORY USAGE``) under ``prefix``."""
    keys = [_text(k) for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    return len(keys), memory_of(client, keys)


def only_globals_left(client: Any, prefix: str) -> list[str]:
    """The keys under ``prefix`` that are not global keys (empty: only globals remain)."""
    return sorted(k for k in (_text(r) for r in client.scan_iter(match=f"{prefix}*", count=1000))
                  if owner_of(k, prefix)[0] not in GLOBAL or owner_of(k, prefix)[1] is not None)
