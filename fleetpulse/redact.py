"""Error text safe to store and log: what a remote service answered, without the secrets it may echo.

An ITSM, a proxy or a time-series database answering 401 or 502 may echo the request, its
Authorization header included; that text goes to outbox rows, logs and the admin API. Shared by the
ticket connectors and the stream worker's TSDB sinks.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MAX_ERROR_CHARS = 500
REDACTED = "[redacted]"

# Credentials a service may echo back in an error page: header lines, auth schemes, URL userinfo.
_CREDENTIAL_PATTERNS = (
    re.compile(r"(?i)((?:proxy-)?authorization|cookie|set-cookie|x-api-key)([\"']?\s*[:=]\s*)[^\r\n,;}]+"),
    re.compile(r"(?i)\b(basic|bearer|token|digest)(\s+)[A-Za-z0-9+/=._~-]{4,}"),
    re.compile(r"(?i)(://)([^/\s:@]*:)[^/\s@]*(@)"),
)
_WITHHELD = "error text withheld: it echoed a configured secret"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` safe to store and log: configured secrets (and their usual encodings) and any
    credential-looking material replaced, control characters dropped, length bounded.

    """
    variants = sorted(
        {
            variant
            for secret in secrets
            if secret
            for variant in (
                secret,
                json.dumps(secret)[1:-1],
                quote(secret, safe=""),
                quote_plus(secret),
                base64.b64encode(secret.encode()).decode().rstrip("="),
            )
            if variant
        },
        key=len,
        reverse=True,
    )
    for variant in variants:
        text = text.replace(variant, REDACTED)
    text = _CREDENTIAL_PATTERNS[0].sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    text = _CREDENTIAL_PATTERNS[1].sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    text = _CREDENTIAL_PATTERNS[2].sub(lambda m: f"{m[1]}{m[2]}{REDACTED}{m[3]}", text)
    text = _CONTROL.sub(" ", text)
    text = text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
    if any(variant in text for variant in variants):  # the marker and its neighbours spelt a secret again
        return "" if any(variant in _WITHHELD for variant in variants) else _WITHHELD
    return text
