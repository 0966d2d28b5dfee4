"""Reading a token endpoint's answer, as its catalogue entry says, into a token or a
classified failure; and `scrub`, which keeps every form of the request's secrets out of
whatever a provider's words become (an error message, a granted scope, a passthrough).

Nothing here touches the network, and nothing here raises for what a server may send.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tokenvend_core.catalogue.request import TokenRequest, secret_forms
from tokenvend_core.catalogue.spec import ProviderSpec
from tokenvend_core.catalogue.urls import safe_url
from tokenvend_core.errors import (
    AuthorizationRequired,
    ProviderRejected,
    ProviderUnavailable,
    TokenVendError,
)
from tokenvend_core.tokens import Token, jwt_exp, retry_after, seconds, sha256_hex

# RFC 6749 section 5.2: these say the configuration is wrong; retrying will not help.
PERMANENT_ERRORS = frozenset(
    {
        "invalid_client",
        "unauthorized_client",
        "invalid_grant",
        "invalid_scope",
        "unsupported_grant_type",
        "invalid_request",
        "access_denied",
    }
)
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
MAX_LIFETIME = 30 * 86400
# An absolute expiry above this is in epoch milliseconds (10^12 ms is September 2001).
EPOCH_MS_ABOVE = 10**12
# What a provider's own words may occupy in a message: one short, printable line.
DESCRIPTION_LIMIT = 240
LABEL_LIMIT = 80
# A passthrough value callers may be shown: a short printable string, a number or a bool.
PASSTHROUGH_LIMIT = 1024
REDACTED = "[redacted]"
# A token type as callers may be shown it.
PLAIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")

Extra = dict[str, str | int | float | bool]


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure: `error` is what the caller is told; `permanent` failures are
    remembered on the connection and not retried until its secret changes; `retry` failures
    may be retried within the same attempt."""

    error: TokenVendError
    permanent: bool
    retry: bool
    retry_after: float | None = None
    # A success answer that gave no usable access token may still have rotated the grant:
    # its new refresh token, which must be kept all the same (never retried with the old).
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: int | None = None
    # A success answer whose access token is already dead: that token's SHA-256, so that a
    # cached copy of the very same token (a provider that re-issues it) is not served on.
    dead_token_sha256: str | None = None


def scrub(text: str, secrets: tuple[str, ...], limit: int = DESCRIPTION_LIMIT) -> str:
    """A provider's words as a caller may see them: without any form of the request's
    secrets (compared without regard to case, so that re-encoded percent escapes are caught
    too), cut to one line of printable characters, at most `limit` long."""
    pattern = _pattern(secrets)

    def redact(value: str) -> str:
        return pattern.sub(REDACTED, value) if pattern is not None else value

    # Before the line is cut (a secret may span lines) and after (removing characters may
    # join a secret that a control character had split).
    line = redact(text).replace("\r", "\n").split("\n", 1)[0].strip()
    line = redact("".join(ch for ch in line if ch.isprintable()))
    return line[:limit]


def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(map(re.escape, secrets)), re.IGNORECASE) if secrets else None


def path(data: Any, dotted: str) -> Any:
    """The value at a dotted path of an answer (`data.token`), or None."""
    value = data
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _retry_after(headers: Any) -> float | None:
    """The answer's Retry-After in seconds, at most an hour."""
    delay = retry_after(headers.get("Retry-After") if headers is not None else None)
    return min(delay, 3600.0) if delay is not None else None


def interpret(
    spec: ProviderSpec,
    status: int,
    headers: Any,
    body: bytes,
    *,
    request: TokenRequest,
    now: float,
    default_lifetime: int,
    requested_scope: str | None = None,
) -> Token | Failure:
    """Read a token endpoint's answer. Never raises for what a server may send."""
    secrets = request.secrets
    retry_after = _retry_after(headers)
    if 300 <= status < 400:
        location = headers.get("Location", "") if headers is not None else ""
        where = scrub(safe_url(location), secrets, LABEL_LIMIT * 2) if location else ""
        return Failure(
            ProviderRejected(
                f"redirect: the token endpoint answered {status} and points to "
                f"{where or '(no Location)'}; "
                "set the connection's token_url (or authority_host) to the new address"
            ),
            permanent=True,
            retry=False,
        )
    data: Any
    try:
        data = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        failure = _error_in(spec, status, data, secrets, retry_after)
        if failure is not None:
            return failure
        if 200 <= status < 300:
            return _token_in(spec, data, secrets, now, default_lifetime, requested_scope)
    return _by_status(status, retry_after, "malformed answer" if data is None else "unexpected")


def _by_status(status: int, retry_after: float | None, what: str) -> Failure:
    after = int(retry_after + 0.999) if retry_after is not None else None
    if status == 429:
        message = "throttled: the token endpoint answered 429 Too Many Requests"
    elif status >= 500:
        message = f"the token endpoint failed with HTTP {status}"
    else:
        message = (
            f"{what}: the token endpoint answered HTTP {status} with a body tokenvend cannot read"
        )
    return Failure(
        ProviderUnavailable(message, retry_after=after),
        permanent=False,
        retry=True,
        retry_after=retry_after,
    )


def _error_in(
    spec: ProviderSpec,
    status: int,
    data: dict[str, Any],
    secrets: tuple[str, ...],
    retry_after: float | None,
) -> Failure | None:
    name = data.get(spec.error_name)
    name = name if isinstance(name, str) and name else None
    code = _error_code(data.get(spec.error_code) if spec.error_code else None)
    if name is None and code is None:
        code = _error_code(data.get("errcode"))  # the legacy DingTalk shape
        if code is None and status < 400:
            return None
    if name is None and code is None:
        return None
    # The provider's own name and code are its words too: bounded and scrubbed like the rest.
    shown_code = scrub(f"{spec.error_code_prefix}{code}", secrets, LABEL_LIMIT) if code else None
    shown_name = scrub(name, secrets, LABEL_LIMIT) if name else None
    label = " ".join(
        x for x in (shown_code, f"({shown_name})" if shown_code and shown_name else shown_name) if x
    )
    description = ""
    for dotted in spec.error_message:
        found = path(data, dotted)
        if isinstance(found, str) and found and found != name:
            description = scrub(found, secrets)
            break
    message = f"{label}: {description}" if description else label
    normal = (name or str(code)).replace(".", "_").lower()
    code_text = str(code or "")
    after = int(retry_after + 0.999) if retry_after is not None else None
    if any(code_text.startswith(prefix) for prefix in spec.throttle_codes) or status == 429:
        return Failure(
            ProviderUnavailable(f"throttled: {message}", retry_after=after),
            permanent=False,
            retry=True,
            retry_after=retry_after,
        )
    if normal in TRANSIENT_ERRORS or status >= 500:
        return Failure(
            ProviderUnavailable(f"the provider failed: {message}", retry_after=after),
            permanent=False,
            retry=True,
            retry_after=retry_after,
        )
    if normal == "invalid_grant" and spec.uses_refresh_token:
        return Failure(
            AuthorizationRequired(
                f"the provider refused the connection's grant ({message}); authorize it again "
                "with `tokenvend authorize PROVIDER CONNECTION --code CODE`"
            ),
            permanent=True,
            retry=False,
        )
    return Failure(
        ProviderRejected(f"the provider rejected the request: {message}"),
        permanent=normal in PERMANENT_ERRORS,
        retry=False,
    )


def _error_code(value: Any) -> str | int | None:
    """A provider's error code: a string or a number (or the first of a list), not zero."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, bool) or not isinstance(value, str | int) or value in (0, "0", ""):
        return None
    return value


def _token_in(
    spec: ProviderSpec,
    data: dict[str, Any],
    secrets: tuple[str, ...],
    now: float,
    default_lifetime: int,
    requested_scope: str | None,
) -> Token | Failure:
    """The token of a success answer, at `token_field`. Its expiry is read from
    `expires_field` as `expires_kind` says, else from the `exp` of a JWT, else
    `default_lifetime` from now: the default is for answers that say nothing of expiry, never
    for one that says the token is already dead, which is a (transient) failure."""
    refresh_token = data.get("refresh_token")
    refresh_token = refresh_token if isinstance(refresh_token, str) and refresh_token else None
    refresh_in = seconds(data.get("refresh_expires_in"))
    refresh_expires_at = int(now + refresh_in) if refresh_in is not None else None
    access_token = path(data, spec.token_field)
    if not isinstance(access_token, str) or not access_token.strip():
        return _unusable(
            _malformed(f"the token endpoint sent no {spec.token_field}"),
            refresh_token,
            refresh_expires_at,
        )
    expires_at = expiry(spec, path(data, spec.expires_field), now)
    if expires_at is None:
        exp = jwt_exp(access_token)
        expires_at = min(float(exp), now + MAX_LIFETIME) if exp is not None else None
    if expires_at is None:
        expires_at = now + default_lifetime
    if int(expires_at) <= now:
        dead = Failure(
            ProviderUnavailable("the provider issued a token that has already expired"),
            permanent=False,
            retry=True,
            dead_token_sha256=sha256_hex(access_token),
        )
        return _unusable(dead, refresh_token, refresh_expires_at)
    token_type = data.get("token_type")
    scope = data.get("scope")
    answered = secret_forms([access_token, *([refresh_token] if refresh_token else [])])
    return Token(
        access_token=access_token,
        token_type=_token_type(token_type),
        expires_at=int(expires_at),
        scope=scope if _fit_scope(scope, secrets) else requested_scope,
        refresh_token=refresh_token,
        refresh_expires_at=refresh_expires_at,
        extra=passthrough(spec, data, (*secrets, *answered)),
    )


def expiry(spec: ProviderSpec, value: Any, now: float) -> float | None:
    """When the token expires (epoch seconds, at most MAX_LIFETIME from now), from the
    answer's `expires_field` value read as `expires_kind`; None when it says nothing
    readable. `seconds` and `milliseconds` are a lifetime from now (a number or a numeric
    string); `absolute` is an instant: epoch seconds, epoch milliseconds (above 10^12), or
    RFC 3339 text with its offset."""
    number = seconds(value)
    if spec.expires_kind == "absolute":
        if number is None:
            number = _rfc3339(value)
        elif number > EPOCH_MS_ABOVE:
            number /= 1000
        return None if number is None else min(number, now + MAX_LIFETIME)
    if number is None:
        return None
    if spec.expires_kind == "milliseconds":
        number /= 1000
    return now + min(number, MAX_LIFETIME)


def _rfc3339(value: Any) -> float | None:
    if not isinstance(value, str) or not 10 <= len(value) <= 64:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:  # RFC 3339 always says its offset; a local time is unknown
        return None
    return moment.timestamp()


def passthrough(spec: ProviderSpec, data: dict[str, Any], secrets: tuple[str, ...]) -> Extra:
    """The answer's `passthrough` fields that callers may be shown: short printable strings,
    finite numbers and booleans, none holding any form of a secret (of the request, or the
    answer's own tokens). Anything else is left out, silently: it is not the caller's."""
    pattern = _pattern(secrets)
    extra: Extra = {}
    for dotted in spec.passthrough:
        value = path(data, dotted)
        if isinstance(value, bool):
            pass
        elif isinstance(value, int | float):
            if not math.isfinite(value) or abs(value) > 2**63:
                continue
        elif isinstance(value, str):
            if not value or len(value) > PASSTHROUGH_LIMIT or not value.isprintable():
                continue
        else:
            continue
        if pattern is not None and pattern.search(str(value)):
            continue
        extra[dotted] = value
    return extra


def _unusable(
    failure: Failure, refresh_token: str | None, refresh_expires_at: int | None
) -> Failure:
    """A success answer without a usable access token. When it carries a refresh token, the
    grant has rotated: not retried (a retry would spend the old grant), and the new refresh
    token goes with the failure, to be kept."""
    if refresh_token is None:
        return failure
    return replace(
        failure,
        retry=False,
        refresh_token=refresh_token,
        refresh_expires_at=refresh_expires_at,
    )


def _malformed(what: str) -> Failure:
    return Failure(ProviderUnavailable(f"malformed answer: {what}"), permanent=False, retry=True)


def _token_type(value: Any) -> str:
    """The token type as callers may be shown it: one short word (``Bearer``, ``bearer``,
    ``MAC``); anything else is read as the default, ``Bearer``."""
    return value if isinstance(value, str) and PLAIN_WORD.fullmatch(value) else "Bearer"


def _fit_scope(value: Any, secrets: tuple[str, ...]) -> bool:
    """A granted scope callers may be shown: printable, bounded, and holding no secret."""
    if not isinstance(value, str) or not value or len(value) > 2000:
        return False
    return value.isprintable() and scrub(value, secrets, len(value)) == value
