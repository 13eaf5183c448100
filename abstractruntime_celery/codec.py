"""One JSON codec for what callers hand us and what the Redis stores write.

The payload check and the stores must agree byte for byte. When the check
measured ASCII-escaped JSON (``json.dumps``' default) while the stores wrote
UTF-8, a payload holding a lone surrogate (``"\\ud800"``) passed the check and
then failed every save of its run in a worker, until the run ended FAILED. So
both encode here: compact JSON, non-ASCII kept as is (as upstream's
``dumps_compact`` writes it), then strict UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import PayloadError

__all__ = ["dumps_bytes", "encode_text", "check_text"]


def encode_text(text: str, *, what: str) -> bytes:
    """``text`` as UTF-8 bytes: the one text encoding of every store write.

    Raises:
        PayloadError: ``text`` holds a lone surrogate (U+D800..U+DFFF), which UTF-8
            cannot encode; the message names ``what`` and shows where.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start:exc.end]
        near = text[max(0, exc.start - 24):exc.end + 24]
        raise PayloadError(
            f"{what} holds a lone surrogate U+{ord(bad[0]):04X}, which UTF-8 cannot encode "
            f"(near {near!r}); pass text as valid Unicode"
        ) from exc


def dumps_bytes(obj: Any, *, what: str = "value") -> bytes:
    """``obj`` as compact JSON (``ensure_ascii=False``, ``allow_nan=False``) in UTF-8.

    For a value this accepts, the bytes equal what the Redis stores write for it
    (upstream's ``dumps_compact`` encoded as UTF-8), so a size measured here is the
    size stored. It does not refuse non-string keys (``json`` turns them into
    strings); ``payloads.check_object`` does.

    Raises:
        PayloadError: ``obj`` holds a value JSON cannot carry (bytes, sets, objects),
            NaN or infinity, a reference cycle, an int too long to print, nesting too
            deep to serialise, or text UTF-8 cannot encode.
    """
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise PayloadError(f"{what} holds NaN or infinity, which JSON cannot carry") from exc
        raise PayloadError(f"{what} is not JSON-serialisable: {exc}") from exc
    except TypeError as exc:
        raise PayloadError(f"{what} is not JSON-serialisable: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError(f"{what} is nested too deeply to serialise") from exc
    return encode_text(text, what=what)


def check_text(value: Any, *, what: str, limit: int) -> str:
    """Return ``value`` if it is a str of at most ``limit`` UTF-8 bytes.

    For caller strings that end up in Redis keys or records (wait keys, mailbox
    names, ids): they must be writable as they are, and bounded.

    Raises:
        PayloadError: not a str, holds a lone surrogate, or is over ``limit`` bytes.
    """
    if not isinstance(value, str):
        raise PayloadError(f"{what} must be a string, got {type(value).__name__}")
    size = len(encode_text(value, what=what))
    if size > limit:
        raise PayloadError(f"{what} is {size} bytes of UTF-8, over the limit of {limit} bytes")
    return value
