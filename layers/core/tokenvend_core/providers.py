"""Providers as data (providers.toml), and what data cannot say: building a token request
from a connection's secret, and reading the endpoint's answer into a token or a failure.

Nothing here touches the network; `endpoint.py` sends what this module builds.
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

from .errors import (
    AuthorizationRequired,
    InvalidRequest,
    ProviderRejected,
    ProviderUnavailable,
    TokenVendError,
)
from .tokens import Token, jwt_exp, seconds

CLIENT_AUTHS = ("query", "client_secret_post", "client_secret_basic", "json")
COMMON_OPTIONAL = (
    "token_url",
    "client_auth",
    "extra_params",
    "default_lifetime",
    "allowed_principals",
)
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
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    grant: str
    required: tuple[str, ...]
    token_url: str | None = None
    optional: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    defaults: dict[str, str] = field(default_factory=dict)
    client_auth: str = "client_secret_post"
    url_client_auth: dict[str, str] = field(default_factory=dict)
    error_name: str = "error"
    error_code: str | None = None
    error_code_prefix: str = ""
    error_message: tuple[str, ...] = ("error_description",)
    throttle_codes: tuple[str, ...] = ()

    @property
    def uses_refresh_token(self) -> bool:
        return self.grant == "authorization_code"

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional + COMMON_OPTIONAL


@cache
def load_specs() -> dict[str, ProviderSpec]:
    text = resources.files(__package__).joinpath("providers.toml").read_text("utf-8")
    specs = {}
    for name, data in tomllib.loads(text).items():
        for key in ("required", "optional", "params", "error_message", "throttle_codes"):
            if key in data:
                data[key] = tuple(data[key])
        specs[name] = ProviderSpec(name=name, **data)
    return specs


def spec_for(name: str) -> ProviderSpec:
    return load_specs()[name]


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One HTTP request to a token endpoint. `secrets` lists the values that must never
    appear in anything this request's outcome says."""

    url: str
    query: dict[str, str]
    form: dict[str, str] | None
    json_body: dict[str, str] | None
    headers: dict[str, str]
    secrets: tuple[str, ...]

    def __repr__(self) -> str:
        return f"TokenRequest(url={safe_url(self.url)!r})"


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure: `error` is what the caller is told; `permanent` failures are
    remembered on the connection and not retried until its secret changes; `retry` failures
    may be retried within the same attempt."""

    error: TokenVendError
    permanent: bool
    retry: bool
    retry_after: float | None = None


def safe_url(url: str) -> str:
    """A URL without its query string or user info: fit to log or tell."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def validate_secret(
    spec: ProviderSpec, value: Any, *, allow_http_loopback: bool = False
) -> dict[str, Any]:
    """Check a connection's secret against the provider's fields; raise InvalidRequest."""
    if not isinstance(value, dict):
        raise InvalidRequest("the connection's secret must be a JSON object")
    unknown = sorted(set(value) - set(spec.fields))
    if unknown:
        raise InvalidRequest(
            f"unknown field(s) for {spec.name}: {', '.join(unknown)}; "
            f"allowed: {', '.join(spec.fields)}"
        )
    missing = [name for name in spec.required if not _text(value.get(name))]
    if missing:
        raise InvalidRequest(f"{spec.name} needs the field(s): {', '.join(missing)}")
    for name in set(spec.required) | set(spec.optional) | {"token_url"}:
        if name in value and name != "refresh_expires_at" and not isinstance(value[name], str):
            raise InvalidRequest(f"field {name} must be a string")
    if "refresh_expires_at" in value and seconds(value["refresh_expires_at"]) is None:
        raise InvalidRequest("field refresh_expires_at must be a number")
    auth = value.get("client_auth")
    if auth is not None and auth not in CLIENT_AUTHS:
        raise InvalidRequest(f"client_auth must be one of: {', '.join(CLIENT_AUTHS)}")
    extra = value.get("extra_params")
    if extra is not None and not (
        isinstance(extra, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items())
    ):
        raise InvalidRequest("extra_params must be an object of strings")
    lifetime = value.get("default_lifetime")
    if lifetime is not None and (
        isinstance(lifetime, bool) or not isinstance(lifetime, int) or not 60 <= lifetime <= 86400
    ):
        raise InvalidRequest("default_lifetime must be an integer from 60 to 86400 seconds")
    principals = value.get("allowed_principals")
    if principals is not None and not (
        isinstance(principals, list)
        and all(isinstance(p, str) and p.startswith("arn:") for p in principals)
    ):
        raise InvalidRequest("allowed_principals must be a list of ARN patterns")
    url = token_url(spec, value)
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK):
        raise InvalidRequest("the token URL must be https (http only on a loopback address)")
    if not parts.hostname or "{" in url:
        raise InvalidRequest("the token URL is not a complete URL")
    return value


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def token_url(spec: ProviderSpec, secret: dict[str, Any]) -> str:
    template = secret.get("token_url") or spec.token_url or ""
    values = {**spec.defaults, **{k: v for k, v in secret.items() if isinstance(v, str)}}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        # A host is put in as it is; a path segment (tenant, corp) is escaped.
        return value.rstrip("/") if "://" in value else quote(value, safe="")

    return re.sub(r"\{([a-z_]+)\}", fill, template)


def client_auth(spec: ProviderSpec, secret: dict[str, Any], url: str) -> str:
    if secret.get("client_auth"):
        return str(secret["client_auth"])
    path = urlsplit(url).path
    for ending, auth in spec.url_client_auth.items():
        if path.endswith(ending):
            return auth
    return spec.client_auth


def build_request(
    spec: ProviderSpec,
    secret: dict[str, Any],
    *,
    code: str | None = None,
    redirect_uri: str | None = None,
) -> TokenRequest:
    """The token request for this connection: a code exchange when `code` is given, a
    refresh-token grant for providers that authorize users, else client credentials."""
    url = token_url(spec, secret)
    params: dict[str, str] = {}
    secrets = [secret["client_secret"]]
    if spec.uses_refresh_token:
        if code is not None:
            params.update(
                grant_type="authorization_code",
                code=code,
                redirect_uri=redirect_uri or secret["redirect_uri"],
            )
            secrets.append(code)
        else:
            refresh_token = secret.get("refresh_token")
            if not refresh_token:
                raise AuthorizationRequired(
                    "this connection has not been authorized yet: redeem a code with "
                    "`tokenvend authorize PROVIDER CONNECTION --code CODE`"
                )
            params.update(grant_type="refresh_token", refresh_token=refresh_token)
            secrets.append(refresh_token)
    else:
        params["grant_type"] = "client_credentials"
    for name in spec.params:
        if secret.get(name):
            params[name] = secret[name]
    params.update(secret.get("extra_params") or {})

    auth = client_auth(spec, secret, url)
    credentials = {"client_id": secret["client_id"], "client_secret": secret["client_secret"]}
    headers = {"Accept": "application/json"}
    query: dict[str, str] = {}
    form: dict[str, str] | None = None
    body: dict[str, str] | None = None
    if auth == "query":
        query = {**credentials, **params}
    elif auth == "json":
        body = {**credentials, **params}
    elif auth == "client_secret_basic":
        pair = f"{quote_plus(credentials['client_id'])}:{quote_plus(credentials['client_secret'])}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        form = params
    else:
        form = {**credentials, **params}
    return TokenRequest(url, query, form, body, headers, tuple(s for s in secrets if s))


def scrub(text: str, secrets: tuple[str, ...], limit: int = 240) -> str:
    """A provider's description, cut to one line, without any of the request's secrets."""
    line = text.replace("\r", "\n").split("\n", 1)[0].strip()
    for secret in secrets:
        if secret and len(secret) >= 4:
            line = line.replace(secret, "[redacted]")
    line = "".join(ch for ch in line if ch.isprintable())
    return line[:limit]


def _path(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    if raw is None:
        return None
    value = seconds(raw)
    if value is not None:
        return max(0.0, min(value, 3600.0))
    from email.utils import parsedate_to_datetime

    try:
        import time

        return max(0.0, min(parsedate_to_datetime(raw).timestamp() - time.time(), 3600.0))
    except (TypeError, ValueError, IndexError):
        return None


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
        where = safe_url(location) if location else "(no Location)"
        return Failure(
            ProviderRejected(
                f"redirect: the token endpoint answered {status} and points to {where}; "
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
        failure = _error_in(spec, status, data, secrets, retry_after, request)
        if failure is not None:
            return failure
        if 200 <= status < 300:
            return _token_in(spec, data, now, default_lifetime, requested_scope) or Failure(
                ProviderUnavailable("malformed answer: the token endpoint sent no access_token"),
                permanent=False,
                retry=True,
            )
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
    request: TokenRequest,
) -> Failure | None:
    name = data.get(spec.error_name)
    name = name if isinstance(name, str) and name else None
    code: Any = data.get(spec.error_code) if spec.error_code else None
    if isinstance(code, list):
        code = code[0] if code else None
    if code in (0, "0", "", None) or isinstance(code, bool):
        code = None
    if name is None and code is None:
        if "errcode" in data and data.get("errcode") not in (0, "0"):
            code = data.get("errcode")  # the legacy DingTalk shape
        elif status < 400:
            return None
    if name is None and code is None:
        return None
    shown_code = f"{spec.error_code_prefix}{code}" if code is not None else None
    label = " ".join(x for x in (shown_code, name and f"({name})" if shown_code else name) if x)
    description = ""
    for dotted in spec.error_message:
        found = _path(data, dotted)
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


def _token_in(
    spec: ProviderSpec,
    data: dict[str, Any],
    now: float,
    default_lifetime: int,
    requested_scope: str | None,
) -> Token | None:
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip():
        return None
    lifetime = seconds(data.get("expires_in"))
    if lifetime is not None and lifetime > 0:
        expires_at = now + min(lifetime, MAX_LIFETIME)
    else:
        exp = jwt_exp(access_token)
        if exp is not None and exp > now:
            expires_at = min(float(exp), now + MAX_LIFETIME)
        else:
            expires_at = now + default_lifetime
    token_type = data.get("token_type")
    scope = data.get("scope")
    refresh_token = data.get("refresh_token")
    refresh_in = seconds(data.get("refresh_expires_in"))
    return Token(
        access_token=access_token,
        token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        expires_at=int(expires_at),
        scope=scope if isinstance(scope, str) and scope else requested_scope,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        refresh_expires_at=int(now + refresh_in) if refresh_in is not None else None,
    )
