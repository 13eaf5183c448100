"""Standard Webhooks signatures: HMAC-SHA256 over ``<id>.<timestamp>.<body>``.

A sender signs each delivery with a shared secret and sends three headers:
``webhook-id`` (the delivery's id, the same on every retry), ``webhook-timestamp``
(integer seconds since the epoch, new on every attempt) and ``webhook-signature``
(space-separated ``v1,<base64>`` entries: one per secret while a secret rotates).

We check it here rather than with ``standardwebhooks.Webhook.verify`` (the tests use
that library as the independent sender): its replay window is fixed at five minutes,
it takes one secret, it raises ``UnicodeDecodeError``/``ValueError``/``binascii.Error``
for some malformed headers and bodies instead of its own error, it decodes secrets with
a base64 decoder that skips bad characters, and it signs the floor of a fractional
timestamp rather than the header's own text. This check signs the body's raw bytes and
the headers exactly as sent, takes several secrets, a configurable window, and compares
digests in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from ..errors import AbstractRuntimeCeleryError, ConfigError

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"

#: A delivery id: printable ASCII without spaces, as senders make them (``msg_2b...``).
DELIVERY_ID = re.compile(r"[\x21-\x7e]{1,256}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
#: Most signature entries and header bytes looked at (bounds the work a request can cause).
MAX_SIGNATURES = 16
MAX_SIGNATURE_HEADER = 4096


class SignatureError(AbstractRuntimeCeleryError, ValueError):
    """A webhook's signature headers are missing, malformed or match no secret (HTTP 401)."""

    code = "bad_signature"


class StaleTimestampError(SignatureError):
    """A webhook's timestamp is outside the replay window (too old, or too far ahead)."""

    code = "stale_timestamp"


@dataclass(frozen=True)
class SignedDelivery:
    """What a verified request says of itself: its delivery id and when it was signed."""

    delivery_id: str
    timestamp: int


def parse_secret(secret: str | bytes) -> bytes:
    """The key bytes of a secret: ``whsec_<base64>`` (or plain base64) text, or raw bytes.

    Raises:
        ConfigError: empty, or text that is not valid base64 (checked strictly: a typo
            must not become a different key).
    """
    if isinstance(secret, bytes):
        key = secret
    elif isinstance(secret, str):
        text = secret.strip()
        text = text[len(SECRET_PREFIX):] if text.startswith(SECRET_PREFIX) else text
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"webhook secret {_shown(secret)} is not whsec_<base64>") from None
    else:
        raise ConfigError(f"a webhook secret must be str or bytes, got {type(secret).__name__}")
    if not key:
        raise ConfigError("a webhook secret must not be empty")
    return key


def parse_secrets(secrets: str | bytes | Iterable[str | bytes]) -> tuple[bytes, ...]:
    """Several secrets: a list, or one text of secrets separated by spaces or commas.

    Raises:
        ConfigError: as ``parse_secret``.
    """
    if isinstance(secrets, str):
        secrets = [s for s in re.split(r"[\s,]+", secrets) if s]
    elif isinstance(secrets, bytes):
        secrets = [secrets]
    return tuple(parse_secret(s) for s in secrets)


def sign(secret: str | bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` entry a sender holding ``secret`` sends (``v1,<base64>``).

    Raises:
        ConfigError: the secret is malformed.
    """
    digest = _digest(parse_secret(secret), delivery_id, str(timestamp), body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secrets: str | bytes | Sequence[str | bytes], delivery_id: str, body: bytes,
                   timestamp: Optional[int] = None) -> dict[str, str]:
    """The three headers of a delivery signed with every one of ``secrets`` (for senders and tests).

    Raises:
        ConfigError: a secret is malformed.
    """
    ts = int(time.time()) if timestamp is None else int(timestamp)
    keys = [secrets] if isinstance(secrets, (str, bytes)) else list(secrets)
    return {ID_HEADER: delivery_id, TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: " ".join(sign(k, delivery_id, ts, body) for k in keys)}


def verify(headers: Mapping[str, str], body: bytes, secrets: Sequence[bytes], *, tolerance_s: float,
           now: Optional[float] = None) -> SignedDelivery:
    """Check a request's Standard Webhooks headers (names in lower case) against ``body``.

    Raises:
        SignatureError: a header is missing or malformed, or no ``v1`` signature matches
            any of ``secrets``.
        StaleTimestampError: the timestamp is more than ``tolerance_s`` from ``now``.
    """
    delivery_id = headers.get(ID_HEADER, "")
    stamp = headers.get(TIMESTAMP_HEADER, "")
    presented = headers.get(SIGNATURE_HEADER, "")
    if not (delivery_id and stamp and presented):
        raise SignatureError(f"missing {ID_HEADER}, {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if not DELIVERY_ID.fullmatch(delivery_id):
        raise SignatureError(f"{ID_HEADER} must be 1-256 printable ASCII characters without spaces")
    if not _TIMESTAMP.fullmatch(stamp):
        raise SignatureError(f"{TIMESTAMP_HEADER} must be whole seconds since the epoch")
    now = time.time() if now is None else now
    if abs(int(stamp) - now) > tolerance_s:
        raise StaleTimestampError(f"{TIMESTAMP_HEADER} {stamp} is more than {tolerance_s:g}s from now")
    if len(presented) > MAX_SIGNATURE_HEADER:
        raise SignatureError(f"{SIGNATURE_HEADER} is longer than {MAX_SIGNATURE_HEADER} characters")
    given = _v1_signatures(presented)
    expected = [_digest(key, delivery_id, stamp, body) for key in secrets]
    matched = False
    for want in expected:  # every pair is compared: the time taken does not say which matched
        for got in given:
            matched |= hmac.compare_digest(want, got)
    if not matched:
        raise SignatureError("no signature matches a configured secret")
    return SignedDelivery(delivery_id, int(stamp))


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` entries (others, and undecodable ones, are skipped)."""
    found: list[bytes] = []
    for entry in header.split()[:MAX_SIGNATURES]:
        version, sep, value = entry.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            found.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def _digest(key: bytes, delivery_id: str, stamp: str, body: bytes) -> bytes:
    return hmac.new(key, delivery_id.encode("ascii") + b"." + stamp.encode("ascii") + b"." + body,
                    hashlib.sha256).digest()


def _shown(secret: str) -> str:
    """A secret named in an error: its first characters only."""
    return repr(secret[:10] + "...") if len(secret) > 10 else "'...'"
