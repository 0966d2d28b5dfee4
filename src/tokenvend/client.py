"""The Python client: tokens from the tokenvend API, kept in memory until they near expiry.

    from tokenvend.client import TokenClient, TokenAuth

    client = TokenClient()                       # TOKENVEND_API_URL, else the stack's ApiUrl
    token = client.get_token("dingtalk", "corp-a")
    requests.get(url, auth=TokenAuth(client, "dingtalk", "corp-a"))

Every request is signed with SigV4 for `execute-api` with the standard AWS credential chain
(environment, profile, container or instance role), as boto3 finds it.

The cache holds one answer per (provider, connection, min_ttl). An answer is reused until
`expires_in` minus `min_ttl + refresh_margin` seconds after it was asked for (the time the
request was sent, not the time the answer arrived: a slow answer shortens its reuse, never
lengthens it); after that the next call asks the API again. Per key, one call at a time goes
to the API: threads that arrive while it is under way wait for it and share its outcome,
answer or error. A stale answer (`"stale": true`: the service could not refresh and served
its still-valid token) is reused for at most `STALE_REUSE_SECONDS`, and never past its
expiry, so that the service is asked again soon without every call of a busy workload
reaching it.

A cached hit takes no lock: it is one dict read of an immutable entry, which holds the
token and the monotonic time until which it may be reused, and one read of the monotonic
clock. Entries are replaced whole, under a lock, never changed in place, so a reader sees
the old entry or the new one, each consistent. Locks are taken only on a miss.

Each request to the API waits `DEFAULT_TIMEOUT` by default: 5 s to connect, 35 s for the
answer. The read timeout exceeds the API's worst-case answer time (API Gateway ends every
integration at 29 s), so that a slow provider reaches the caller as the API's own 503 with
its `Retry-After` (`TokenVendError.retry_after`) rather than as an unreachable API.

`TokenAuth` answers as `requests` does: where `requests` would return a response, it returns
one. On a 401 from the target it asks for a new token and sends the request once more; when
no new token can be had (the API answers 503 inside the connection's cool-down, 429, 502,
409, 403, or cannot be reached), it logs a warning and returns the target's 401. It raises
`TokenVendError` only when it cannot get a first token, before anything is sent.

This module runs inside workloads, so it imports only requests (which `TokenAuth` extends)
at import time; boto3 and botocore are imported on first use.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import requests
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar

if TYPE_CHECKING:
    import boto3

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_WAIT_SECONDS",
    "STALE_REUSE_SECONDS",
    "TokenAuth",
    "TokenClient",
    "TokenVendError",
]

logger = logging.getLogger(__name__)

STALE_REUSE_SECONDS = 5.0
# (connect, read) seconds for each request to the API. The read timeout must exceed the
# API's worst-case answer time, API Gateway's 29 s integration limit, or a slow provider
# would show up as an unreachable API instead of the API's 503 with Retry-After.
DEFAULT_TIMEOUT = (5.0, 35.0)
# The longest Retry-After that TokenAuth waits out, once, after a 401 (see TokenAuth).
MAX_WAIT_SECONDS = 3.0
DEFAULT_STACK = "tokenvend"
_EXECUTE_API_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com")
_DEFAULT_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "authorization_required",
    429: "throttled",
    500: "internal",
    502: "provider_rejected",
    503: "provider_unavailable",
    504: "provider_unavailable",
}


class TokenVendError(Exception):
    """An error answer of the tokenvend API, or no answer at all.

    `status` is the HTTP status, or 0 when there was no usable answer (the API could not be
    reached, no credentials or region were found, the API URL is unknown). `code` is the
    contract's error code (`invalid_request`, `forbidden`, `unknown_connection`,
    `authorization_required`, `provider_rejected`, `provider_unavailable`, `internal`, ...),
    and for status 0 one of `unreachable`, `no_credentials`, `no_region`, `no_api_url`, or
    `invalid_request`: a provider or connection name the API would refuse, found by the
    client itself before any request.
    `retry_after` is the answer's Retry-After in seconds (given as seconds or as an HTTP
    date), when it has one: the API's 503 `provider_unavailable` carries it, and so may API
    Gateway's own 429 throttling answer. Messages never hold a token.
    """

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(status, code, message, retry_after)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status else ""
        return f"{self.code}: {self.message}{where}"

    def copy(self) -> TokenVendError:
        return TokenVendError(self.status, self.code, self.message, self.retry_after)


def aws_session(env: Mapping[str, str] | None = None) -> boto3.Session:
    """A boto3 Session in the region the AWS CLI and Lambda would use: AWS_REGION first, else
    boto3's own chain (AWS_DEFAULT_REGION, the profile's). `env`: default os.environ."""
    import boto3

    region = (os.environ if env is None else env).get("AWS_REGION") or None
    return boto3.session.Session(region_name=region)


def stack_outputs(session: Any, stack: str, config: Any = None) -> dict[str, str]:
    """The outputs of a CloudFormation stack, OutputKey -> OutputValue. Raises botocore's
    errors (ClientError when there is no such stack)."""
    return stack_settings(session, stack, config)[0]


def stack_settings(
    session: Any, stack: str, config: Any = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(the outputs, the parameters) of a CloudFormation stack, each name -> value, from one
    DescribeStacks. Raises botocore's errors (ClientError when there is no such stack)."""
    answer = session.client("cloudformation", config=config).describe_stacks(StackName=stack)
    found = (answer.get("Stacks") or [{}])[0]
    outputs = {
        str(out["OutputKey"]): str(out.get("OutputValue", ""))
        for out in found.get("Outputs") or []
        if "OutputKey" in out
    }
    parameters = {
        str(param["ParameterKey"]): str(param.get("ParameterValue", ""))
        for param in found.get("Parameters") or []
        if "ParameterKey" in param
    }
    return outputs, parameters


def check_names(provider: Any, connection: Any) -> None:
    """Raise TokenVendError (status 0, `invalid_request`) for a provider or connection name
    of a form the API refuses, before any request is signed or sent: the API would answer
    400, or API Gateway a confusing 403 for a name that breaks the path (`a/b`, `..`). The
    rules are the service's own (tokenvend_core.names). Whether the provider exists is the
    API's to say: a stack may deploy providers this installation's catalogue lacks."""
    from tokenvend_core.names import CONNECTION_RE, PROVIDER_RE

    if not isinstance(provider, str) or not PROVIDER_RE.fullmatch(provider):
        raise TokenVendError(
            0,
            "invalid_request",
            f"provider {_shown(provider)} is not a provider's name: lower-case letters, "
            "digits, '_' or '-', such as 'dingtalk'",
        )
    if not isinstance(connection, str) or not CONNECTION_RE.fullmatch(connection):
        raise TokenVendError(
            0,
            "invalid_request",
            f"connection {_shown(connection)} is not a connection's name: 1 to 64 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit",
        )


def _shown(name: Any) -> str:
    """A name as a message shows it: quoted, on one line, not too long."""
    if not isinstance(name, str):
        return f"of type {type(name).__name__}"
    return repr(name if len(name) <= 80 else name[:79] + "…")


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _expires_in(answer: dict[str, Any]) -> float:
    """Seconds the answer's token had left when it was sent."""
    value = answer.get("expires_in")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    expires_at = answer.get("expires_at")
    if isinstance(expires_at, str):
        from datetime import datetime

        try:
            moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
        except ValueError:
            return 0.0
        return moment.timestamp() - time.time()
    return 0.0


@dataclass(frozen=True, slots=True)
class _Entry:
    """One cached answer, never changed once made: readers take it without a lock.

    `reuse_until` and `expires` are on the monotonic clock, counted from when the request
    was sent."""

    answer: dict[str, Any]
    token: str
    sent: float
    expires: float
    reuse_until: float
    counts_down: bool  # the answer has `expires_in`, which a copy counts down

    @classmethod
    def of(cls, answer: dict[str, Any], sent: float, min_ttl: int, margin: float) -> _Entry:
        expires = sent + _expires_in(answer)
        if answer.get("stale"):
            reuse_until = sent + STALE_REUSE_SECONDS
        else:
            reuse_until = expires - (min_ttl + margin)
        # Never past the expiry, whatever min_ttl and the margin say (a negative one).
        reuse_until = min(reuse_until, expires)
        token = str(answer.get("access_token"))
        return cls(dict(answer), token, sent, expires, reuse_until, "expires_in" in answer)

    def copy(self, now: float) -> dict[str, Any]:
        """The answer as it would read now: `expires_in` counted down since it was asked for."""
        answer = self.answer.copy()
        if self.counts_down:
            answer["expires_in"] = max(0, int(self.expires - now))
        return answer


@dataclass(slots=True)
class _Slot:
    """One cache key's fetch: the lock that lets one fetch at a time through, and how the
    last one ended. The entry itself lives in `TokenClient._entries`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    fetches: int = 0  # completed fetches; a waiter that sees it move shares the outcome
    error: TokenVendError | None = None  # the outcome of the last fetch, when it failed


class TokenClient:
    """Tokens from the tokenvend API, signed with the standard AWS credential chain.

    `api_url`: the API's base URL (for a deployed stack `https://ID.execute-api.REGION.
    amazonaws.com/v1`); default `TOKENVEND_API_URL`, else the `ApiUrl` output of the stack
    `stack` (default `TOKENVEND_STACK`, else `tokenvend`), read once on first use.
    `region`: the region to sign for; default `AWS_REGION`, else the session's (boto3's
    `AWS_DEFAULT_REGION`, the profile), else the one in an execute-api URL. `session`: a
    boto3 Session for credentials and region.
    `refresh_margin`: seconds, on top of `min_ttl`, before a cached token's expiry at which
    the API is asked again. `timeout`: for each request to the API, as `requests` takes it:
    seconds for both connecting and the answer, or a (connect, read) pair; default
    `DEFAULT_TIMEOUT`, (5, 35). Keep the read timeout above API Gateway's 29 s integration
    limit: the API may take that long to answer 503, and a shorter timeout turns its answer
    into an `unreachable` error without `retry_after`.
    """

    def __init__(
        self,
        api_url: str | None = None,
        *,
        region: str | None = None,
        session: boto3.Session | None = None,
        stack: str | None = None,
        refresh_margin: int = 60,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self._api_url = api_url.rstrip("/") if api_url else None
        self._region = region
        self._session = session
        self._stack = stack
        self.refresh_margin = refresh_margin
        self.timeout = timeout
        self._setup = threading.Lock()
        self._credentials: Any = None
        # The clock every deadline is on; bound once, read once per cached hit.
        self._clock: Callable[[], float] = time.monotonic
        # The cache: read without a lock, written only under `_slots_lock`.
        self._entries: dict[tuple[str, str, int], _Entry] = {}
        self._slots: dict[tuple[str, str, int], _Slot] = {}
        self._slots_lock = threading.Lock()
        self._refresh_locks: dict[tuple[str, str], threading.Lock] = {}
        self._latest: dict[tuple[str, str], _Entry] = {}
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"TokenClient(api_url={self._api_url!r})"

    # -- public ----------------------------------------------------------------------------

    def get_token(self, provider: str, connection: str, min_ttl: int = 300) -> str:
        """An access token with at least `min_ttl` seconds left (see the API's exceptions)."""
        # The cached path: no lock, one dict read, one clock read. An entry exists only for
        # names that passed check_names; anything else (a miss, an unhashable argument)
        # goes the long way, which checks the names.
        try:
            entry = self._entries[provider, connection, min_ttl]
        except (KeyError, TypeError):
            pass
        else:
            if self._clock() < entry.reuse_until:
                return entry.token
        return str(self._fetch(provider, connection, min_ttl)["access_token"])

    def get(self, provider: str, connection: str, min_ttl: int = 300) -> dict[str, Any]:
        """The API's whole answer: access_token, token_type, expires_at, expires_in, ..."""
        try:
            entry = self._entries[provider, connection, min_ttl]
        except (KeyError, TypeError):
            pass
        else:
            now = self._clock()
            if now < entry.reuse_until:
                # entry.copy(now), inlined. now < reuse_until <= expires, so the seconds left
                # are positive and need no clamping; float.__trunc__ is int() without the
                # cost of calling a type (a third of this path).
                answer = entry.answer.copy()
                if entry.counts_down:
                    answer["expires_in"] = (entry.expires - now).__trunc__()
                return answer
        return self._fetch(provider, connection, min_ttl)

    def _fetch(self, provider: str, connection: str, min_ttl: int) -> dict[str, Any]:
        """A miss: one fetch at a time per key; those who waited for it share its outcome."""
        check_names(provider, connection)
        key = (provider, connection, min_ttl)
        slot = self._slot(key)
        seen = slot.fetches
        with slot.lock:
            now = self._clock()
            entry = self._entries.get(key)
            if slot.fetches != seen:
                # A fetch finished while this thread waited: its outcome is as fresh as any.
                if slot.error is not None:
                    raise slot.error.copy()
                if entry is not None and now < entry.expires:
                    return entry.copy(now)
            if entry is not None and now < entry.reuse_until:
                return entry.copy(now)
            sent = now
            try:
                answer = self._call(provider, connection, query={"min_ttl": str(min_ttl)})
            except TokenVendError as error:
                slot.error = error
                slot.fetches += 1
                raise
            entry = _Entry.of(answer, sent, min_ttl, self.refresh_margin)
            pair = (provider, connection)
            with self._slots_lock:
                # A refresh asked for after this request was sent has the newer answer.
                current = self._entries.get(key)
                if current is None or current.sent <= sent:
                    self._entries[key] = entry
                latest = self._latest.get(pair)
                if latest is None or latest.sent <= sent:
                    self._latest[pair] = entry
            slot.error = None
            slot.fetches += 1
            return dict(answer)

    def refresh(
        self, provider: str, connection: str, rejected_token: str | None = None
    ) -> dict[str, Any]:
        """A new token: POST .../refresh. With `rejected_token` (a token the target refused),
        the service replaces that token unless it already has; without, it always fetches a
        new one. Drops the connection's cached entries and caches the new answer. One refresh
        of a connection at a time: when another thread has already replaced the rejected
        token, its answer is returned without asking the API again."""
        check_names(provider, connection)
        pair = (provider, connection)
        with self._slots_lock:
            lock = self._refresh_locks.setdefault(pair, threading.Lock())
        with lock:
            if rejected_token is not None:
                self._forget(pair, rejected_token)
                latest = self._latest.get(pair)
                now = self._clock()
                if latest is not None and now < latest.expires:
                    # Another thread already replaced the rejected token.
                    return latest.copy(now)
            else:
                self._forget(pair, None)
            body = None
            if rejected_token is not None:
                from hashlib import sha256

                digest = sha256(rejected_token.encode("utf-8")).hexdigest()
                body = {"rejected_token_sha256": digest}
            sent = self._clock()
            answer = self._call(provider, connection, refresh=True, body=body)
            with self._slots_lock:
                for key in self._slots:
                    if key[:2] == pair:
                        self._entries[key] = _Entry.of(answer, sent, key[2], self.refresh_margin)
                self._latest[pair] = _Entry.of(answer, sent, 0, self.refresh_margin)
            return dict(answer)

    def clear(self) -> None:
        """Forget every cached token."""
        with self._slots_lock:
            self._entries.clear()
            self._latest.clear()

    # -- cache -----------------------------------------------------------------------------

    def _slot(self, key: tuple[str, str, int]) -> _Slot:
        slot = self._slots.get(key)
        if slot is None:
            with self._slots_lock:
                slot = self._slots.setdefault(key, _Slot())
        return slot

    def _forget(self, pair: tuple[str, str], token: str | None) -> None:
        """Drop the connection's entries (only those holding `token`, when given)."""
        with self._slots_lock:
            for key, entry in list(self._entries.items()):
                if key[:2] == pair and token in (None, entry.token):
                    del self._entries[key]
            latest = self._latest.get(pair)
            if latest is not None and token in (None, latest.token):
                del self._latest[pair]

    # -- HTTP ------------------------------------------------------------------------------

    def _boto_session(self) -> Any:
        if self._session is None:
            self._session = aws_session()
        return self._session

    def api_url(self) -> str:
        """The API's base URL (resolved once: argument, TOKENVEND_API_URL, stack output)."""
        if self._api_url:
            return self._api_url
        with self._setup:
            if not self._api_url:
                url = os.environ.get("TOKENVEND_API_URL", "").strip()
                if not url:
                    url = self._url_from_stack()
                self._api_url = url.rstrip("/")
        return self._api_url

    def _url_from_stack(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        stack = self._stack or os.environ.get("TOKENVEND_STACK") or DEFAULT_STACK
        try:
            url = stack_outputs(self._boto_session(), stack).get("ApiUrl", "")
        except (BotoCoreError, ClientError) as exc:
            raise TokenVendError(
                0,
                "no_api_url",
                f"cannot read the ApiUrl output of stack {stack!r} ({_one_line(str(exc))}); "
                "set TOKENVEND_API_URL or pass api_url",
            ) from None
        if not url:
            raise TokenVendError(
                0, "no_api_url", f"stack {stack!r} has no ApiUrl output; set TOKENVEND_API_URL"
            )
        return url

    def _signing(self, url: str) -> tuple[Any, str]:
        """Frozen credentials and the region to sign for."""
        with self._setup:
            if self._credentials is None:
                try:
                    self._credentials = self._boto_session().get_credentials()
                except Exception as exc:  # botocore's providers raise many kinds
                    raise TokenVendError(
                        0,
                        "no_credentials",
                        f"cannot load AWS credentials ({type(exc).__name__}: "
                        f"{_one_line(str(exc), 200)})",
                    ) from None
            region = self._region or self._boto_session().region_name
            if not region:
                host = urlsplit(url).hostname or ""
                match = _EXECUTE_API_HOST.search(host)
                region = match.group(1) if match else None
            if not region:
                raise TokenVendError(
                    0, "no_region", "no AWS region to sign for: set AWS_REGION or pass region"
                )
            self._region = region
        if self._credentials is None:
            raise TokenVendError(
                0,
                "no_credentials",
                "no AWS credentials found (environment, profile, container or instance role)",
            )
        try:
            frozen = self._credentials.get_frozen_credentials()
        except Exception as exc:  # a refresh of temporary credentials failed
            raise TokenVendError(
                0,
                "no_credentials",
                f"cannot refresh AWS credentials ({type(exc).__name__}: "
                f"{_one_line(str(exc), 200)})",
            ) from None
        return frozen, region

    def _http(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "http", None)
        if session is None:
            session = requests.Session()
            self._local.http = session
        return session

    def _call(
        self,
        provider: str,
        connection: str,
        *,
        query: dict[str, str] | None = None,
        refresh: bool = False,
        body: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        base = self.api_url()
        path = f"/tokens/{quote(provider, safe='')}/{quote(connection, safe='')}"
        url = base + path + ("/refresh" if refresh else "")
        if query:
            url += "?" + urlencode(query)
        method = "POST" if refresh else "GET"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        credentials, region = self._signing(url)
        signed = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(credentials, "execute-api", region).add_auth(signed)
        try:
            response = self._http().request(
                method,
                url,
                data=data,
                headers=dict(signed.headers.items()),
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.ReadTimeout:
            read = self.timeout[1] if isinstance(self.timeout, tuple) else self.timeout
            raise TokenVendError(
                0,
                "unreachable",
                f"no answer from the tokenvend API at {base} within {read:g} s (ReadTimeout)",
            ) from None
        except requests.RequestException as exc:
            raise TokenVendError(
                0,
                "unreachable",
                f"cannot reach the tokenvend API at {base} ({type(exc).__name__})",
            ) from None
        return self._read(response)

    @staticmethod
    def _read(response: requests.Response) -> dict[str, Any]:
        return read_answer(response)


def read_answer(response: requests.Response, *, token: bool = True) -> dict[str, Any]:
    """The API's JSON answer, or its error (the contract's error body, or API Gateway's own)
    as a TokenVendError with the answer's Retry-After. With `token`, a success must hold an
    access token."""
    status = response.status_code
    try:
        data = response.json()
    except ValueError:
        data = None
    if 200 <= status < 300:
        if token and isinstance(data, dict) and isinstance(data.get("access_token"), str):
            return data
        if not token and isinstance(data, dict):
            return data
        what = "answered without a token" if token else "answered with no JSON object"
        raise TokenVendError(status, "bad_answer", f"the API {what}")
    code = _DEFAULT_CODES.get(status, f"http_{status}")
    message = response.reason or "error"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
    elif isinstance(data, dict) and isinstance(data.get("message"), str):
        message = data["message"]  # API Gateway's own answer format
    from tokenvend_core.tokens import retry_after

    wait = retry_after(response.headers.get("Retry-After"))
    raise TokenVendError(status, code, _one_line(message), wait)


class TokenAuth(AuthBase):
    """requests authentication with a tokenvend token.

    Sets `Authorization: <token_type> <token>`. When the target answers 401, reports the
    refused token to tokenvend (`TokenClient.refresh` with `rejected_token`), then sends the
    request once more, with the new token and the same body; the caller gets that answer,
    with the 401 in its `history`. A second 401 is returned as it is.

    Where `requests` would return a response, TokenAuth returns one; it never raises for
    the target's answer. When no new token can be had after a 401 (the API answers 503
    inside the connection's cool-down, 429, 502, 409, 403, or cannot be reached), or the
    API serves the same token again, it logs a warning (naming the connection and the
    error, never a token) and returns the target's 401, its body unread and readable.
    One wait is allowed: when the API answers 503 or 429 with a Retry-After of at most
    `max_wait` seconds (default `MAX_WAIT_SECONDS`, 3), it waits that long and asks once
    more; a longer or missing Retry-After is not waited for. A 401 thus costs at most two
    calls to the API (each within the client's `timeout`) and one wait of at most
    `max_wait` seconds before the caller has an answer.
    A request whose body cannot be sent again (a generator, a file that cannot seek) is not
    resent: the token is reported and the 401 returned.

    Getting the first token, before anything is sent, may fail: then TokenAuth raises the
    `TokenVendError` (with its `status`, `code` and `retry_after`) out of the `requests`
    call, because there is no answer of the target to return. An error sending the retry
    to the target is raised as `requests` raises it for any request.
    """

    _sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(
        self,
        client: TokenClient,
        provider: str,
        connection: str,
        min_ttl: int = 300,
        *,
        max_wait: float = MAX_WAIT_SECONDS,
    ) -> None:
        self.client = client
        self.provider = provider
        self.connection = connection
        self.min_ttl = min_ttl
        self.max_wait = max_wait

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        answer = self.client.get(self.provider, self.connection, self.min_ttl)
        token = str(answer["access_token"])
        r.headers["Authorization"] = _authorization(answer)
        position = _body_position(r.body)

        def on_response(response: requests.Response, **kwargs: Any) -> requests.Response:
            return self._handle_401(response, token, position, **kwargs)

        r.register_hook("response", on_response)
        return r

    def _handle_401(
        self, response: requests.Response, token: str, position: int | None, **kwargs: Any
    ) -> requests.Response:
        request = response.request
        if response.status_code != 401 or getattr(request, "_tokenvend_retried", False):
            return response
        answer = self._new_token(token)
        if answer is None:
            return response
        if answer.get("access_token") == token:
            self._warn("the API served the same token again")
            return response
        body = request.body
        if not _rewind(body, position):
            self._warn("the request's body cannot be sent again")
            return response
        response.content  # noqa: B018 - read the body so that the connection can be reused
        response.close()
        retry = request.copy()
        jar = retry._cookies  # type: ignore[attr-defined]
        extract_cookies_to_jar(jar, request, response.raw)
        retry.prepare_cookies(jar)
        retry.headers["Authorization"] = _authorization(answer)
        retry._tokenvend_retried = True  # type: ignore[attr-defined]
        connection = response.connection
        sent: requests.Response = connection.send(retry, **kwargs)
        sent.history.append(response)
        sent.request = retry
        return sent

    def _new_token(self, rejected: str) -> dict[str, Any] | None:
        """The API's answer to the report of `rejected`, or None when it gave no token."""
        waited = False
        while True:
            try:
                return self.client.refresh(self.provider, self.connection, rejected_token=rejected)
            except TokenVendError as error:
                wait = error.retry_after
                if (
                    not waited
                    and error.status in (429, 503)
                    and wait is not None
                    and wait <= self.max_wait
                ):
                    waited = True
                    self._sleep(wait)
                    continue
                later = f", retry after {math.ceil(wait)} s" if wait is not None else ""
                self._warn(f"no new token ({error}{later})")
                return None

    def _warn(self, why: str) -> None:
        logger.warning(
            "tokenvend: the target refused the token of %s/%s (HTTP 401) and it was not "
            "retried: %s; returning the 401",
            self.provider,
            self.connection,
            why,
        )

    def __repr__(self) -> str:
        return f"TokenAuth({self.provider}/{self.connection}, min_ttl={self.min_ttl})"


def _body_position(body: Any) -> int | None:
    """Where a file-like body starts, to send it again after a 401."""
    if body is None or not hasattr(body, "tell"):
        return None
    try:
        position: int = body.tell()
    except (OSError, ValueError):  # not seekable, or closed
        return None
    return position


def _rewind(body: Any, position: int | None) -> bool:
    """Make `body` ready to be sent again; False when it cannot be."""
    if body is None or isinstance(body, bytes | bytearray | memoryview | str):
        return True
    if position is None or not hasattr(body, "seek"):
        return False  # a generator, or a file that could not tell where it started
    try:
        body.seek(position)
    except (OSError, ValueError):
        return False
    return True


def _authorization(answer: dict[str, Any]) -> str:
    return f"{answer.get('token_type') or 'Bearer'} {answer['access_token']}"
