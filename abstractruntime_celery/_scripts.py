"""Load the package's named Lua scripts once per client (one atomic Redis change each)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Sequence


@lru_cache(maxsize=None)
def script_source(name: str) -> str:
    """The text of ``lua/<name>.lua`` shipped with the package."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def register(client: Any, name: str) -> Any:
    """A redis-py Script object for ``lua/<name>.lua`` (EVALSHA with a load fallback)."""
    return client.register_script(script_source(name))


def run_ops(client: Any, ops: Sequence[Any], results: list[Any]) -> None:
    """After ``pipe.execute(raise_on_error=False)``: an op whose script the server had
    forgotten (NOSCRIPT, so it ran nothing) runs again on ``client``, which loads it;
    any other error is raised."""
    from .batch import Ahead, settle_ahead

    settle_ahead(client, [Ahead(op) for op in ops], results)


def call_in(target: Any, script: Any, keys: list[str], args: list[Any]) -> Any:
    """Queue ``script`` on a pipeline as a bare EVALSHA, or run it now on a client.

    redis-py's own pipelined scripts cost a SCRIPT EXISTS round trip on every
    execute; we skip it and let ``settle`` reload the script in the rare case
    the server has forgotten it (a restart).
    """
    from redis.client import Pipeline

    if isinstance(target, Pipeline):
        return target.evalsha(script.sha, len(keys), *keys, *args)
    return script(keys=keys, args=args, client=target)


def settle(result: Any, script: Any, keys: list[str], args: list[Any]) -> Any:
    """The result of a pipelined ``call_in``; on NOSCRIPT, run the script again on its own.

    Only for scripts that are safe to re-run after a NOSCRIPT reply (which ran nothing).
    """
    from redis.exceptions import NoScriptError

    if isinstance(result, NoScriptError):
        return script(keys=keys, args=args)
    if isinstance(result, Exception):
        raise result
    return result
