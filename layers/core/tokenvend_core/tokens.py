"""Tokens and their lifetimes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Token:
    """An access token as a provider issued it. `refresh_token` never leaves the provider
    function except into the connection's secret. `extra` holds the answer's fields that the
    provider's catalogue entry passes through to callers (`passthrough`), never a secret:
    short strings, numbers and booleans, keyed by the field's path as the entry writes it."""

    access_token: str
    token_type: str
    expires_at: int
    scope: str | None = None
    refresh_token: str | None = None
    refresh_expires_at: int | None = None
    extra: dict[str, str | int | float | bool] = field(default_factory=dict, hash=False)

    def __repr__(self) -> str:  # never print a token, whatever prints this object
        return f"Token(token_type={self.token_type!r}, expires_at={self.expires_at})"


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds(value: Any) -> float | None:
    """A lifetime given as a number or a numeric string; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return number


def jwt_exp(token: str) -> int | None:
    """The `exp` claim of a JWT, read without verifying anything: used only as a lifetime."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    value = seconds(exp)
    return int(value) if value is not None else None


def retry_after(raw: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (RFC 9110 section 10.2.3) as seconds from `now`: its
    delay-seconds, or its HTTP date; None when it is neither. Never negative."""
    if not raw:
        return None
    delay = seconds(raw)
    if delay is None:
        from email.utils import parsedate_to_datetime

        try:
            moment = parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        delay = moment - (time.time() if now is None else now)
    return max(0.0, delay)
