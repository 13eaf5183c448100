"""Load the package's named Lua scripts once per client (one atomic Redis change each)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=None)
def script_source(name: str) -> str:
    """The text of ``lua/<name>.lua`` shipped with the package."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def register(client: Any, name: str) -> Any:
    """A redis-py Script object for ``lua/<name>.lua`` (EVALSHA with a load fallback)."""
    return client.register_script(script_source(name))
