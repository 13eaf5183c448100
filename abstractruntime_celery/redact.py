"""URLs with their secrets masked, for exception messages, log lines and console output.

Celery logs a failing task's exception with every delivery, so an error that quoted
``redis://user:secret@host/0`` would copy the password into every worker's log.
"""

from __future__ import annotations

import re

__all__ = ["redact_url", "MASK"]

MASK = "***"
#: A query parameter whose name says it holds a secret (``password``, ``ssl_password``, ``token``, ...).
_SECRET_PARAM = re.compile(r"(^|[?&;])([^=&;#]*(?:pass|secret|token)[^=&;#]*)=([^&;#]*)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password, and any secret query parameter, replaced by ``***``.

    Scheme, user name, host, port and path stay readable:
    ``redis://alice:s3cret@h:6379/0`` -> ``redis://alice:***@h:6379/0``. The user part
    runs to the last ``@`` that is not inside the query, so a password holding ``/``,
    ``:``, ``#``, ``?`` or ``@`` is masked whole; a lone user part (``redis://s3cret@h``)
    is masked too, as some clients read it as the password. Never raises: anything it
    cannot read as a string gives ``***``.
    """
    try:
        text = url if isinstance(url, str) else str(url)
        start = text.find("://")
        start = 0 if start < 0 else start + 3
        at = text.rfind("@", start)
        query = text.find("?", start, at) if at >= 0 else -1
        if query >= 0 and "=" in text[query:at]:  # that '@' is in a query value
            at = text.rfind("@", start, query)
        if at >= 0:
            user, colon, _secret = text[start:at].partition(":")
            userinfo = f"{user}:{MASK}" if colon else (MASK if user else "")
            text = text[:start] + userinfo + text[at:]
            at = start + len(userinfo)
        query = text.find("?", max(at, start))
        if query < 0:
            return text
        return text[:query] + _SECRET_PARAM.sub(rf"\1\2={MASK}", text[query:])
    except Exception:
        return MASK
