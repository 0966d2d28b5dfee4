"""Providers as data (providers.toml), and what data cannot say: building a token request
from a connection's secret, and reading the endpoint's answer into a token or a failure.

Nothing here touches the network; `endpoint.py` sends what this module builds.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import tomllib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from tokenvend_core.errors import (
    AuthorizationRequired,
    InvalidRequest,
    ProviderRejected,
    ProviderUnavailable,
    TokenVendError,
)
from tokenvend_core.tokens import Token, jwt_exp, seconds, sha256_hex

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
# Fields of a connection's secret whose values are secret (client_secret, refresh_token, and
# whatever key material a provider may come to need); every extra_params value is secret too.
SECRET_FIELD = re.compile(r"secret|password|private_key|assertion|(?:^|_)token$")
# What a provider's own words may occupy in a message: one short, printable line.
DESCRIPTION_LIMIT = 240
LABEL_LIMIT = 80
REDACTED = "[redacted]"
# A token type as callers may be shown it.
PLAIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")


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
    """One HTTP request to a token endpoint. `secrets` lists every form in which this
    request carries a secret (see `secret_forms`): none may appear in anything its outcome
    says. `url` has been judged by `check_url`."""

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
    # A success answer that gave no usable access token may still have rotated the grant:
    # its new refresh token, which must be kept all the same (never retried with the old).
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: int | None = None
    # A success answer whose access token is already dead: that token's SHA-256, so that a
    # cached copy of the very same token (a provider that re-issues it) is not served on.
    dead_token_sha256: str | None = None


def safe_url(url: str) -> str:
    """A URL without its query string, fragment or user info: fit to log or tell when the
    URL is tokenvend's own (a provider's URL goes through `scrub` as well)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unreadable address)"
    if not parts.scheme and not parts.netloc:
        return parts.path
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def check_url(
    url: str, *, allow_http_loopback: bool, plain_http_hosts: Collection[str] = ()
) -> str:
    """`url` if it is fit to send credentials to; raise InvalidRequest otherwise.

    The URL is judged as the HTTP library will use it: `requests` prepares it and urllib3
    reads the host to connect to with `urllib3.util.parse_url`, which does not read every URL
    as `urllib.parse.urlsplit` does (``http://a\\@b/`` is host ``a`` to one and ``b`` to the
    other). So whatever the two could read differently is refused outright: backslashes, user
    info, fragments, whitespace and control characters, non-ASCII text, dot segments, and
    any URL whose scheme, host or port differ between the two readings. https only; plain
    http only on a loopback host and only with `allow_http_loopback` (the local stack and the
    tests), or on one of `plain_http_hosts` (host names or IP addresses, as
    Settings.plain_http_hosts holds them: the local stack's docker bridge address). The
    messages never repeat the URL.
    """
    if not isinstance(url, str) or not url:
        raise InvalidRequest("the token URL is empty")
    if "{" in url or "}" in url:
        raise InvalidRequest("the token URL is not a complete URL: a {field} was not filled in")
    if not url.isascii():
        raise InvalidRequest("the token URL must be ASCII (percent-encode its path)")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidRequest("the token URL holds whitespace or a control character")
    if "\\" in url:
        raise InvalidRequest("the token URL holds a backslash")
    if "#" in url:
        raise InvalidRequest("the token URL may not have a fragment (#)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequest("the token URL is malformed") from None
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme not in ("https", "http"):
        raise InvalidRequest("the token URL must be https (http only on a loopback address)")
    if "@" in parts.netloc:
        raise InvalidRequest("the token URL may not carry user info (user@)")
    if not host:
        raise InvalidRequest("the token URL is not a complete URL: it names no host")
    if not _plain_host(host):
        raise InvalidRequest("the token URL's host is not a plain DNS name or IP address")
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        raise InvalidRequest("the token URL's path may not hold . or .. segments")
    for seen in _as_the_http_library_reads(url):
        if seen != (scheme, host, port):
            raise InvalidRequest("the token URL reads differently to the HTTP library: refused")
    if scheme == "http" and not (
        (allow_http_loopback and _is_loopback(host)) or _listed(host, plain_http_hosts)
    ):
        raise InvalidRequest(
            "the token URL must be https (plain http only on a loopback address or a host "
            "the stack lists, where the stack allows it)"
        )
    return url


def _listed(host: str, hosts: Collection[str]) -> bool:
    """`host` (as urlsplit reads it: lower case, no brackets) is one of `hosts`; an IP
    address matches in any of its spellings."""
    if not hosts:
        return False
    try:
        return str(ipaddress.ip_address(host)) in hosts
    except ValueError:  # a host name
        return host in hosts


def _plain_host(host: str) -> bool:
    if ":" in host:  # a bracketed IPv6 address, without a zone
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return re.fullmatch(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?", host) is not None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _as_the_http_library_reads(url: str) -> list[tuple[str, str, int | None]]:
    """(scheme, host, port) as urllib3 reads the URL, and as it reads the URL that `requests`
    prepares from it (the one its connection pool is chosen by)."""
    import requests
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    def read(text: str) -> tuple[str, str, int | None]:
        parsed = parse_url(text)
        if parsed.auth:
            raise InvalidRequest("the token URL may not carry user info (user@)")
        host = (parsed.host or "").lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return (parsed.scheme or "").lower(), host, parsed.port

    try:
        prepared = requests.Request("POST", url).prepare().url or ""
        return [read(url), read(prepared)]
    except (LocationParseError, requests.RequestException, ValueError):
        raise InvalidRequest("the token URL is malformed") from None


def validate_secret(
    spec: ProviderSpec,
    value: Any,
    *,
    allow_http_loopback: bool = False,
    plain_http_hosts: Collection[str] = (),
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
    check_url(
        token_url(spec, value),
        allow_http_loopback=allow_http_loopback,
        plain_http_hosts=plain_http_hosts,
    )
    return value


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def token_url(spec: ProviderSpec, secret: dict[str, Any]) -> str:
    """The token URL with its {fields} filled in. A field that starts the URL is a base
    (Azure's authority_host) and is put in as it is: `check_url` judges the whole result.
    Any other field is one path segment (tenant, corp) and must be a plain one: a value that
    could leave its segment (``/``, ``\\``, ``@``, ``..``) is refused, not escaped."""
    template = secret.get("token_url") or spec.token_url or ""
    values = {**spec.defaults, **{k: v for k, v in secret.items() if isinstance(v, str)}}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        if match.start() == 0:
            return value.rstrip("/")
        if value in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._~-]+", value):
            raise InvalidRequest(
                f"{name} must be one plain path segment: letters, digits, '.', '_', '-', '~'"
            )
        return quote(value, safe="")

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
    allow_http_loopback: bool = False,
    plain_http_hosts: Collection[str] = (),
) -> TokenRequest:
    """The token request for this connection: a code exchange when `code` is given, a
    refresh-token grant for providers that authorize users, else client credentials.

    The URL is judged again here (`check_url`), so that none reaches the HTTP library
    unchecked. Whether plain http on loopback (or on a listed host) is allowed is the
    stack's setting, applied by `validate_secret`, which every caller runs on the secret
    first; callers that know the setting pass it here too."""
    url = check_url(
        token_url(spec, secret),
        allow_http_loopback=allow_http_loopback,
        plain_http_hosts=plain_http_hosts,
    )
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
    extra_params = secret.get("extra_params") or {}
    params.update(extra_params)
    secrets += [value for name, value in secret.items() if SECRET_FIELD.search(name)]
    secrets += extra_params.values()

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
    forms = secret_forms(secrets, client_id=credentials["client_id"])
    return TokenRequest(url, query, form, body, headers, forms)


def secret_forms(values: Iterable[Any], *, client_id: str = "") -> tuple[str, ...]:
    """Every form in which tokenvend sends these secret values, longest first: as they are,
    form- and URL-encoded (`quote_plus`, as requests encodes forms and query strings, and
    `quote`), JSON-escaped (as requests writes a JSON body, and as many servers echo one),
    and, for the client secret (the first value), the HTTP Basic credentials built from it:
    the base64 of ``id:secret`` and the whole ``Basic …`` value."""
    forms: set[str] = set()
    texts = [value for value in values if isinstance(value, str) and value]
    for value in texts:
        escaped = json.dumps(value)[1:-1]
        forms.update(
            {
                value,
                quote_plus(value),
                quote_plus(value, safe="/"),
                quote(value),
                quote(value, safe=""),
                escaped,
                escaped.replace("/", "\\/"),
                json.dumps(value, ensure_ascii=False)[1:-1],
            }
        )
    if texts:
        pair = f"{quote_plus(client_id)}:{quote_plus(texts[0])}"
        basic = base64.b64encode(pair.encode()).decode("ascii")
        forms.update({basic, basic.rstrip("="), f"Basic {basic}"})
    return tuple(sorted(forms, key=lambda form: (-len(form), form)))


def scrub(text: str, secrets: tuple[str, ...], limit: int = DESCRIPTION_LIMIT) -> str:
    """A provider's words as a caller may see them: without any form of the request's
    secrets (compared without regard to case, so that re-encoded percent escapes are caught
    too), cut to one line of printable characters, at most `limit` long."""
    pattern = re.compile("|".join(map(re.escape, secrets)), re.IGNORECASE) if secrets else None

    def redact(value: str) -> str:
        return pattern.sub(REDACTED, value) if pattern is not None else value

    # Before the line is cut (a secret may span lines) and after (removing characters may
    # join a secret that a control character had split).
    line = redact(text).replace("\r", "\n").split("\n", 1)[0].strip()
    line = redact("".join(ch for ch in line if ch.isprintable()))
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
        failure = _error_in(spec, status, data, secrets, retry_after, request)
        if failure is not None:
            return failure
        if 200 <= status < 300:
            return _token_in(data, secrets, now, default_lifetime, requested_scope)
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


def _error_code(value: Any) -> str | int | None:
    """A provider's error code: a string or a number (or the first of a list), not zero."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, bool) or not isinstance(value, str | int) or value in (0, "0", ""):
        return None
    return value


def _token_in(
    data: dict[str, Any],
    secrets: tuple[str, ...],
    now: float,
    default_lifetime: int,
    requested_scope: str | None,
) -> Token | Failure:
    """The token of a success answer. Its lifetime is `expires_in`, else the `exp` of a JWT,
    else `default_lifetime`: the default is for answers that say nothing of expiry, never for
    one that says the token is already dead, which is a (transient) failure."""
    refresh_token = data.get("refresh_token")
    refresh_token = refresh_token if isinstance(refresh_token, str) and refresh_token else None
    refresh_in = seconds(data.get("refresh_expires_in"))
    refresh_expires_at = int(now + refresh_in) if refresh_in is not None else None
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip():
        return _unusable(
            _malformed("the token endpoint sent no access_token"), refresh_token, refresh_expires_at
        )
    lifetime = seconds(data.get("expires_in"))
    exp = jwt_exp(access_token) if lifetime is None else None
    if lifetime is not None:
        expires_at = now + min(lifetime, MAX_LIFETIME)
    elif exp is not None:
        expires_at = min(float(exp), now + MAX_LIFETIME)
    else:
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
    return Token(
        access_token=access_token,
        token_type=_token_type(token_type),
        expires_at=int(expires_at),
        scope=scope if _fit_scope(scope, secrets) else requested_scope,
        refresh_token=refresh_token,
        refresh_expires_at=refresh_expires_at,
    )


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
