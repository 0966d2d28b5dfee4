"""Sandbox token endpoints for every provider of the catalogue, over real HTTP on loopback.

`Sandbox` serves one token endpoint per entry of the provider catalogue
(``tokenvend_core/catalogue/providers.toml``, or any catalogue file or dict given to it),
speaking that entry's dialect from its data alone: where the client's credentials are
expected (``client_auth``), where the grant's parameters go (``request_format``), the
names the credentials take on the wire (``credential_names``), the extra parameters
(``params``), the grant (client credentials, or an authorization code redeemed once and
then refresh tokens that rotate), where the answer puts the token and its lifetime
(``token_field``, ``expires_field``, ``expires_kind``), ``passthrough`` fields, and the
entry's error shape (``error_name``, ``error_code``, ``error_message``). A client that works
against it has met the dialect its catalogue entry declares.

The sandbox is the server side: it reads the catalogue raw (``tomllib``) and implements
each dialect itself, never with the catalogue's own request/answer code, so that tests of
that code do not check it against itself.

Choices the data leaves open: a generic endpoint accepts only the client authentication
its entry names (the strictest server), so credentials in the wrong place fail;
``private_key_jwt`` clients register a public key (PEM or JWK) and their assertions are
verified with ``joserfc`` (signature, iss = sub = client, aud = the token URL as sent or
``assertion_audience``, exp in the future and within an hour, jti used once);
``tls_client_auth`` cannot be served over plain HTTP: such an endpoint answers
``invalid_client`` saying so. An ``absolute`` lifetime is epoch seconds, or RFC 3339 text
when the field's name reads as a date-time (``Dialect.absolute_as_text``). A token URL's
``{field}`` in the host is dropped (the sandbox has one host); one in the path is a path
segment that scopes registered clients.

The five seed providers of the provider notes, providers.md (aspose, wps365, azure,
dingtalk, oauth2), keep the quirks their data cannot say (see `_QUIRKS`, `_SEED_ROUTES`,
and the azure and dingtalk handlers): their success bodies, their error bodies and
statuses, WPS's rotating refresh tokens and single-use codes, DingTalk's re-issue of a
still-valid token. Two audiences use it:

- tests, as the providers' servers, with fault injection (`Sandbox.inject` and `Fault`):
  a scripted 5xx, a throttle with ``Retry-After``, an HTML error page, a redirect, a body
  that is not JSON, a slow answer, a dropped connection, an error that echoes the request;
- ``tokenvend local``, as the token endpoints a newcomer gets tokens from without any
  account at any vendor.

Out-of-process users (the local stack, end-to-end tests) drive it through a small control
surface under ``/_sandbox/`` (see `_Handler._control`), or run it alone with
``python -m tokenvend.sandbox --port N [--catalogue FILE]``.

Besides the standard library, only ``joserfc`` is used, and only when a ``private_key_jwt``
client is registered or asserts itself (imported then): the module ships with the
``tokenvend`` package and must import fast. Nothing is ever logged: not the access log, not a
token, not a secret.

Where the real protocol is UNCONFIRMED the sandbox picks one plausible variant and says so
in the provider's handler; the numeric error codes (WPS's other than 40000001, and those of
any entry with an ``error_code``) are the sandbox's own invention (clients must branch on
the error name, never on the number).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import tomllib
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import TracebackType
from typing import Any, ClassVar, Literal, cast
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

__all__ = [
    "PROVIDERS",
    "Dialect",
    "Fault",
    "IssuedToken",
    "Recorded",
    "Sandbox",
    "load_catalogue",
    "main",
]

GRANT_LIFETIME = 2_592_000  # 30 days: a refresh grant, counted from the code's redemption
CODE_LIFETIME = 600  # an authorization code is good for 10 minutes
CONSENT_LIFETIME = 600  # a consent page's Allow/Deny works for 10 minutes, once
_MAX_CONSENTS = 1000  # pending consent pages kept (the oldest go first)
#: RFC 7636: a code_verifier is 43 to 128 unreserved characters; an S256 code_challenge is
#: the unpadded base64url of a SHA-256 digest (43 characters).
_PKCE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
#: `?auto=` on an authorization page: a script's answer instead of the page's buttons.
AUTO_DECISIONS = ("allow", "deny")
WPS_GRANT_LIFETIME, WPS_CODE_LIFETIME = GRANT_LIFETIME, CODE_LIFETIME  # their first user
_MAX_BODY = 1 << 20
_MAX_RECORDED = 1000  # per provider: `tokenvend local` runs for hours
_MAX_ASSERTION_LIFETIME = 3600  # a client assertion that claims to live longer is refused
_JSON = "application/json; charset=utf-8"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: What `Fault.echo_request` can repeat of a request, in its default order.
ECHO_PARTS = ("request", "authorization", "body", "decoded")
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# The numbers an entry with an `error_code` answers with (WPS 365's, whose 40000001 is
# documented for invalid_request; the others are invented).
_ERROR_CODES = {
    "invalid_request": 40000001,
    "invalid_client": 40000002,
    "invalid_grant": 40000003,
    "unsupported_grant_type": 40000004,
    "unauthorized_client": 40000005,
    "invalid_scope": 40000006,
}

_AADSTS_MESSAGES = {
    7000215: (
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app '{client}'."
    ),
    7000222: (
        "The provided client secret keys for app '{client}' are expired. Visit the Azure "
        "portal to create new keys for your app, or consider using certificate credentials "
        "for added security."
    ),
    7000218: (
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'."
    ),
    700016: (
        "Application with identifier '{client}' was not found in the directory '{tenant}'. "
        "This can happen if the application has not been installed by the administrator of "
        "the tenant or consented to by any user in the tenant. You may have sent your "
        "authentication request to the wrong tenant."
    ),
    70011: (
        "The provided request must include a 'scope' input parameter. The provided value for "
        "the input parameter 'scope' is not valid. The scope {scope} is not valid."
    ),
    90002: (
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
        "are signing into the correct cloud. Check with your subscription administrator, "
        "this may happen if there are no active subscriptions for the tenant."
    ),
    900144: "The request body must contain the following parameter: '{param}'.",
    70003: "The app requested an unsupported grant type '{grant}'.",
    500011: "The resource principal named {resource} was not found in the tenant '{tenant}'.",
}

_DINGTALK_MESSAGES = {
    "invalid.client": "无效的clientId或者clientSecret",
    "unsupported.grant.type": "不支持的grantType",
    "unauthorized.client": "应用未授权",
    "unknownError": "未知错误",
    "server.error": "服务器错误",
}


# ------------------------------------------------------------------------------ catalogue

CATALOGUE_PACKAGE = "tokenvend_core.catalogue"
CATALOGUE_FILE = "providers.toml"
GRANTS = ("client_credentials", "authorization_code")
CLIENT_AUTHS = (
    "client_secret_basic",
    "client_secret_post",
    "client_secret_query",
    "private_key_jwt",
    "tls_client_auth",
)
#: Legacy `client_auth` values: each names a method and the request format it implies.
LEGACY_CLIENT_AUTHS = {
    "query": ("client_secret_query", "query"),
    "json": ("client_secret_post", "json"),
}
REQUEST_FORMATS = ("form", "json", "query")
EXPIRES_KINDS = ("seconds", "milliseconds", "absolute")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_URL_FIELD = re.compile(r"\{([A-Za-z0-9_]+)\}")
#: Leaf names of an `absolute` lifetime field that read as a date-time: answered in RFC 3339.
_DATE_TIME_WORDS = ("date", "time")

CatalogueSource = str | os.PathLike[str] | Mapping[str, Any] | None


@dataclass(frozen=True)
class Dialect:
    """What one catalogue entry says its token endpoint speaks, with the format's defaults
    (catalogue-format.md) filled in.

    ``path`` is the token URL's path as the sandbox serves it below ``/<name>``: the entry's
    ``token_url`` without its scheme and host (and without a leading ``{base}`` field such
    as Azure's ``{authority_host}``), ``/token`` when the entry has none. Its ``{field}``
    segments are `url_fields`: a client registered with values for them exists only there.
    """

    name: str
    grant: str
    client_auth: str
    request_format: str
    path: str
    query: str = ""
    base_field: str | None = None
    url_fields: tuple[str, ...] = ()
    url_client_auth: Mapping[str, str] = field(default_factory=dict)
    client_id_name: str = "client_id"
    client_secret_name: str = "client_secret"  # noqa: S105  # nosec B105: a field name
    params: tuple[str, ...] = ()
    token_field: str = "access_token"  # noqa: S105  # nosec B105: a field name
    expires_field: str = "expires_in"
    expires_kind: str = "seconds"
    passthrough: tuple[str, ...] = ()
    error_name: str = "error"
    error_code: str | None = None
    error_message: str = "error_description"
    assertion_alg: str = "RS256"
    assertion_audience: str = "token_url"
    deploy: bool = True
    required: tuple[str, ...] = ()
    # A client-credentials grant under the server's own name; "" when it takes none.
    grant_type: str = "client_credentials"
    # authorization_code: the server binds codes to a PKCE S256 challenge when given one.
    pkce: bool = False

    @classmethod
    def from_entry(cls, name: str, entry: Mapping[str, Any]) -> Dialect:
        """The dialect of one catalogue table; ValueError says what is wrong with it."""

        def text(key: str, default: str, allowed: Sequence[str] = ()) -> str:
            value = entry.get(key, default)
            if not isinstance(value, str) or not value or (allowed and value not in allowed):
                hint = f" (one of {', '.join(allowed)})" if allowed else ""
                raise ValueError(f"provider {name!r}: {key} must be a non-empty string{hint}")
            return value

        def texts(key: str) -> tuple[str, ...]:
            value = entry.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"provider {name!r}: {key} must be a list of strings")
            return tuple(value)

        def table(key: str) -> dict[str, str]:
            value = entry.get(key, {})
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ValueError(f"provider {name!r}: {key} must be a table of strings")
            return dict(value)

        if not isinstance(entry, Mapping):
            raise ValueError(f"provider {name!r}: an entry is a table")
        if not _NAME.fullmatch(name):
            raise ValueError(f"provider name {name!r} does not match {_NAME.pattern}")
        auth_names = (*CLIENT_AUTHS, *LEGACY_CLIENT_AUTHS)
        client_auth, request_format = _auth_and_format(
            text("client_auth", "client_secret_post", auth_names),
            text("request_format", "form", REQUEST_FORMATS) if "request_format" in entry else None,
        )
        url_client_auth = table("url_client_auth")
        for ending, auth in url_client_auth.items():
            if auth not in auth_names:
                raise ValueError(f"provider {name!r}: url_client_auth {ending!r}: {auth!r}")
        names = table("credential_names")
        unknown = set(names) - {"client_id", "client_secret"}
        if unknown:
            raise ValueError(f"provider {name!r}: credential_names of {sorted(unknown)}")
        token_url = entry.get("token_url")
        if token_url is not None and (not isinstance(token_url, str) or not token_url):
            raise ValueError(f"provider {name!r}: token_url must be a string")
        path, query, base_field = _route_path(token_url)
        error_message = texts("error_message") or ("error_description",)
        deploy = entry.get("deploy", True)
        if not isinstance(deploy, bool):
            raise ValueError(f"provider {name!r}: deploy must be true or false")
        error_code = entry.get("error_code")
        grant_type = entry.get("grant_type", "client_credentials")
        if not isinstance(grant_type, str):
            raise ValueError(f"provider {name!r}: grant_type must be a string")
        pkce = entry.get("pkce", False)
        if not isinstance(pkce, bool):
            raise ValueError(f"provider {name!r}: pkce must be true or false")
        return cls(
            name=name,
            grant_type=grant_type,
            grant=text("grant", "", GRANTS),
            client_auth=client_auth,
            request_format=request_format,
            path=path,
            query=query,
            base_field=base_field,
            url_fields=tuple(_URL_FIELD.findall(path)),
            url_client_auth=url_client_auth,
            client_id_name=names.get("client_id", "client_id"),
            client_secret_name=names.get("client_secret", "client_secret"),
            params=texts("params"),
            token_field=text("token_field", "access_token"),
            expires_field=text("expires_field", "expires_in"),
            expires_kind=text("expires_kind", "seconds", EXPIRES_KINDS),
            passthrough=texts("passthrough"),
            error_name=text("error_name", "error"),
            error_code=text("error_code", "") if error_code is not None else None,
            error_message=error_message[0],
            assertion_alg=text("assertion_alg", "RS256"),
            assertion_audience=text("assertion_audience", "token_url"),
            deploy=deploy,
            required=texts("required"),
            pkce=pkce,
        )

    def auth_for(self, path: str) -> tuple[str, str]:
        """(client_auth, request_format) at a token URL whose path is ``path``: the entry's,
        unless ``url_client_auth`` names one for a path ending so."""
        for ending, auth in self.url_client_auth.items():
            if path.endswith(ending):
                return _auth_and_format(
                    auth, None if auth in LEGACY_CLIENT_AUTHS else self.request_format
                )
        return self.client_auth, self.request_format

    @property
    def client_auths(self) -> frozenset[str]:
        """Every client authentication some token URL of this entry expects."""
        return frozenset({self.client_auth, *(self.auth_for(e)[0] for e in self.url_client_auth)})

    @property
    def absolute_as_text(self) -> bool:
        """An ``absolute`` lifetime is answered as RFC 3339 text when the field's own name
        reads as a date-time (``expiry_date``, ``expiresDateTime``), else as epoch seconds."""
        leaf = self.expires_field.rsplit(".", 1)[-1].lower()
        return any(word in leaf for word in _DATE_TIME_WORDS)


def _auth_and_format(client_auth: str, request_format: str | None) -> tuple[str, str]:
    if client_auth in LEGACY_CLIENT_AUTHS:
        return LEGACY_CLIENT_AUTHS[client_auth]
    return client_auth, request_format or "form"


def _route_path(token_url: str | None) -> tuple[str, str, str | None]:
    """(path, query, leading base field) of an entry's token URL as the sandbox serves it."""
    if token_url is None:
        return "/token", "", None
    base_field = None
    leading = re.match(r"\{([A-Za-z0-9_]+)\}", token_url)
    if leading:  # a base (scheme and host, maybe more) given by the connection
        base_field, rest = leading.group(1), token_url[leading.end() :]
        path, _, query = rest.partition("?")
    else:
        parts = urlsplit(token_url)
        path, query = parts.path, parts.query
    return "/" + path.strip("/") if path.strip("/") else "/token", query, base_field


def load_catalogue(source: CatalogueSource = None) -> dict[str, Dialect]:
    """The dialects of a catalogue: the packaged ``providers.toml`` by default, or a TOML
    file at a path, or an already parsed catalogue (a dict of entries)."""
    if source is None:
        raw = resources.files(CATALOGUE_PACKAGE).joinpath(CATALOGUE_FILE).read_bytes()
        data: Mapping[str, Any] = tomllib.loads(raw.decode("utf-8"))
    elif isinstance(source, Mapping):
        data = source
    else:
        with open(source, "rb") as handle:
            data = tomllib.load(handle)
    return {name: Dialect.from_entry(name, entry) for name, entry in data.items()}


#: The providers of the packaged catalogue (a `Sandbox` given another has its own list).
PROVIDERS: tuple[str, ...] = tuple(load_catalogue())


class _Headers(dict[str, str]):
    """A dict of request headers whose lookups ignore case (keys are stored lower-case)."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class Fault:
    """One scripted answer to a token request, served instead of the real one.

    ``delay`` sleeps before answering (to provoke client timeouts; cut short by
    `Sandbox.stop`); ``drop`` closes the connection without any answer. A ``body`` with no
    ``Content-Type`` in ``headers`` is sent as JSON when it looks like JSON, otherwise as
    plain text. ``echoes`` and ``echo_parts`` say which fields of the answer repeat which
    parts of the request received (see `echo_request`). The class methods build the shapes
    that the real providers answer with.
    """

    status: int = 500
    body: str | bytes = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    echoes: tuple[str, ...] = ()
    echo_parts: tuple[str, ...] = ()

    _KINDS: ClassVar[frozenset[str]] = frozenset(
        {
            "oauth_error",
            "azure_error",
            "dingtalk_error",
            "wps_error",
            "html",
            "plain",
            "throttle",
            "redirect",
            "garbage",
            "success",
            "echo_request",
        }
    )

    @classmethod
    def oauth_error(cls, error: str, status: int = 400, description: str = "") -> Fault:
        """An RFC 6749 section 5.2 error; a 401 carries ``WWW-Authenticate``."""
        body: dict[str, str] = {"error": error}
        if description:
            body["error_description"] = description
        headers = dict(_NO_STORE)
        if status == HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = 'Basic realm="tokenvend-sandbox"'
        return cls._json(status, body, headers)

    @classmethod
    def azure_error(
        cls,
        aadsts: int,
        error: str,
        status: int = 400,
        description: str = "",
        **placeholders: str,
    ) -> Fault:
        """Microsoft's error shape: ``AADSTS<n>: …\\r\\nTrace ID: …`` with codes and ids.

        ``description`` replaces the stock message for ``aadsts``; ``placeholders``
        (``client``, ``tenant``, ``scope``, …) fill it in.
        """
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        timestamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        message = description or _AADSTS_MESSAGES.get(aadsts, "Sandbox error.")
        with contextlib.suppress(KeyError, IndexError, ValueError):
            message = message.format(**placeholders)
        return cls._json(
            status,
            {
                "error": error,
                "error_description": (
                    f"AADSTS{aadsts}: {message}\r\nTrace ID: {trace_id}\r\n"
                    f"Correlation ID: {correlation_id}\r\nTimestamp: {timestamp}"
                ),
                "error_codes": [aadsts],
                "timestamp": timestamp,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
                "error_uri": f"https://login.chinacloudapi.cn/error?code={aadsts}",
            },
            dict(_NO_STORE),
        )

    @classmethod
    def dingtalk_error(cls, code: str, status: int = 400, message: str = "") -> Fault:
        """DingTalk's ``{"code", "message", "requestid"}`` (``code`` is a string)."""
        body = {
            "code": code,
            "message": message or _DINGTALK_MESSAGES.get(code, code),
            "requestid": str(uuid.uuid4()).upper(),
        }
        return cls._json(status, body, {}, ascii_only=False)

    @classmethod
    def wps_error(cls, msg: str, code: int = 40000001, desc: str = "", status: int = 400) -> Fault:
        """WPS 365's ``{"code": <int>, "msg": "<RFC 6749 error>", "debug": {"desc"}}``."""
        body = {"code": code, "msg": msg, "debug": {"desc": desc or msg}}
        return cls._json(status, body, {}, ascii_only=False)

    @classmethod
    def html(cls, status: int = 502, text: str = "Bad Gateway") -> Fault:
        """An HTML error page, as a proxy or load balancer in front of the endpoint sends."""
        reason = _reason(status)
        page = (
            f"<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>"
            f"<body><h1>{status} {reason}</h1><p>{html.escape(text)}</p></body></html>\n"
        )
        return cls(status=status, body=page, headers={"Content-Type": "text/html; charset=utf-8"})

    @classmethod
    def plain(cls, status: int = 503, text: str = "Service Unavailable") -> Fault:
        """A plain-text body."""
        return cls(status=status, body=text, headers={"Content-Type": "text/plain; charset=utf-8"})

    @classmethod
    def throttle(
        cls, retry_after: int = 60, body: str = "Too Many Requests", status: int = 429
    ) -> Fault:
        """A throttling answer with ``Retry-After`` (seconds) and a plain-text body."""
        return cls(
            status=status,
            body=body,
            headers={"Content-Type": "text/plain; charset=utf-8", "Retry-After": str(retry_after)},
        )

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Fault:
        """A redirect (the legacy Azure China host does this); ``requests`` would turn the
        POST into a GET if it followed it."""
        return cls(status=status, body="", headers={"Location": location})

    @classmethod
    def garbage(cls, status: int = 200) -> Fault:
        """An answer that claims to be JSON and is not (a document cut short)."""
        return cls(
            status=status,
            body='{"token_type": "Bearer", "access_tok',
            headers={"Content-Type": _JSON},
        )

    @classmethod
    def success(cls, body: Mapping[str, Any], status: int = 200) -> Fault:
        """A raw JSON success, for odd shapes (``expires_in`` as a string, or missing)."""
        return cls._json(status, dict(body), dict(_NO_STORE))

    @classmethod
    def echo_request(
        cls,
        status: int = 400,
        fields: Sequence[str] = ("error", "error_description"),
        parts: Sequence[str] = ECHO_PARTS,
        body: Mapping[str, Any] | None = None,
    ) -> Fault:
        """An error answer that repeats the request it answers, as careless servers do.

        Each of ``fields`` (dotted for nested ones, e.g. ``debug.desc``) of the JSON object
        ``body`` (empty by default) holds ``parts`` of the request, in that order:
        ``request`` (the method and the request target with its query string, as they came
        on the wire), ``authorization`` (the header as it came), ``body`` (as it came) and
        ``decoded`` (every query, form and JSON parameter and the HTTP Basic credentials,
        decoded). A 3xx answer repeats them in ``Location`` instead, as path segments, with
        the query string as it came.
        """
        fields = tuple(str(name) for name in fields)
        parts = tuple(str(name) for name in parts)
        if not all(fields) or (not fields and not 300 <= status < 400):
            raise ValueError("echo_request needs field names to echo into")
        unknown = set(parts) - set(ECHO_PARTS)
        if unknown or not parts:
            raise ValueError(f"echo_request parts are some of {', '.join(ECHO_PARTS)}")
        return cls(
            status=status,
            body=json.dumps(dict(body or {})),
            headers=dict(_NO_STORE),
            echoes=fields,
            echo_parts=parts,
        )

    def answer_to(self, rec: Recorded, target: str) -> Fault:
        """This fault as the answer to ``rec``, whose raw request target was ``target``:
        itself, unless it echoes the request."""
        if not self.echoes and not self.echo_parts:
            return self
        decoded = dict(rec.query)
        decoded.update(rec.form)
        if isinstance(rec.json, dict):
            decoded.update({str(k): str(v) for k, v in rec.json.items()})
        basic = rec.basic_auth
        if basic is not None:
            decoded["basic_id"], decoded["basic_secret"] = basic
        texts = {
            "request": f"{rec.method} {target}",
            "authorization": f"Authorization: {rec.headers.get('authorization', '')}",
            "body": f"Body: {rec.body.decode('utf-8', 'replace')}",
            "decoded": " ".join(f"{name}={value}" for name, value in decoded.items()),
        }
        if 300 <= self.status < 400:
            query = urlsplit(target).query if "request" in self.echo_parts else ""
            path = "/".join(quote(texts[part], safe="") for part in self.echo_parts)
            location = f"https://echo.sandbox.invalid/moved/{path}" + (f"?{query}" if query else "")
            answer = Fault(self.status, b"", {"Location": location})
        else:
            text = " ".join(texts[part] for part in self.echo_parts)
            body = json.loads(self.payload() or b"{}")
            for dotted in self.echoes:
                where = body
                *parents, last = dotted.split(".")
                for part in parents:
                    where = where.setdefault(part, {})
                where[last] = text
            answer = Fault._json(self.status, body, dict(self.headers), ascii_only=False)
        answer.delay, answer.drop = self.delay, self.drop
        return answer

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Fault:
        """Build a fault from the control surface's JSON.

        Either the fields (``status``, ``body``, ``headers``, ``delay``, ``drop``), or
        ``{"kind": "<constructor>", <its arguments>}`` plus, optionally, ``delay``/``drop``.
        """
        if not isinstance(obj, Mapping):
            raise ValueError("a fault must be a JSON object")
        args = dict(obj)
        kind = args.pop("kind", None)
        delay = float(args.pop("delay", 0.0))
        drop = bool(args.pop("drop", False))
        if kind is None:
            fault = cls(
                status=int(args.pop("status", 500)),
                body=str(args.pop("body", "")),
                headers={str(k): str(v) for k, v in dict(args.pop("headers", {})).items()},
            )
            if args:
                raise ValueError(f"unknown fault fields: {sorted(args)}")
        elif kind in cls._KINDS:
            fault = getattr(cls, kind)(**args)
        else:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(cls._KINDS)}")
        fault.delay, fault.drop = delay, drop
        return fault

    @classmethod
    def _json(
        cls, status: int, body: Any, headers: dict[str, str], *, ascii_only: bool = True
    ) -> Fault:
        headers = {"Content-Type": _JSON, **headers}
        return cls(status=status, body=json.dumps(body, ensure_ascii=ascii_only), headers=headers)

    def payload(self) -> bytes:
        """The body as bytes."""
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body


@dataclass
class Recorded:
    """One request received at a provider's token endpoint (for assertions in tests)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lookups ignore case
    form: dict[str, str]  # parsed when the body is application/x-www-form-urlencoded
    json: Any  # parsed when the body is JSON, else None
    body: bytes

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """The HTTP Basic client credentials, form-urldecoded (RFC 6749 section 2.3.1)."""
        return _basic_auth(self.headers.get("authorization", ""))


@dataclass
class IssuedToken:
    """What the sandbox knows of an access token it issued."""

    provider: str
    client_id: str
    expires_at: float
    realm: str = ""  # azure tenant, dingtalk corp


@dataclass
class _Client:
    provider: str
    client_id: str
    client_secret: str
    realm: str  # the token URL's field values ("/"-joined), "*" = any; "" when it has none
    attrs: dict[str, Any]
    public_key: Any = None  # private_key_jwt: a joserfc key


@dataclass
class _Code:
    provider: str
    client_id: str
    redirect_uri: str
    expires_at: float
    used: bool = False
    code_challenge: str | None = None  # PKCE S256: the token request must match it


@dataclass
class _Consent:
    """An authorization request shown on a consent page, waiting for Allow or Deny."""

    provider: str
    client_id: str
    redirect_uri: str
    state: str | None
    code_challenge: str | None
    expires_at: float


@dataclass
class _Grant:
    provider: str
    client_id: str
    expires_at: float
    refresh_token: str
    revoked: bool = False


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    provider: str
    fields: tuple[str, ...]  # the names of the pattern's groups g0, g1, ...
    variant: str = ""  # a seed's own label for one of its URLs ("v1": Azure's v1 endpoint)


@dataclass(frozen=True)
class _Quirks:
    """What a seed provider does that its catalogue entry cannot say (providers.md)."""

    invalid_client_status: int = 401
    describe_errors: bool = True  # the error body carries `error_message`
    missing_credentials: str = "invalid_client"  # the error for a request without them
    grant_by_default: bool = False  # a query-format URL without grant_type means the entry's
    also_basic: bool = False  # client_secret_post URLs also take HTTP Basic
    also_post: bool = False  # client_secret_basic URLs also take the credentials in the body
    extra_grants: frozenset[str] = frozenset()
    token_type: str = "Bearer"  # noqa: S105  # nosec B105: a token type
    jwt_issuer: str | None = None  # access tokens are JWT-shaped, with this `iss`


_QUIRKS: dict[str, _Quirks] = {
    # IdentityServer: {"error": ...} only, 400 even for invalid_client; the v4.0 query URL
    # needs no grant_type; the SDKs' form URLs take HTTP Basic too; RS256 JWTs.
    "aspose": _Quirks(
        invalid_client_status=400,
        describe_errors=False,
        grant_by_default=True,
        also_basic=True,
        jwt_issuer="https://api.aspose.cloud",
    ),
    # Every error is 400; missing credentials are invalid_request; app tokens by client
    # credentials beside the user grant; "bearer" in lower case.
    "wps365": _Quirks(
        invalid_client_status=400,
        missing_credentials="invalid_request",
        extra_grants=frozenset({"client_credentials"}),
        token_type="bearer",  # noqa: S106  # nosec B106: a token type, not a credential
    ),
    # RFC 6749 section 2.3.1: the server must take HTTP Basic and may take the body.
    "oauth2": _Quirks(also_post=True),
}

#: Token URLs a seed serves besides its entry's own: (path from the entry's path, variant).
_SEED_ROUTES: dict[str, Sequence[tuple[Callable[[str], str], str]]] = {
    # The official SDKs' URLs (Python, Go, .NET: /v3.0/cells/connect/token; Node:
    # /connect/token): credentials in a form body.
    "aspose": ((lambda _: "/connect/token", ""), (lambda _: "/v3.0/cells/connect/token", "")),
    # The v1 endpoint (resource=, numbers as strings) beside v2.0.
    "azure": ((lambda path: path.replace("/v2.0/token", "/token"), "v1"),),
}


def _routes(dialect: Dialect) -> list[_Route]:
    """The token URLs of an entry: ``/<name><path>``, each ``{field}`` one path segment."""
    paths = [(dialect.path, "")]
    paths += [
        (build(dialect.path), variant) for build, variant in _SEED_ROUTES.get(dialect.name, ())
    ]
    routes = []
    for path, variant in paths:
        pieces, at = [re.escape(f"/{dialect.name}")], 0
        fields: list[str] = []
        for match in _URL_FIELD.finditer(path):
            pieces += [re.escape(path[at : match.start()]), f"(?P<g{len(fields)}>[^/]+)"]
            fields.append(match.group(1))
            at = match.end()
        pieces.append(re.escape(path[at:]))
        routes.append(_Route(re.compile("".join(pieces)), dialect.name, tuple(fields), variant))
    return routes


class Sandbox:
    """Token endpoints of every catalogue provider on one loopback port.

    ``catalogue`` is the packaged ``providers.toml`` by default, or a TOML file's path, or
    a parsed catalogue (a dict of entries, as a test builds one).

    >>> with Sandbox() as sbx:                                      # doctest: +SKIP
    ...     sbx.register("dingtalk", "app", "s3cret", corp_id="corp-a")
    ...     requests.post(sbx.token_url("dingtalk", corp_id="corp-a"), json={...})
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token_lifetime: int = 3600,
        clock: Callable[[], float] = time.time,
        catalogue: CatalogueSource = None,
    ) -> None:
        self.host = host
        self.port = port
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.dialects: dict[str, Dialect] = load_catalogue(catalogue)
        self.providers: tuple[str, ...] = tuple(self.dialects)
        self._routes = [route for d in self.dialects.values() for route in _routes(d)]
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[tuple[str, str, str], _Client] = {}
        self._faults: dict[str, deque[Fault]] = {p: deque() for p in self.providers}
        self._calls: dict[str, int] = dict.fromkeys(self.providers, 0)
        self._recorded: dict[str, deque[Recorded]] = {
            p: deque(maxlen=_MAX_RECORDED) for p in self.providers
        }
        self._tokens: dict[str, IssuedToken] = {}
        self._dingtalk_current: dict[tuple[str, str], str] = {}
        self._codes: dict[str, _Code] = {}
        self._consents: dict[str, _Consent] = {}  # by the consent page's ticket
        self._grants: dict[str, _Grant] = {}  # by current refresh token
        self._grant_order: list[_Grant] = []
        self._assertions: dict[tuple[str, str, str], float] = {}  # spent jti -> its exp

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Sandbox:
        """Bind (port 0 = a free port) and serve in a background daemon thread."""
        if self._server is not None:
            raise RuntimeError("sandbox already started")
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.sandbox = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"tokenvend-sandbox-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: cut short pending delays, close open connections. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(0.01)
        if stopper.is_alive():  # wake the accept loop instead of waiting for its poll
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self._port()), timeout=0.5).close()
        stopper.join()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start() if self._server is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- addresses

    def _port(self) -> int:
        if self._server is None:
            raise RuntimeError("sandbox not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running sandbox."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self._port()}"

    def dialect(self, provider: str) -> Dialect:
        """The catalogue entry of ``provider``, as the sandbox reads it."""
        try:
            return self.dialects[provider]
        except KeyError:
            raise ValueError(
                f"unknown provider {provider!r}; one of {', '.join(self.providers)}"
            ) from None

    def base_url(self, provider: str) -> str:
        """What stands for ``provider``'s host: ``base_url(p) + <the entry's path>`` is its
        token URL; for an entry whose ``token_url`` starts with a ``{field}`` (Azure's
        ``{authority_host}``), the value of that field."""
        self.dialect(provider)
        return f"{self.url}/{provider}"

    def token_url(self, provider: str, **kw: str) -> str:
        """The token URL of ``provider``.

        Every ``{field}`` of the entry's path keeps its literal placeholder unless given
        (``tenant_id=`` for azure, ``corp_id=`` for dingtalk). ``aspose`` also takes
        ``style="query"`` (default, the v4.0 URL with credentials in the query) or
        ``style="form"`` (``/connect/token``, form body).
        """
        dialect = self.dialect(provider)
        allowed = set(dialect.url_fields) | ({"style"} if provider == "aspose" else set())
        unknown = set(kw) - allowed
        if unknown:
            raise TypeError(f"token_url({provider!r}) takes no {sorted(unknown)}")
        path, query = dialect.path, dialect.query
        if provider == "aspose":
            style = kw.pop("style", "query")
            if style not in ("query", "form"):
                raise ValueError("aspose style is 'query' or 'form'")
            if style == "form":
                path = "/connect/token"

        def fill(match: re.Match[str]) -> str:
            value = kw.get(match.group(1))
            return match.group(0) if value is None else quote(value, safe="")

        path, query = _URL_FIELD.sub(fill, path), _URL_FIELD.sub(fill, query)
        return f"{self.base_url(provider)}{path}" + (f"?{query}" if query else "")

    def endpoint_fields(self, provider: str) -> dict[str, str]:
        """The fields a connection's secret needs to reach ``provider`` here: the entry's
        leading base field (``authority_host``) when its token URL has one, else
        ``token_url`` (its path ``{field}`` placeholders are filled from the secret)."""
        dialect = self.dialect(provider)
        if dialect.base_field:
            return {dialect.base_field: self.base_url(provider)}
        return {"token_url": self.token_url(provider)}

    def demo_connection(
        self, provider: str, client_id: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(registration attributes, connection secret) of a client that reaches
        ``provider`` here, for any entry: the endpoint fields, a random ``client_secret``
        (a fresh key pair for ``private_key_jwt``: the secret holds the private key, the
        attributes the public one), ``"demo"`` for every other required field, and the
        sandbox's callback as ``redirect_uri`` for an authorization code grant. Register it
        with ``register(provider, client_id, secret.get("client_secret", ""), **attrs)``.
        ValueError for ``tls_client_auth``, which the sandbox cannot serve."""
        dialect = self.dialect(provider)
        if dialect.client_auth == "tls_client_auth":
            raise ValueError(f"{provider}: the sandbox cannot check TLS client certificates")
        attrs: dict[str, Any] = {}
        secret: dict[str, Any] = {"client_id": client_id, **self.endpoint_fields(provider)}
        entry_fields = {*dialect.url_fields, *dialect.required, *dialect.params} - {
            "client_id",
            "client_secret",
            "token_url",
            "redirect_uri",
            *secret,
        }
        for name in sorted(entry_fields):
            secret[name] = "demo"
        attrs.update({name: "demo" for name in dialect.url_fields})
        if dialect.client_auth == "private_key_jwt":
            private_key = _generate_key(dialect.assertion_alg)
            secret["private_key"] = private_key.as_pem(private=True).decode()
            attrs["public_key"] = private_key.as_pem(private=False).decode()
        else:
            secret["client_secret"] = secrets.token_urlsafe(24)
        if dialect.grant == "authorization_code":
            secret["redirect_uri"] = attrs["redirect_uri"] = self.callback_url(provider)
        return attrs, secret

    def authority_host(self) -> str:
        """The Azure authority host: ``authority_host() + "/{tenant}/oauth2/v2.0/token"``."""
        return self.base_url("azure")

    def authorize_url(self, provider: str = "wps365") -> str:
        """The authorization page of an ``authorization_code`` provider: a browser (a
        request that accepts ``text/html``) gets a consent page naming the app and the
        scope, with Allow and Deny; ``?auto=allow`` or ``?auto=deny`` answers for a script,
        and a request that does not ask for HTML (curl, ``requests``) is allowed at once,
        as scripts written before the page expect."""
        self._check_code_grant(provider)
        return f"{self.base_url(provider)}/oauth2/auth"

    def callback_url(self, provider: str = "wps365") -> str:
        """A redirect URI served by the sandbox that shows the code it receives, so that a
        person can authorize a local connection with a browser alone."""
        self._check_code_grant(provider)
        return f"{self.base_url(provider)}/callback"

    def _check_code_grant(self, provider: str) -> Dialect:
        dialect = self.dialect(provider)
        if dialect.grant != "authorization_code":
            raise ValueError(f"{provider} has no authorization code grant")
        return dialect

    # ---------------------------------------------------------------- set-up

    def register_attributes(self, provider: str) -> frozenset[str]:
        """What `register` accepts for ``provider`` besides the client's id and secret."""
        dialect = self.dialect(provider)
        names = {"lifetime", *dialect.url_fields, *dialect.params}
        if dialect.grant == "authorization_code":
            names |= {"redirect_uri", "name"}
        if "private_key_jwt" in dialect.client_auths:
            names.add("public_key")
        if dialect.passthrough:
            names.add("passthrough")
        return frozenset(names)

    def register(  # nosec B107: "" is "no secret" (a key or certificate client)
        self, provider: str, client_id: str, client_secret: str = "", **attrs: Any
    ) -> None:
        """Register (or replace) a client.

        Attributes (`register_attributes`): ``lifetime`` (seconds, every provider); each
        ``{field}`` of the entry's token URL (``tenant_id`` for azure, ``corp_id`` for
        dingtalk): the client exists only there (without them, everywhere); each of the
        entry's ``params``: the value the client may ask for (``scope``: the
        space-separated scopes it may ask for, a subset of them; azure: one
        ``…/.default``); ``redirect_uri`` (authorization code grant: the only one its
        authorization accepts); ``public_key`` (``private_key_jwt``: PEM text or a JWK,
        as a dict or JSON text, that verifies the client's assertions); ``passthrough``
        (a dict of the entry's passthrough fields to the values the answer gives them);
        ``name`` (authorization code grant: the app's name on the consent page, else its
        client_id).
        A client with an empty ``client_secret`` never authenticates with a secret.
        """
        dialect = self.dialect(provider)
        allowed = self.register_attributes(provider)
        unknown = set(attrs) - allowed
        if unknown:
            raise TypeError(
                f"register({provider!r}) takes no {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        if not client_id or not isinstance(client_id, str):
            raise ValueError("client_id must be a non-empty string")
        if not isinstance(client_secret, str):
            raise ValueError("client_secret must be a string")
        if "lifetime" in attrs:
            attrs["lifetime"] = int(attrs["lifetime"])
        passthrough = attrs.get("passthrough", {})
        if not isinstance(passthrough, Mapping) or set(passthrough) - set(dialect.passthrough):
            raise ValueError(f"passthrough is a dict of some of {list(dialect.passthrough)}")
        public_key = None
        if "public_key" in attrs:
            public_key = _import_public_key(attrs["public_key"], dialect.assertion_alg)
        given = [str(attrs[f]) for f in dialect.url_fields if attrs.get(f)]
        if given and len(given) != len(dialect.url_fields):
            raise ValueError(f"give all of {list(dialect.url_fields)} or none")
        realm = "/".join(given) if given else ("*" if dialect.url_fields else "")
        with self._lock:
            self._clients[(provider, realm, client_id)] = _Client(
                provider, client_id, client_secret, realm, dict(attrs), public_key
            )

    def authorize(
        self,
        client_id: str,
        redirect_uri: str,
        state: str = "",
        *,
        provider: str = "wps365",
        code_challenge: str | None = None,
    ) -> str:
        """Issue the one-time authorization code a user's consent would give.

        ``code_challenge`` (PKCE, S256; only for an entry with ``pkce = true``): the token
        request that redeems the code must carry the matching ``code_verifier``."""
        dialect = self._check_code_grant(provider)
        if code_challenge is not None:
            if not dialect.pkce:
                raise ValueError(f"{provider} does not support PKCE (its entry has no pkce)")
            if not _PKCE_CHALLENGE.fullmatch(code_challenge):
                raise ValueError("code_challenge is not an S256 challenge (43 base64url chars)")
        with self._lock:
            client = self._code_client(provider, client_id)
            if client is None:
                raise ValueError(f"unknown {provider} client {client_id!r}")
            registered = client.attrs.get("redirect_uri")
            if registered and registered != redirect_uri:
                raise ValueError("redirect_uri does not match the client's registered one")
            code = f"sbx-{provider}-code-{secrets.token_urlsafe(18)}"
            self._codes[code] = _Code(
                provider,
                client_id,
                redirect_uri,
                self.clock() + CODE_LIFETIME,
                code_challenge=code_challenge,
            )
            return code

    def _code_client(self, provider: str, client_id: str) -> _Client | None:
        return self._clients.get((provider, "*", client_id)) or self._clients.get(
            (provider, "", client_id)
        )

    def inject(self, provider: str, *faults: Fault) -> None:
        """Queue ``faults``: the next ``len(faults)`` token requests to ``provider`` get
        them, in order, instead of the real answer."""
        self.dialect(provider)
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"not a Fault: {fault!r}")
        with self._lock:
            self._faults[provider].extend(faults)

    def reset(self) -> None:
        """Forget queued faults, counters and recorded requests (not registrations, nor
        issued tokens and grants)."""
        with self._lock:
            for provider in self.providers:
                self._faults[provider].clear()
                self._calls[provider] = 0
                self._recorded[provider].clear()

    # ---------------------------------------------------------------- observation

    def calls(self, provider: str | None = None) -> int:
        """Token requests received (faulted and real), for one provider or all."""
        with self._lock:
            if provider is None:
                return sum(self._calls.values())
            self.dialect(provider)
            return self._calls[provider]

    def requests(self, provider: str) -> list[Recorded]:
        """The token requests ``provider`` received, oldest first (the last 1000)."""
        self.dialect(provider)
        with self._lock:
            return list(self._recorded[provider])

    def pending_faults(self, provider: str) -> int:
        """How many queued faults are still waiting for a request."""
        self.dialect(provider)
        with self._lock:
            return len(self._faults[provider])

    def token_info(self, access_token: str) -> IssuedToken | None:
        """The issued token's owner and expiry, or None if the sandbox never issued it."""
        with self._lock:
            return self._tokens.get(access_token)

    def is_valid(self, access_token: str) -> bool:
        """True if the sandbox issued ``access_token`` and it has not expired."""
        info = self.token_info(access_token)
        return info is not None and info.expires_at > self.clock()

    def refresh_token_of(self, client_id: str, *, provider: str = "wps365") -> str | None:
        """The currently valid refresh token of the client's latest grant."""
        now = self.clock()
        with self._lock:
            for grant in reversed(self._grant_order):
                if (
                    grant.provider == provider
                    and grant.client_id == client_id
                    and not grant.revoked
                    and grant.expires_at > now
                ):
                    return grant.refresh_token
        return None

    def revoke_refresh_tokens(self, client_id: str, *, provider: str = "wps365") -> None:
        """Invalidate every refresh grant of the client (``invalid_grant`` next)."""
        with self._lock:
            for grant in self._grant_order:
                if grant.provider == provider and grant.client_id == client_id:
                    grant.revoked = True

    # ---------------------------------------------------------------- serving (internal)

    def _take(self, provider: str, rec: Recorded) -> Fault | None:
        with self._lock:
            self._calls[provider] += 1
            self._recorded[provider].append(rec)
            queue = self._faults[provider]
            return queue.popleft() if queue else None

    def _answer(self, route: _Route, realm: str, rec: Recorded) -> Fault:
        if rec.method != "POST":
            return Fault(
                status=405,
                body="Method Not Allowed",
                headers={"Allow": "POST", "Content-Type": "text/plain; charset=utf-8"},
            )
        with self._lock:
            if route.provider == "azure":
                return self._azure(route.variant, realm, rec)
            if route.provider == "dingtalk":
                return self._dingtalk(realm, rec)
            return self._serve(self.dialects[route.provider], realm, rec)

    def _lifetime(self, client: _Client) -> int:
        return int(client.attrs.get("lifetime", self.token_lifetime))

    def _issue(self, client: _Client, realm: str = "", token: str | None = None) -> str:
        now = self.clock()
        if len(self._tokens) > 10_000:
            self._tokens = {t: i for t, i in self._tokens.items() if i.expires_at > now}
        token = token or f"sbx-{client.provider}-{secrets.token_urlsafe(24)}"
        self._tokens[token] = IssuedToken(
            client.provider, client.client_id, now + self._lifetime(client), realm
        )
        return token

    def _jwt(self, client: _Client, claims: dict[str, Any]) -> str:
        now = int(self.clock())
        payload = {
            "nbf": now,
            "iat": now,
            "exp": now + self._lifetime(client),
            "jti": f"sbx-{client.provider}-{secrets.token_hex(12)}",
            **claims,
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": "tokenvend-sandbox"}
        token = ".".join(
            [
                _b64url(json.dumps(header, separators=(",", ":")).encode()),
                _b64url(json.dumps(payload, separators=(",", ":")).encode()),
                _b64url(secrets.token_bytes(256)),  # shaped like RS256, signs nothing
            ]
        )
        return token

    def _secret_ok(self, client: _Client | None, secret: str | None) -> bool:
        return (
            client is not None
            and secret is not None
            and client.client_secret != ""  # nosec B105: a client registered without one
            and hmac.compare_digest(client.client_secret.encode(), secret.encode())
        )

    def _find(self, provider: str, realm: str, client_id: str) -> _Client | None:
        return self._clients.get((provider, realm, client_id)) or self._clients.get(
            (provider, "*", client_id)
        )

    # ------------------------------------------------ any entry: its dialect, from its data

    def _serve(self, dialect: Dialect, realm: str, rec: Recorded) -> Fault:
        """One token request to ``dialect``'s endpoint, in the order a server checks it:
        the request's format, the grant type, the client, the grant, the parameters."""
        quirks = _QUIRKS.get(dialect.name, _Quirks())
        auth, request_format = dialect.auth_for(rec.path)

        def refuse(error: str, description: str, status: int | None = None) -> Fault:
            return self._error(dialect, quirks, error, description, status)

        params = _parameters(request_format, rec)
        if params is None:
            where = {"form": "an application/x-www-form-urlencoded body", "json": "a JSON object"}
            return refuse("invalid_request", f"the parameters must come in {where[request_format]}")
        grant = params.get("grant_type")
        if not grant and quirks.grant_by_default and request_format == "query":
            grant = "client_credentials"
        if dialect.grant_type != "client_credentials" and dialect.grant == "client_credentials":
            # the server's own name for its client-credentials grant, or none at all
            if (grant or "") != dialect.grant_type:
                expected = dialect.grant_type or "no grant_type"
                return refuse("unsupported_grant_type", f"this server takes {expected}")
            grant = "client_credentials"
        if not grant:
            return refuse("invalid_request", "'grant_type' is required")
        grants = {"client_credentials"} if dialect.grant == "client_credentials" else set()
        if dialect.grant == "authorization_code":
            grants |= {"authorization_code", "refresh_token", *quirks.extra_grants}
        if grant not in grants:
            return refuse("unsupported_grant_type", f"grant_type '{grant}' is not supported")
        client = self._authenticate(dialect, quirks, auth, realm, params, rec)
        if isinstance(client, Fault):
            return client
        grant_obj: _Grant | None = None
        if grant in ("authorization_code", "refresh_token"):
            redeemed = self._redeem(dialect, quirks, client, grant, params)
            if isinstance(redeemed, Fault):
                return redeemed
            grant_obj = redeemed
        for name in dialect.params:
            allowed, requested = client.attrs.get(name), params.get(name)
            if allowed is None or requested is None:
                continue
            if name == "scope" and not set(requested.split()) <= set(str(allowed).split()):
                return refuse("invalid_scope", "scope not allowed for this client")
            if name != "scope" and requested != str(allowed):
                return refuse("invalid_request", f"'{name}' not allowed for this client")
        return self._success(dialect, quirks, client, realm, params, grant_obj)

    def _authenticate(
        self,
        dialect: Dialect,
        quirks: _Quirks,
        auth: str,
        realm: str,
        params: Mapping[str, str],
        rec: Recorded,
    ) -> _Client | Fault:
        def refuse(error: str, description: str, status: int | None = None) -> Fault:
            return self._error(dialect, quirks, error, description, status)

        if auth == "tls_client_auth":
            return refuse(
                "invalid_client",
                "tls_client_auth (RFC 8705) needs a TLS client certificate; the sandbox serves "
                "plain HTTP and cannot check one",
                400,
            )
        header = rec.headers.get("authorization", "")
        basic = _basic_auth(header)
        where = rec.query if auth == "client_secret_query" else params
        id_name, secret_name = dialect.client_id_name, dialect.client_secret_name
        if auth == "private_key_jwt":
            if header or secret_name in where:
                return refuse("invalid_request", "more than one client authentication method")
            return self._assertion(dialect, quirks, realm, params, rec)
        takes_basic = auth == "client_secret_basic" or (
            quirks.also_basic and auth == "client_secret_post"
        )
        takes_body = auth != "client_secret_basic" or quirks.also_post
        place = {
            "client_secret_basic": "HTTP Basic",  # nosec B105: where, not what
            "client_secret_post": f"the {dialect.auth_for(rec.path)[1]} parameters",
            "client_secret_query": "the query string",  # nosec B105: where, not what
        }[auth]
        if header and basic is None and takes_basic:
            return refuse("invalid_client", "malformed HTTP Basic credentials", 401)
        if basic and secret_name in where:
            return refuse("invalid_request", "more than one client authentication method")
        client_id: str
        secret: str | None
        if basic and takes_basic:
            client_id, secret = basic
        elif basic or not takes_body:
            return refuse("invalid_client", f"client authentication failed: expected in {place}")
        else:
            client_id, secret = where.get(id_name) or "", where.get(secret_name)
            if not client_id or secret is None:
                return refuse(
                    quirks.missing_credentials,
                    f"'{id_name}' and '{secret_name}' are required in {place}",
                )
        client = self._find(dialect.name, realm, client_id)
        if not self._secret_ok(client, secret):
            return refuse("invalid_client", "client authentication failed")
        assert client is not None
        return client

    def _assertion(
        self,
        dialect: Dialect,
        quirks: _Quirks,
        realm: str,
        params: Mapping[str, str],
        rec: Recorded,
    ) -> _Client | Fault:
        """RFC 7523 section 3 (client authentication): the assertion is signed with the
        key the client registered, iss and sub are its id, aud this token endpoint, exp
        in the future (within `_MAX_ASSERTION_LIFETIME`), and its jti was never seen."""

        def refuse(description: str, error: str = "invalid_client") -> Fault:
            return self._error(dialect, quirks, error, description, None)

        if params.get("client_assertion_type") != JWT_BEARER:
            return refuse(f"client_assertion_type must be {JWT_BEARER}")
        assertion = params.get("client_assertion", "")
        claimed = _unverified_claims(assertion)
        if claimed is None:
            return refuse("client_assertion is not a JWT")
        client_id = claimed.get("iss")
        if not isinstance(client_id, str) or not client_id:
            return refuse("client_assertion has no iss")
        said = params.get(dialect.client_id_name)
        if said is not None and said != client_id:
            return refuse(f"'{dialect.client_id_name}' is not the assertion's iss")
        client = self._find(dialect.name, realm, client_id)
        if client is None or client.public_key is None:
            return refuse("unknown client, or one without a public key")
        from joserfc import jwt
        from joserfc.errors import JoseError

        try:
            claims = jwt.decode(assertion, client.public_key, [dialect.assertion_alg]).claims
        except (JoseError, ValueError):
            return refuse("client_assertion does not verify")
        now = self.clock()
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if dialect.assertion_audience == "token_url":
            expected = {f"http://{rec.headers.get('host', '')}{rec.path}", f"{self.url}{rec.path}"}
        else:
            expected = {dialect.assertion_audience}
        exp, jti = claims.get("exp"), claims.get("jti")
        if claims.get("sub") != client_id:
            return refuse("client_assertion's sub is not its iss")
        if not isinstance(audiences, list) or not expected & set(audiences):
            return refuse("client_assertion's aud is not this token endpoint")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool) or exp <= now:
            return refuse("client_assertion has expired (or has no exp)")
        if exp > now + _MAX_ASSERTION_LIFETIME:
            return refuse("client_assertion lives too long")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf > now + 60:
            return refuse("client_assertion is not valid yet")
        if not isinstance(jti, str) or not jti:
            return refuse("client_assertion has no jti")
        self._assertions = {k: v for k, v in self._assertions.items() if v > now}
        key = (dialect.name, client_id, jti)
        if key in self._assertions:
            return refuse("client_assertion's jti was already used")
        self._assertions[key] = float(exp)
        return client

    def _redeem(
        self,
        dialect: Dialect,
        quirks: _Quirks,
        client: _Client,
        grant: str,
        params: Mapping[str, str],
    ) -> _Grant | Fault:
        """An authorization code (single use, bound to its client and redirect URI), or a
        refresh token, which rotates: the old one is spent; the grant's lifetime counts
        from the code's redemption and refreshing does not extend it."""

        def refuse(error: str, description: str) -> Fault:
            return self._error(dialect, quirks, error, description, None)

        now = self.clock()
        if grant == "authorization_code":
            code_value, redirect_uri = params.get("code", ""), params.get("redirect_uri")
            if not code_value:
                return refuse("invalid_request", "'code' is required")
            if redirect_uri is None:
                return refuse("invalid_request", "'redirect_uri' is required")
            code = self._codes.get(code_value)
            if code is None or (code.provider, code.client_id) != (dialect.name, client.client_id):
                return refuse("invalid_grant", "invalid authorization code")
            if code.used:
                return refuse("invalid_grant", "authorization code has been used")
            if code.expires_at <= now:
                return refuse("invalid_grant", "authorization code has expired")
            if code.redirect_uri != redirect_uri:
                return refuse("invalid_request", "'redirect_uri' parameter does not match")
            verifier = params.get("code_verifier")
            if code.code_challenge is not None:  # RFC 7636 section 4.6
                if not verifier:
                    return refuse("invalid_grant", "'code_verifier' is required")
                if not _PKCE_VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
                    _b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
                    code.code_challenge,
                ):
                    return refuse("invalid_grant", "'code_verifier' does not match")
            elif dialect.pkce and verifier:
                return refuse("invalid_grant", "the code was issued without a code_challenge")
            code.used = True
            found = _Grant(dialect.name, client.client_id, now + GRANT_LIFETIME, "")
            self._grant_order.append(found)
        else:
            old = params.get("refresh_token", "")
            if not old:
                return refuse("invalid_request", "'refresh_token' is required")
            known = self._grants.get(old)
            if known is None or (known.provider, known.client_id) != (
                dialect.name,
                client.client_id,
            ):
                return refuse("invalid_grant", "invalid refresh_token")
            if known.revoked:
                return refuse("invalid_grant", "refresh_token has been revoked")
            if known.expires_at <= now:
                return refuse("invalid_grant", "refresh_token has expired")
            del self._grants[old]  # rotation: the old refresh token is spent
            found = known
        found.refresh_token = f"sbx-{dialect.name}-rt-{secrets.token_urlsafe(24)}"
        self._grants[found.refresh_token] = found
        return found

    def _success(
        self,
        dialect: Dialect,
        quirks: _Quirks,
        client: _Client,
        realm: str,
        params: Mapping[str, str],
        grant: _Grant | None,
    ) -> Fault:
        """The token at ``token_field`` (with ``token_type`` beside it when the field is an
        RFC 6749 ``access_token``), its lifetime at ``expires_field`` as ``expires_kind``
        says, the refresh grant, the scope asked for, and the ``passthrough`` fields."""
        now, lifetime = int(self.clock()), self._lifetime(client)
        token = None
        if quirks.jwt_issuer:
            token = self._jwt(client, {"iss": quirks.jwt_issuer, "client_id": client.client_id})
        token = self._issue(client, realm, token)
        body: dict[str, Any] = {}
        _put(body, dialect.token_field, token)
        parent, _, leaf = dialect.token_field.rpartition(".")
        if leaf == "access_token":
            _put(body, f"{parent}.token_type" if parent else "token_type", quirks.token_type)
        if dialect.expires_kind == "milliseconds":
            expires: int | str = lifetime * 1000
        elif dialect.expires_kind == "absolute" and dialect.absolute_as_text:
            expires = datetime.fromtimestamp(now + lifetime, UTC).isoformat().replace("+00:00", "Z")
        elif dialect.expires_kind == "absolute":
            expires = now + lifetime
        else:
            expires = lifetime
        _put(body, dialect.expires_field, expires)
        if grant is not None:
            body["refresh_token"] = grant.refresh_token
            body["refresh_expires_in"] = max(0, int(grant.expires_at - now))
        if "scope" in dialect.params and params.get("scope") is not None:
            body["scope"] = params["scope"]
        chosen = client.attrs.get("passthrough", {})
        for path in dialect.passthrough:
            _put(body, path, chosen.get(path, _plausible(dialect.name, path, now)))
        return _ok(body)

    def _error(
        self,
        dialect: Dialect,
        quirks: _Quirks,
        error: str,
        description: str,
        status: int | None,
    ) -> Fault:
        """An error in the entry's shape: the RFC 6749 error string at ``error_name``, a
        number at ``error_code`` when the entry has one, the description at the first
        ``error_message``; 401 (with ``WWW-Authenticate``) for invalid_client, else 400."""
        if status is None:
            status = quirks.invalid_client_status if error == "invalid_client" else 400
        body: dict[str, Any] = {}
        _put(body, dialect.error_name, error)
        if dialect.error_code and dialect.error_code != dialect.error_name:
            _put(body, dialect.error_code, _ERROR_CODES.get(error, 40000000))
        if quirks.describe_errors and dialect.error_message not in (
            dialect.error_name,
            dialect.error_code,
        ):
            _put(body, dialect.error_message, description)
        headers = dict(_NO_STORE)
        if status == HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = 'Basic realm="tokenvend-sandbox"'
        return Fault._json(status, body, headers, ascii_only=False)

    def _azure(self, variant: str, tenant: str, rec: Recorded) -> Fault:
        form = rec.form
        if not any(k[0] == "azure" and k[1] in (tenant, "*") for k in self._clients):
            return Fault.azure_error(90002, "invalid_request", 400, tenant=tenant)
        grant = form.get("grant_type", "")
        if not grant:
            return Fault.azure_error(900144, "invalid_request", 400, param="grant_type")
        if grant != "client_credentials":
            return Fault.azure_error(70003, "unsupported_grant_type", 400, grant=grant)
        basic = rec.basic_auth
        client_id, secret = (
            basic if basic else (form.get("client_id", ""), form.get("client_secret"))
        )
        if not client_id:
            return Fault.azure_error(900144, "invalid_request", 400, param="client_id")
        client = self._clients.get(("azure", tenant, client_id)) or self._clients.get(
            ("azure", "*", client_id)
        )
        if client is None:
            return Fault.azure_error(
                700016, "unauthorized_client", 400, client=client_id, tenant=tenant
            )
        if not secret:
            return Fault.azure_error(7000218, "invalid_client", 401)
        if not self._secret_ok(client, secret):
            return Fault.azure_error(7000215, "invalid_client", 401, client=client_id)
        registered = client.attrs.get("scope")
        if variant == "v1":
            resource = form.get("resource", "")
            if not resource:
                return Fault.azure_error(900144, "invalid_request", 400, param="resource")
            if registered and registered.removesuffix("/.default") != resource:
                return Fault.azure_error(
                    500011, "invalid_resource", 400, resource=resource, tenant=tenant
                )
            audience = resource
        else:
            scope = form.get("scope", "")
            if not scope:
                return Fault.azure_error(900144, "invalid_request", 400, param="scope")
            if (
                " " in scope.strip()
                or not scope.endswith("/.default")
                or (registered and registered != scope)
            ):
                return Fault.azure_error(70011, "invalid_scope", 400, scope=scope)
            audience = scope.removesuffix("/.default")
        now = int(self.clock())
        lifetime = self._lifetime(client)
        token = self._jwt(
            client,
            {
                "aud": audience,
                "iss": f"https://sts.chinacloudapi.cn/{tenant}/",
                "appid": client_id,
                "tid": tenant,
                "sub": client_id,
            },
        )
        self._issue(client, tenant, token)
        if variant == "v1":  # the v1 endpoint answers with numbers as strings
            return _ok(
                {
                    # A token type, not a credential.
                    "token_type": "Bearer",  # nosec B105
                    "expires_in": str(lifetime),
                    "ext_expires_in": str(lifetime),
                    "expires_on": str(now + lifetime),
                    "not_before": str(now),
                    "resource": audience,
                    "access_token": token,
                }
            )
        return _ok(
            {
                # A token type, not a credential.
                "token_type": "Bearer",  # nosec B105
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            }
        )

    # dingtalk: JSON body only. Missing fields answer like DingTalk's gateway does
    # ("Missing<field>"); an app known elsewhere but not in this organization is
    # unauthorized.client; an organization nobody registered is 500 unknownError.
    def _dingtalk(self, corp: str, rec: Recorded) -> Fault:
        body = rec.json if isinstance(rec.json, dict) else {}
        for name in ("client_id", "client_secret", "grant_type"):
            if not isinstance(body.get(name), str) or not body[name]:
                return Fault.dingtalk_error(
                    f"Missing{name}", 400, f"{name} is mandatory for this action."
                )
        if body["grant_type"] != "client_credentials":
            return Fault.dingtalk_error("unsupported.grant.type", 400)
        client_id = body["client_id"]
        candidates = [
            c for k, c in self._clients.items() if k[0] == "dingtalk" and k[2] == client_id
        ]
        if not any(self._secret_ok(c, body["client_secret"]) for c in candidates):
            return Fault.dingtalk_error("invalid.client", 400)
        client = self._clients.get(("dingtalk", corp, client_id)) or self._clients.get(
            ("dingtalk", "*", client_id)
        )
        if client is None or not self._secret_ok(client, body["client_secret"]):
            if any(k[0] == "dingtalk" and k[1] == corp for k in self._clients):
                return Fault.dingtalk_error("unauthorized.client", 400)
            return Fault.dingtalk_error("unknownError", 500, "unknown corp")
        lifetime = self._lifetime(client)
        key = (client_id, corp)
        current = self._dingtalk_current.get(key)
        info = self._tokens.get(current) if current else None
        # Within its validity the same token comes back, and its validity is extended.
        token = self._issue(
            client, corp, current if info is not None and info.expires_at > self.clock() else None
        )
        self._dingtalk_current[key] = token
        return _ok({"access_token": token, "expires_in": lifetime})

    # The authorization endpoint of an authorization_code provider (RFC 6749 section 4.1.1):
    # a request naming an unknown client or a redirect_uri other than the registered one gets
    # an error page and no redirect (RFC 6749 section 4.1.2.1: never redirect to a URI that
    # was not checked); other errors go back to the redirect_uri with `error` and `state`.
    def _auth_page(self, provider: str, query: dict[str, str], accept: str) -> Fault:
        dialect = self.dialects[provider]
        client_id = query.get("client_id", "")
        with self._lock:
            client = self._code_client(provider, client_id)
        if client is None:
            return _html_page(
                400,
                "Unknown app",
                f"No {provider} app has the client_id {client_id!r}. The link that brought you "
                "here is wrong; ask whoever sent it for a new one.",
            )
        redirect_uri = query.get("redirect_uri") or client.attrs.get("redirect_uri") or ""
        if not redirect_uri:
            return _html_page(400, "No redirect URI", "redirect_uri is required")
        registered = client.attrs.get("redirect_uri")
        if registered and registered != redirect_uri:
            return _html_page(
                400,
                "Redirect URI not registered",
                "redirect_uri does not match the client's registered one: this app did not "
                f"register {redirect_uri!r}, so the sandbox will not send you there.",
            )
        state = query.get("state")
        params = {"state": state} if state is not None else {}

        def back(**answer: str) -> Fault:
            return Fault.redirect(_add_query(redirect_uri, {**answer, **params}))

        if query.get("response_type", "code") != "code":
            return back(error="unsupported_response_type")
        challenge = None
        if dialect.pkce and ("code_challenge" in query or "code_challenge_method" in query):
            # RFC 7636 section 4.3: the method defaults to plain, which this server refuses.
            if query.get("code_challenge_method", "plain") != "S256":
                return back(
                    error="invalid_request", error_description="transform algorithm not supported"
                )
            challenge = query.get("code_challenge", "")
            if not _PKCE_CHALLENGE.fullmatch(challenge):
                return back(error="invalid_request", error_description="invalid code_challenge")
        auto = query.get("auto")
        if auto is not None and auto not in AUTO_DECISIONS:
            return _html_page(
                400, "Bad request", f"auto must be one of {', '.join(AUTO_DECISIONS)}"
            )
        consent = _Consent(
            provider, client_id, redirect_uri, state, challenge, self.clock() + CONSENT_LIFETIME
        )
        if auto is None and "text/html" in accept.lower():
            return self._consent_page(consent, client, query.get("scope", ""))
        return self._decide(consent, auto or "allow", status=302)

    def _consent_page(self, consent: _Consent, client: _Client, scope: str) -> Fault:
        """The page a user sees: the app, what it asks for, Allow and Deny (a form POST back
        here with a single-use ticket for this request)."""
        ticket = secrets.token_urlsafe(24)
        now = self.clock()
        with self._lock:
            live = [(k, c) for k, c in self._consents.items() if c.expires_at > now]
            self._consents = dict(live[-(_MAX_CONSENTS - 1) :])
            self._consents[ticket] = consent
        provider = html.escape(consent.provider)
        app = html.escape(str(client.attrs.get("name") or client.client_id))
        scopes = "".join(f"<li>{html.escape(s)}</li>" for s in scope.split()) or (
            "<li><em>no scope named</em></li>"
        )
        back_to = html.escape(urlsplit(consent.redirect_uri).netloc or consent.redirect_uri)
        body = (
            f'<h1>Authorize <span id="app">{app}</span></h1>'
            f"<p><strong>{app}</strong> asks to use your {provider} account (sandbox) with "
            f'these permissions:</p><ul id="scope">{scopes}</ul>'
            f"<p>Afterwards you return to <code>{back_to}</code>.</p>"
            f'<form method="post" action="/{provider}/oauth2/auth">'
            f'<input type="hidden" name="consent" value="{ticket}">'
            '<button type="submit" id="allow" name="decision" value="allow">Allow</button> '
            '<button type="submit" id="deny" name="decision" value="deny">Deny</button>'
            "</form><p><small>tokenvend sandbox: no real account is involved.</small></p>"
        )
        return _html_page(200, f"Authorize {app}", body, escaped=True)

    def _consent_answer(self, provider: str, form: Mapping[str, str]) -> Fault:
        """Allow or Deny from a consent page: once per page, within CONSENT_LIFETIME."""
        decision = form.get("decision", "")
        if decision not in AUTO_DECISIONS:
            return _html_page(400, "Bad request", "decision must be allow or deny")
        with self._lock:
            consent = self._consents.pop(form.get("consent", ""), None)
        if consent is None or consent.provider != provider or consent.expires_at <= self.clock():
            return _html_page(
                400,
                "Consent page expired",
                "This consent page was already answered, or has expired. Start again from the "
                "link you were given.",
            )
        return self._decide(consent, decision, status=303)

    def _decide(self, consent: _Consent, decision: str, *, status: int) -> Fault:
        """Back to the redirect_uri: a code on allow, ``error=access_denied`` on deny."""
        params = {"state": consent.state} if consent.state is not None else {}
        if decision == "deny":
            answer = {"error": "access_denied", "error_description": "the user denied the request"}
        else:
            try:
                code = self.authorize(
                    consent.client_id,
                    consent.redirect_uri,
                    provider=consent.provider,
                    code_challenge=consent.code_challenge,
                )
            except ValueError as exc:  # the client was registered again meanwhile
                return _html_page(400, "Cannot authorize", str(exc))
            answer = {"code": code}
        return Fault.redirect(_add_query(consent.redirect_uri, {**answer, **params}), status)

    def _callback_page(self, provider: str, query: dict[str, str]) -> Fault:
        code = query.get("code")
        if not code:
            return Fault.html(400, f"no authorization code ({query.get('error', 'no error')})")
        page = (
            "<!DOCTYPE html>\n<html><head><title>tokenvend sandbox: authorized</title></head>"
            "<body><h1>Authorization code</h1>"
            f"<p><code>{html.escape(code)}</code></p>"
            f"<p>Redeem it with <code>tokenvend authorize {html.escape(provider)} CONNECTION "
            f"--code CODE --redirect-uri {html.escape(self.callback_url(provider))}</code></p>"
            "</body></html>\n"
        )
        return Fault(status=200, body=page, headers={"Content-Type": "text/html; charset=utf-8"})

    def _page(self, method: str, path: str) -> tuple[str, str] | None:
        """(provider, "auth", "consent" or "callback") when ``path`` is the authorization
        page (GET), the consent page's answer (POST) or the callback page of an
        authorization_code provider."""
        provider, _, rest = path.strip("/").partition("/")
        dialect = self.dialects.get(provider)
        if dialect is None or dialect.grant != "authorization_code":
            return None
        if method == "POST" and rest == "oauth2/auth":
            return provider, "consent"
        if method not in ("GET", "HEAD"):
            return None
        return {"oauth2/auth": (provider, "auth"), "callback": (provider, "callback")}.get(rest)

    def _describe(self) -> dict[str, Any]:
        """What the control surface's ``GET /_sandbox/providers`` answers."""
        described: dict[str, Any] = {}
        for name, dialect in self.dialects.items():
            described[name] = {
                "grant": dialect.grant,
                "client_auth": dialect.client_auth,
                "request_format": dialect.request_format,
                "deploy": dialect.deploy,
                "token_url": self.token_url(name),
                "endpoint_fields": self.endpoint_fields(name),
                "register": sorted(self.register_attributes(name)),
            }
        return described


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # handler threads may sit on idle keep-alive connections
    request_queue_size = 128  # the default listen backlog of 5 resets bursts of clients
    sandbox: Sandbox

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # As ThreadingMixIn does, with a name that says whose thread it is.
        threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="tokenvend-sandbox-handler",
            daemon=True,
        ).start()

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or self.sandbox._stopping.is_set():
            return  # the client went away (a timeout it provoked itself, or we stopped)
        sys.stderr.write("tokenvend sandbox: internal error\n" + traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tokenvend-sandbox"
    # Answer at once: with keep-alive, delayed ACKs would hold each answer back ~40 ms.
    disable_nagle_algorithm = True

    @property
    def sandbox(self) -> Sandbox:
        return cast(_Server, self.server).sandbox

    def setup(self) -> None:
        super().setup()
        cast(_Server, self.server).track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        cast(_Server, self.server).track(self.connection, False)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: an access log would carry query strings, and those may hold secrets."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_POST

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            return
        parts = urlsplit(self.path)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        sandbox = self.sandbox
        try:
            if path.startswith("/_sandbox/"):
                self._send(self._control(path, body))
                return
            page = sandbox._page(self.command, path)
            if page is not None:
                provider, kind = page
                if kind == "auth":
                    self._send(sandbox._auth_page(provider, query, self.headers.get("Accept", "")))
                elif kind == "consent":
                    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
                    self._send(sandbox._consent_answer(provider, form))
                else:
                    self._send(sandbox._callback_page(provider, query))
                return
            for route in sandbox._routes:
                match = route.pattern.fullmatch(path)
                if match:
                    rec = self._record(path, query, body)
                    fault = sandbox._take(route.provider, rec)
                    values = [unquote(match.group(f"g{i}")) for i in range(len(route.fields))]
                    if fault is not None:
                        self._send(fault.answer_to(rec, self.path))
                    else:
                        self._send(sandbox._answer(route, "/".join(values), rec))
                    return
            self._send(Fault.plain(404, f"no such endpoint: {path}"))
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            sys.stderr.write("tokenvend sandbox: internal error\n" + traceback.format_exc())
            self._send(Fault._json(500, {"error": "sandbox_internal_error"}, {}))

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    length = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self._send(Fault.plain(400, "bad chunked encoding"), close=True)
                    return None
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                size += length
                if size > _MAX_BODY:
                    self._send(Fault.plain(413, "body too large"), close=True)
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline(1024)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            self._send(Fault.plain(400 if length < 0 else 413, "bad Content-Length"), close=True)
            return None
        return self.rfile.read(length) if length else b""

    def _record(self, path: str, query: dict[str, str], body: bytes) -> Recorded:
        headers = _Headers((k.lower(), v) for k, v in self.headers.items())
        content_type = headers.get("content-type", "").lower()
        form: dict[str, str] = {}
        parsed_json: Any = None
        text = body.decode("utf-8", "replace")
        if "application/x-www-form-urlencoded" in content_type:
            form = dict(parse_qsl(text, keep_blank_values=True))
        elif "json" in content_type:
            with contextlib.suppress(ValueError):
                parsed_json = json.loads(text)
        return Recorded(self.command, path, query, headers, form, parsed_json, body)

    def _control(self, path: str, body: bytes) -> Fault:
        sandbox = self.sandbox
        parts = path.strip("/").split("/")[1:]
        try:
            data: Any = json.loads(body) if body.strip() else None
        except ValueError:
            return _control_error(400, "the body is not JSON")
        try:
            if self.command == "GET" and parts == ["calls"]:
                return Fault._json(200, {p: sandbox.calls(p) for p in sandbox.providers}, {})
            if self.command == "GET" and parts == ["providers"]:
                return Fault._json(200, sandbox._describe(), {})
            if self.command != "POST":
                return _control_error(405, "use POST")
            if len(parts) == 2 and parts[0] == "faults":
                items = data if isinstance(data, list) else [data]
                faults = [Fault.from_json(item) for item in items]
                sandbox.inject(parts[1], *faults)
                return Fault._json(200, {"queued": len(faults)}, {})
            if len(parts) == 2 and parts[0] == "register":
                if not isinstance(data, dict):
                    return _control_error(400, "expected a JSON object")
                args = dict(data)
                client_id, secret = args.pop("client_id", None), args.pop("client_secret", None)
                keyed = {"private_key_jwt", "tls_client_auth"}
                if secret is None and keyed & sandbox.dialect(parts[1]).client_auths:
                    secret = ""  # nosec B105: a key or certificate client has no secret
                if not isinstance(client_id, str) or not isinstance(secret, str):
                    return _control_error(400, "client_id and client_secret are required")
                sandbox.register(parts[1], client_id, secret, **args)
                return Fault._json(200, {"registered": client_id}, {})
            if len(parts) == 2 and parts[0] == "authorize" and isinstance(data, dict):
                challenge = data.get("code_challenge")
                code = sandbox.authorize(
                    str(data.get("client_id", "")),
                    str(data.get("redirect_uri", "")),
                    str(data.get("state", "")),
                    provider=parts[1],
                    code_challenge=None if challenge is None else str(challenge),
                )
                return Fault._json(200, {"code": code}, {})
            if parts == ["reset"]:
                sandbox.reset()
                return Fault._json(200, {"reset": True}, {})
            if len(parts) == 2 and parts[1] == "revoke" and isinstance(data, dict):
                sandbox.dialect(parts[0])
                client_id = str(data.get("client_id", ""))
                sandbox.revoke_refresh_tokens(client_id, provider=parts[0])
                return Fault._json(200, {"revoked": True}, {})
            if parts == ["introspect"] and isinstance(data, dict):  # shaped like RFC 7662
                info = sandbox.token_info(str(data.get("token", "")))
                if info is None or info.expires_at <= sandbox.clock():
                    return Fault._json(200, {"active": False}, {})
                answer = {
                    "active": True,
                    "provider": info.provider,
                    "client_id": info.client_id,
                    "exp": int(info.expires_at),
                }
                return Fault._json(200, answer, {})
        except (TypeError, ValueError) as exc:
            return _control_error(400, str(exc))
        return _control_error(404, f"no such control endpoint: {path}")

    def _send(self, answer: Fault, *, close: bool = False) -> None:
        if answer.delay > 0 and self.sandbox._stopping.wait(answer.delay):
            answer = Fault(drop=True)
        if answer.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = answer.payload()
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        if payload and not any(k.lower() == "content-type" for k in headers):
            looks_json = payload.lstrip()[:1] in (b"{", b"[")
            headers["Content-Type"] = _JSON if looks_json else "text/plain; charset=utf-8"
        self.send_response(answer.status)
        for name, value in headers.items():
            self.send_header(name, value)
        no_body = answer.status in (204, 304) or 100 <= answer.status < 200
        if not no_body:
            self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()


def _ok(body: dict[str, Any]) -> Fault:
    return Fault.success(body)


def _put(body: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``body``'s field at a dotted path, making the objects on the way."""
    *parents, last = dotted.split(".")
    where = body
    for part in parents:
        child = where.get(part)
        if not isinstance(child, dict):
            child = where[part] = {}
        where = child
    where[last] = value


def _parameters(request_format: str, rec: Recorded) -> dict[str, str] | None:
    """The grant's parameters where ``request_format`` puts them (string values only), or
    None when the request does not carry them in that format."""
    if request_format == "query":
        return dict(rec.query)
    if request_format == "json":
        if not isinstance(rec.json, dict):
            return None
        return {str(k): v for k, v in rec.json.items() if isinstance(v, str)}
    if "application/x-www-form-urlencoded" not in rec.headers.get("content-type", "").lower():
        return None
    return dict(rec.form)


def _plausible(provider: str, path: str, now: int) -> str | int:
    """A value for a passthrough field nobody chose: a URL for ``…url``, a time for
    ``…_at``, else a label."""
    leaf = path.rsplit(".", 1)[-1].lower()
    if leaf.endswith("url") or leaf.endswith("uri"):
        return f"https://{provider}.sandbox.invalid/{leaf.replace('_', '-')}"
    if leaf.endswith("_at") or leaf.endswith("time"):
        return now
    return f"sbx-{provider}-{leaf}"


def _unverified_claims(token: str) -> dict[str, Any] | None:
    """A JWT's payload, undecided whether to trust it (to find whose key verifies it)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _generate_key(alg: str) -> Any:
    """A fresh private key for the JWS algorithm ``alg`` (RS*/PS*: RSA, ES*: EC, else
    Ed25519)."""
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    if alg[:2] in ("RS", "PS"):
        return RSAKey.generate_key(2048)
    if alg.startswith("ES"):
        curve = {"ES384": "P-384", "ES512": "P-521", "ES256K": "secp256k1"}.get(alg, "P-256")
        return ECKey.generate_key(curve)
    return OKPKey.generate_key("Ed25519")


def _import_public_key(value: Any, alg: str) -> Any:
    """A joserfc key from PEM text or a JWK (dict or JSON text); never a symmetric one."""
    from joserfc.errors import JoseError
    from joserfc.jwk import import_key

    key_type = {"R": "RSA", "P": "RSA", "E": "EC"}.get(alg[:1], "OKP")
    if isinstance(value, str) and value.lstrip().startswith("{"):
        value = json.loads(value)
    if isinstance(value, Mapping):
        value = {str(k): v for k, v in value.items()}
        key_type = str(value.get("kty", key_type))
    elif not isinstance(value, (str, bytes)):
        raise ValueError("public_key is PEM text or a JWK")
    if key_type not in ("RSA", "EC", "OKP"):
        raise ValueError("public_key must be an RSA, EC or OKP key")
    try:
        key = import_key(value, cast(Literal["RSA", "EC", "OKP"], key_type))
    except (JoseError, ValueError, TypeError) as exc:
        raise ValueError(f"public_key is not a {key_type} key") from exc
    if key.is_private:
        raise ValueError("public_key must be a public key (the private one stays with the client)")
    return key


#: A sandbox page's headers: not cached, never framed (a consent page in a frame is how
#: clickjacking takes a user's Allow), no referrer (its query holds the state).
_PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    **_NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em}"
    "button{font-size:1em;padding:.4em 1.4em;margin-right:.6em}"
)


def _html_page(status: int, title: str, body: str, *, escaped: bool = False) -> Fault:
    """A small HTML page; ``body`` is text (escaped here) unless ``escaped`` says it is
    HTML built from escaped parts."""
    content = body if escaped else f"<h1>{html.escape(title)}</h1><p>{html.escape(body)}</p>"
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title) if not escaped else title}</title>"
        f"<style>{_PAGE_STYLE}</style></head><body>{content}</body></html>\n"
    )
    return Fault(status=status, body=page, headers=dict(_PAGE_HEADERS))


def _control_error(status: int, message: str) -> Fault:
    return Fault._json(status, {"error": message}, {})


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(user), unquote_plus(password)


def _add_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def main(argv: list[str] | None = None) -> int:
    """``python -m tokenvend.sandbox [--host H] [--port N] [--lifetime S] [--catalogue F]``:
    serve until
    SIGINT or SIGTERM; print the URL as the one line of output once serving."""
    parser = argparse.ArgumentParser(
        prog="python -m tokenvend.sandbox",
        description="Sandbox token endpoints of every provider of the catalogue.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--lifetime", type=int, default=3600, help="token lifetime, seconds")
    parser.add_argument(
        "--catalogue", default=None, help="a providers.toml (default: the packaged one)"
    )
    args = parser.parse_args(argv)
    try:
        sandbox = Sandbox(
            args.host, args.port, token_lifetime=args.lifetime, catalogue=args.catalogue
        )
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"tokenvend sandbox: cannot read the catalogue: {exc}", file=sys.stderr)
        return 1
    try:
        sandbox.start()
    except OSError as exc:
        print(
            f"tokenvend sandbox: cannot listen on {args.host}:{args.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(sandbox.url, flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
