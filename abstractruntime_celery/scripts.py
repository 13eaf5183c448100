"""The package's Lua scripts: one folder (``lua/``), one loader, each called by name.

Every atomic Redis state change is one script; the file list of ``lua/`` is the
list of state changes (save a run, append a step, take a lease, store an event ...).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Sequence


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """The text of ``lua/<name>.lua`` shipped with the package.

    Raises:
        FileNotFoundError: no such script.
    """
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def register(client: Any, name: str) -> Any:
    """A redis-py Script for ``lua/<name>.lua`` (EVALSHA; on NOSCRIPT every script is loaded)."""
    return _script_class()(client, source(name))


def sha_of(text: str) -> str:
    """The SHA1 Redis knows a script by (no round trip)."""
    import hashlib

    return hashlib.sha1(text.encode("utf-8")).hexdigest()


#: How many times a script answered NOSCRIPT is loaded again and called (a flush can land
#: between the load and the call).
NOSCRIPT_TRIES = 3


@lru_cache(maxsize=None)
def _script_class() -> type:
    from redis.commands.core import Script

    class AllOrNone(Script):  # type: ignore[misc, valid-type]
        """A script that, called on a client and answered NOSCRIPT, loads every script
        (``preload``), not only itself as redis-py does. A server with some scripts cached
        and some not runs a tick's MULTI of a ledger append then a save as the save alone:
        the append, run again after it, finds the run moved on and is refused."""

        def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
            from redis.client import Pipeline
            from redis.exceptions import NoScriptError

            target = client if client is not None else self.registered_client
            if isinstance(target, Pipeline):
                return super().__call__(keys, args, client)
            keys, args = list(keys or []), list(args or [])
            for attempt in range(NOSCRIPT_TRIES):
                try:
                    return target.evalsha(self.sha, len(keys), *keys, *args)
                except NoScriptError:  # (flushed again between the load and the call: once more)
                    if attempt == NOSCRIPT_TRIES - 1:
                        raise
                    preload(target)  # (never SCRIPT LOAD this one alone: see the class docstring)
                    self.sha = sha_of(self.script)  # (an object made for another server's text)

    return AllOrNone


def call_in(target: Any, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Queue ``script`` on a pipeline as a bare EVALSHA, or run it now on a client.

    redis-py's own pipelined scripts cost a SCRIPT EXISTS round trip on every
    execute; we skip it and let ``settle`` reload the script in the rare case the
    server has forgotten it (a restart).
    """
    from redis.client import Pipeline

    if isinstance(target, Pipeline):
        return target.evalsha(script.sha, len(keys), *keys, *args)
    return script(keys=list(keys), args=list(args), client=target)


def settle(result: Any, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """The result of a pipelined ``call_in``; on NOSCRIPT, run the script again on its own.

    Only for scripts that are safe to re-run after a NOSCRIPT reply (which ran nothing).

    Raises:
        Exception: the Redis error of the call.
    """
    from redis.exceptions import NoScriptError

    if isinstance(result, NoScriptError):
        return script(keys=list(keys), args=list(args))
    if isinstance(result, Exception):
        raise result
    return result


def run_after(client: Any, ops: Sequence[Any], results: Sequence[Any]) -> None:
    """After a pipeline: an op whose script the server had forgotten runs again on
    ``client``; any other error is raised.

    Raises:
        Exception: the first Redis error among ``results``.
    """
    from redis.exceptions import NoScriptError

    for op, result in zip(ops, results):
        if isinstance(result, NoScriptError):
            op(client)
        elif isinstance(result, Exception):
            raise result


def preload(client: Any) -> None:
    """Load every script into the server (SCRIPT LOAD), in one atomic step: a pipeline of
    another process finds all of them or none (a NOSCRIPT reply after a server restart is
    still handled where each is called: all are loaded again, then the call is repeated)."""
    folder = resources.files(__package__) / "lua"
    pipe = client.pipeline(transaction=True)  # all at once: never some cached and some not
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".lua"):
            pipe.script_load(entry.read_text(encoding="utf-8"))
    pipe.execute()
