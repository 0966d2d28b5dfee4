"""Sandbox token endpoints for every provider, served over real HTTP on loopback.

`Sandbox` speaks the five protocols of the provider notes, providers.md (aspose, wps365, azure,
dingtalk, oauth2) closely enough that a client which works against it has met every shape
the real servers are known to answer with: their success bodies, their error bodies and
statuses, WPS's rotating refresh tokens and single-use codes, DingTalk's re-issue of a
still-valid token. Two audiences use it:

- tests, as the providers' servers, with fault injection (`Sandbox.inject` and `Fault`):
  a scripted 5xx, a throttle with ``Retry-After``, an HTML error page, a redirect, a body
  that is not JSON, a slow answer, a dropped connection, an error that echoes the request;
- ``tokenvend local``, as the token endpoints a newcomer gets tokens from without any
  account at any vendor.

Out-of-process users (the local stack, end-to-end tests) drive it through a small control
surface under ``/_sandbox/`` (see `_Handler._control`), or run it alone with
``python -m tokenvend.sandbox --port N``.

Only the standard library is used: the module ships with the ``tokenvend`` package and must
import fast. Nothing is ever logged: not the access log, not a token, not a secret.

Where the real protocol is UNCONFIRMED the sandbox picks one plausible variant and says so
in the provider's handler; the numeric WPS error codes other than 40000001 are the
sandbox's own invention (clients must branch on ``msg``, never on ``code``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hmac
import html
import json
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, cast
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

__all__ = ["PROVIDERS", "Fault", "IssuedToken", "Recorded", "Sandbox", "main"]

PROVIDERS: tuple[str, ...] = ("aspose", "wps365", "azure", "dingtalk", "oauth2")

#: What `Sandbox.register` accepts besides ``client_id`` and ``client_secret``.
_ATTRS: dict[str, frozenset[str]] = {
    "aspose": frozenset({"lifetime"}),
    "wps365": frozenset({"lifetime", "redirect_uri"}),
    "azure": frozenset({"lifetime", "tenant_id", "scope"}),
    "dingtalk": frozenset({"lifetime", "corp_id"}),
    "oauth2": frozenset({"lifetime", "scope", "audience"}),
}

WPS_GRANT_LIFETIME = 2_592_000  # 30 days: the refresh grant, counted from the code's redemption
WPS_CODE_LIFETIME = 600  # an authorization code is good for 10 minutes
_MAX_BODY = 1 << 20
_MAX_RECORDED = 1000  # per provider: `tokenvend local` runs for hours
_JSON = "application/json; charset=utf-8"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: What `Fault.echo_request` can repeat of a request, in its default order.
ECHO_PARTS = ("request", "authorization", "body", "decoded")

# WPS 365 error codes: 40000001 is documented for invalid_request; the others are invented.
_WPS_CODES = {
    "invalid_request": 40000001,
    "invalid_client": 40000002,
    "invalid_grant": 40000003,
    "unsupported_grant_type": 40000004,
    "unauthorized_client": 40000005,
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
    realm: str  # tenant (azure), corp (dingtalk); "*" = any; "" for the others
    attrs: dict[str, Any]


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    expires_at: float
    used: bool = False


@dataclass
class _Grant:
    client_id: str
    expires_at: float
    refresh_token: str
    revoked: bool = False


_Routes = list[tuple["re.Pattern[str]", str, str]]
_TOKEN_ROUTES: _Routes = [
    (re.compile(r"/aspose/v4\.0/cells/connect/token"), "aspose", "query"),
    (re.compile(r"/aspose(?:/v3\.0/cells)?/connect/token"), "aspose", "form"),
    (re.compile(r"/wps365/oauth2/token"), "wps365", ""),
    (re.compile(r"/azure/(?P<realm>[^/]+)/oauth2/v2\.0/token"), "azure", "v2"),
    (re.compile(r"/azure/(?P<realm>[^/]+)/oauth2/token"), "azure", "v1"),
    (re.compile(r"/dingtalk/v1\.0/oauth2/(?P<realm>[^/]+)/token"), "dingtalk", ""),
    (re.compile(r"/oauth2/token"), "oauth2", ""),
]


class Sandbox:
    """Token endpoints of all five providers on one loopback port.

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
    ) -> None:
        self.host = host
        self.port = port
        self.token_lifetime = token_lifetime
        self.clock = clock
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[tuple[str, str, str], _Client] = {}
        self._faults: dict[str, deque[Fault]] = {p: deque() for p in PROVIDERS}
        self._calls: dict[str, int] = dict.fromkeys(PROVIDERS, 0)
        self._recorded: dict[str, deque[Recorded]] = {
            p: deque(maxlen=_MAX_RECORDED) for p in PROVIDERS
        }
        self._tokens: dict[str, IssuedToken] = {}
        self._dingtalk_current: dict[tuple[str, str], str] = {}
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}  # by current refresh token
        self._grant_order: list[_Grant] = []

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

    def token_url(self, provider: str, **kw: str) -> str:
        """The token URL of ``provider``.

        ``aspose``: ``style="query"`` (default, the v4.0 URL with credentials in the query)
        or ``style="form"`` (``/connect/token``, form body). ``azure`` and ``dingtalk`` keep
        the literal ``{tenant_id}`` / ``{corp_id}`` placeholder unless ``tenant_id=`` /
        ``corp_id=`` is given.
        """
        allowed = {"aspose": {"style"}, "azure": {"tenant_id"}, "dingtalk": {"corp_id"}}
        _check_provider(provider)
        unknown = set(kw) - allowed.get(provider, set())
        if unknown:
            raise TypeError(f"token_url({provider!r}) takes no {sorted(unknown)}")
        base = self.url
        if provider == "aspose":
            style = kw.get("style", "query")
            if style not in ("query", "form"):
                raise ValueError("aspose style is 'query' or 'form'")
            if style == "form":
                return f"{base}/aspose/connect/token"
            return f"{base}/aspose/v4.0/cells/connect/token"
        if provider == "wps365":
            return f"{base}/wps365/oauth2/token"
        if provider == "azure":
            tenant = quote(kw.get("tenant_id", "{tenant_id}"), safe="{}")
            return f"{base}/azure/{tenant}/oauth2/v2.0/token"
        if provider == "dingtalk":
            corp = quote(kw.get("corp_id", "{corp_id}"), safe="{}")
            return f"{base}/dingtalk/v1.0/oauth2/{corp}/token"
        return f"{base}/oauth2/token"

    def authority_host(self) -> str:
        """The Azure authority host: ``authority_host() + "/{tenant}/oauth2/v2.0/token"``."""
        return f"{self.url}/azure"

    def authorize_url(self) -> str:
        """The sandbox's WPS 365 authorization page (consent is implied)."""
        return f"{self.url}/wps365/oauth2/auth"

    def callback_url(self) -> str:
        """A redirect URI served by the sandbox that shows the code it receives, so that a
        person can authorize a local ``wps365`` connection with a browser alone."""
        return f"{self.url}/wps365/callback"

    # ---------------------------------------------------------------- set-up

    def register(self, provider: str, client_id: str, client_secret: str, **attrs: Any) -> None:
        """Register (or replace) a client.

        Attributes: ``lifetime`` (seconds, every provider); ``tenant_id`` and ``scope``
        (azure; without ``tenant_id`` the client exists in every tenant, without ``scope``
        any ``…/.default`` scope is granted); ``corp_id`` (dingtalk; without it, every
        organization); ``redirect_uri`` (wps365: the only one the authorization accepts);
        ``scope`` (oauth2: the space-separated scopes it may ask for) and ``audience``.
        """
        _check_provider(provider)
        unknown = set(attrs) - _ATTRS[provider]
        if unknown:
            raise TypeError(
                f"register({provider!r}) takes no {sorted(unknown)}; "
                f"allowed: {sorted(_ATTRS[provider])}"
            )
        if not client_id or not isinstance(client_id, str):
            raise ValueError("client_id must be a non-empty string")
        if not isinstance(client_secret, str):
            raise ValueError("client_secret must be a string")
        if "lifetime" in attrs:
            attrs["lifetime"] = int(attrs["lifetime"])
        realm = ""
        if provider == "azure":
            realm = str(attrs.get("tenant_id") or "*")
        elif provider == "dingtalk":
            realm = str(attrs.get("corp_id") or "*")
        with self._lock:
            self._clients[(provider, realm, client_id)] = _Client(
                provider, client_id, client_secret, realm, dict(attrs)
            )

    def authorize(self, client_id: str, redirect_uri: str, state: str = "") -> str:
        """wps365: issue the one-time authorization code a user's consent would give."""
        with self._lock:
            client = self._clients.get(("wps365", "", client_id))
            if client is None:
                raise ValueError(f"unknown wps365 client {client_id!r}")
            registered = client.attrs.get("redirect_uri")
            if registered and registered != redirect_uri:
                raise ValueError("redirect_uri does not match the client's registered one")
            code = f"sbx-wps365-code-{secrets.token_urlsafe(18)}"
            self._codes[code] = _Code(client_id, redirect_uri, self.clock() + WPS_CODE_LIFETIME)
            return code

    def inject(self, provider: str, *faults: Fault) -> None:
        """Queue ``faults``: the next ``len(faults)`` token requests to ``provider`` get
        them, in order, instead of the real answer."""
        _check_provider(provider)
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"not a Fault: {fault!r}")
        with self._lock:
            self._faults[provider].extend(faults)

    def reset(self) -> None:
        """Forget queued faults, counters and recorded requests (not registrations, nor
        issued tokens and grants)."""
        with self._lock:
            for provider in PROVIDERS:
                self._faults[provider].clear()
                self._calls[provider] = 0
                self._recorded[provider].clear()

    # ---------------------------------------------------------------- observation

    def calls(self, provider: str | None = None) -> int:
        """Token requests received (faulted and real), for one provider or all."""
        with self._lock:
            if provider is None:
                return sum(self._calls.values())
            _check_provider(provider)
            return self._calls[provider]

    def requests(self, provider: str) -> list[Recorded]:
        """The token requests ``provider`` received, oldest first (the last 1000)."""
        _check_provider(provider)
        with self._lock:
            return list(self._recorded[provider])

    def pending_faults(self, provider: str) -> int:
        """How many queued faults are still waiting for a request."""
        _check_provider(provider)
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

    def refresh_token_of(self, client_id: str) -> str | None:
        """wps365: the currently valid refresh token of the client's latest grant."""
        now = self.clock()
        with self._lock:
            for grant in reversed(self._grant_order):
                if grant.client_id == client_id and not grant.revoked and grant.expires_at > now:
                    return grant.refresh_token
        return None

    def revoke_refresh_tokens(self, client_id: str) -> None:
        """wps365: invalidate every refresh grant of the client (``invalid_grant`` next)."""
        with self._lock:
            for grant in self._grant_order:
                if grant.client_id == client_id:
                    grant.revoked = True

    # ---------------------------------------------------------------- serving (internal)

    def _take(self, provider: str, rec: Recorded) -> Fault | None:
        with self._lock:
            self._calls[provider] += 1
            self._recorded[provider].append(rec)
            queue = self._faults[provider]
            return queue.popleft() if queue else None

    def _answer(self, provider: str, variant: str, realm: str, rec: Recorded) -> Fault:
        if rec.method != "POST":
            return Fault(
                status=405,
                body="Method Not Allowed",
                headers={"Allow": "POST", "Content-Type": "text/plain; charset=utf-8"},
            )
        with self._lock:
            if provider == "aspose":
                return self._aspose(variant, rec)
            if provider == "wps365":
                return self._wps365(rec)
            if provider == "azure":
                return self._azure(variant, realm, rec)
            if provider == "dingtalk":
                return self._dingtalk(realm, rec)
            return self._oauth2(rec)

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
            and hmac.compare_digest(client.client_secret.encode(), secret.encode())
        )

    # aspose: IdentityServer-style errors ({"error": ...}, 400). Which style the v4.0 URL
    # takes is UNCONFIRMED: the query URL reads only the query, the /connect/token URLs
    # only the form body (or HTTP Basic), so a client using the wrong style for its URL fails.
    def _aspose(self, variant: str, rec: Recorded) -> Fault:
        if variant == "query":
            params = rec.query
            grant = params.get("grant_type", "client_credentials")
        else:
            params = dict(rec.form)
            basic = rec.basic_auth
            if basic:
                params["client_id"], params["client_secret"] = basic
            grant = params.get("grant_type", "")
            if not grant:
                return Fault.oauth_error("invalid_request")
        if grant != "client_credentials":
            return Fault.oauth_error("unsupported_grant_type")
        client = self._clients.get(("aspose", "", params.get("client_id", "")))
        if not self._secret_ok(client, params.get("client_secret")):
            return Fault.oauth_error("invalid_client")
        assert client is not None
        token = self._jwt(
            client, {"iss": "https://api.aspose.cloud", "client_id": client.client_id}
        )
        self._issue(client, token=token)
        return _ok(
            # A token type, not a credential.
            {"access_token": token, "expires_in": self._lifetime(client), "token_type": "Bearer"}  # nosec B105
        )

    def _wps365(self, rec: Recorded) -> Fault:
        form = rec.form
        grant = form.get("grant_type", "")
        if not grant:
            return _wps("invalid_request", "'grant_type' is required")
        if grant not in ("authorization_code", "refresh_token", "client_credentials"):
            return _wps("unsupported_grant_type", f"grant_type '{grant}' is not supported")
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if not client_id or secret is None:
            return _wps("invalid_request", "'client_id' and 'client_secret' are required")
        client = self._clients.get(("wps365", "", client_id))
        if not self._secret_ok(client, secret):
            return _wps("invalid_client", "client authentication failed")
        assert client is not None
        now = self.clock()
        lifetime = self._lifetime(client)
        if grant == "client_credentials":  # app token
            token = self._issue(client)
            # A token type, not a credential.
            return _ok({"access_token": token, "expires_in": lifetime, "token_type": "bearer"})  # nosec B105
        if grant == "authorization_code":
            code_value, redirect_uri = form.get("code", ""), form.get("redirect_uri")
            if not code_value:
                return _wps("invalid_request", "'code' is required")
            if redirect_uri is None:
                return _wps("invalid_request", "'redirect_uri' is required")
            code = self._codes.get(code_value)
            if code is None or code.client_id != client_id:
                return _wps("invalid_grant", "invalid authorization code")
            if code.used:
                return _wps("invalid_grant", "authorization code has been used")
            if code.expires_at <= now:
                return _wps("invalid_grant", "authorization code has expired")
            if code.redirect_uri != redirect_uri:
                return _wps("invalid_request", "'redirect_uri' parameter does not match")
            code.used = True
            grant_obj = _Grant(client_id, now + WPS_GRANT_LIFETIME, "")
            self._grant_order.append(grant_obj)
        else:
            old = form.get("refresh_token", "")
            if not old:
                return _wps("invalid_request", "'refresh_token' is required")
            found = self._grants.get(old)
            if found is None or found.client_id != client_id:
                return _wps("invalid_grant", "invalid refresh_token")
            if found.revoked:
                return _wps("invalid_grant", "refresh_token has been revoked")
            if found.expires_at <= now:
                return _wps("invalid_grant", "refresh_token has expired")
            del self._grants[old]  # rotation: the old refresh token is spent
            grant_obj = found
        grant_obj.refresh_token = f"sbx-wps365-rt-{secrets.token_urlsafe(24)}"
        self._grants[grant_obj.refresh_token] = grant_obj
        return _ok(
            {
                "access_token": self._issue(client),
                "expires_in": lifetime,
                "refresh_token": grant_obj.refresh_token,
                "refresh_expires_in": max(0, int(grant_obj.expires_at - now)),
                # A token type, not a credential.
                "token_type": "bearer",  # nosec B105
            }
        )

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

    def _oauth2(self, rec: Recorded) -> Fault:
        content_type = rec.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" not in content_type:
            return Fault.oauth_error(
                "invalid_request", 400, "the body must be application/x-www-form-urlencoded"
            )
        form = rec.form
        authorization = rec.headers.get("authorization", "")
        basic = _basic_auth(authorization)
        if authorization and basic is None:
            return Fault.oauth_error("invalid_client", 401, "malformed HTTP Basic credentials")
        if basic and "client_secret" in form:
            return Fault.oauth_error(
                "invalid_request", 400, "more than one client authentication method"
            )
        grant = form.get("grant_type", "")
        if not grant:
            return Fault.oauth_error("invalid_request", 400, "missing grant_type")
        if grant != "client_credentials":
            return Fault.oauth_error("unsupported_grant_type", 400)
        client_id, secret = (
            basic if basic else (form.get("client_id", ""), form.get("client_secret"))
        )
        client = self._clients.get(("oauth2", "", client_id))
        if not self._secret_ok(client, secret):
            return Fault.oauth_error("invalid_client", 401, "client authentication failed")
        assert client is not None
        requested = form.get("scope")
        allowed = client.attrs.get("scope")
        if (
            requested is not None
            and allowed is not None
            and not set(requested.split()) <= set(str(allowed).split())
        ):
            return Fault.oauth_error("invalid_scope", 400, "scope not allowed for this client")
        body: dict[str, Any] = {
            "access_token": self._issue(client),
            # A token type, not a credential.
            "token_type": "Bearer",  # nosec B105
            "expires_in": self._lifetime(client),
        }
        if requested is not None:
            body["scope"] = requested
        return _ok(body)

    # The sandbox's WPS consent page: redirects at once with a code, as if the user agreed.
    def _wps_auth_page(self, query: dict[str, str]) -> Fault:
        client_id = query.get("client_id", "")
        with self._lock:
            client = self._clients.get(("wps365", "", client_id))
        if client is None:
            return Fault.html(400, f"unknown client_id {client_id!r}")
        redirect_uri = query.get("redirect_uri") or client.attrs.get("redirect_uri") or ""
        if not redirect_uri:
            return Fault.html(400, "redirect_uri is required")
        registered = client.attrs.get("redirect_uri")
        if registered and registered != redirect_uri:
            return Fault.html(400, "redirect_uri does not match the client's registered one")
        params = {"state": query["state"]} if "state" in query else {}
        if query.get("response_type", "code") != "code":
            return Fault.redirect(
                _add_query(redirect_uri, {"error": "unsupported_response_type", **params})
            )
        code = self.authorize(client_id, redirect_uri, query.get("state", ""))
        return Fault.redirect(_add_query(redirect_uri, {"code": code, **params}))

    def _callback_page(self, query: dict[str, str]) -> Fault:
        code = query.get("code")
        if not code:
            return Fault.html(400, f"no authorization code ({query.get('error', 'no error')})")
        page = (
            "<!DOCTYPE html>\n<html><head><title>tokenvend sandbox: authorized</title></head>"
            "<body><h1>Authorization code</h1>"
            f"<p><code>{html.escape(code)}</code></p>"
            "<p>Redeem it with <code>tokenvend authorize wps365 CONNECTION --code CODE "
            f"--redirect-uri {html.escape(self.callback_url())}</code></p></body></html>\n"
        )
        return Fault(status=200, body=page, headers={"Content-Type": "text/html; charset=utf-8"})


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
            if path == "/wps365/oauth2/auth" and self.command in ("GET", "HEAD"):
                self._send(sandbox._wps_auth_page(query))
                return
            if path == "/wps365/callback" and self.command in ("GET", "HEAD"):
                self._send(sandbox._callback_page(query))
                return
            for pattern, provider, variant in _TOKEN_ROUTES:
                match = pattern.fullmatch(path)
                if match:
                    rec = self._record(path, query, body)
                    fault = sandbox._take(provider, rec)
                    realm = unquote(match.groupdict().get("realm") or "")
                    if fault is not None:
                        self._send(fault.answer_to(rec, self.path))
                    else:
                        self._send(sandbox._answer(provider, variant, realm, rec))
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
                return Fault._json(200, {p: sandbox.calls(p) for p in PROVIDERS}, {})
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
                if not isinstance(client_id, str) or not isinstance(secret, str):
                    return _control_error(400, "client_id and client_secret are required")
                sandbox.register(parts[1], client_id, secret, **args)
                return Fault._json(200, {"registered": client_id}, {})
            if parts == ["reset"]:
                sandbox.reset()
                return Fault._json(200, {"reset": True}, {})
            if parts == ["wps365", "revoke"] and isinstance(data, dict):
                sandbox.revoke_refresh_tokens(str(data.get("client_id", "")))
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


def _check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")


def _ok(body: dict[str, Any]) -> Fault:
    return Fault.success(body)


def _wps(msg: str, desc: str) -> Fault:
    return Fault.wps_error(msg, _WPS_CODES[msg], desc, 400)


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
    """``python -m tokenvend.sandbox [--host H] [--port N] [--lifetime S]``: serve until
    SIGINT or SIGTERM; print the URL as the one line of output once serving."""
    parser = argparse.ArgumentParser(
        prog="python -m tokenvend.sandbox",
        description="Sandbox token endpoints of aspose, wps365, azure, dingtalk and oauth2.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--lifetime", type=int, default=3600, help="token lifetime, seconds")
    args = parser.parse_args(argv)
    sandbox = Sandbox(args.host, args.port, token_lifetime=args.lifetime)
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
