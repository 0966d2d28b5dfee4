"""Sending a token request: one attempt, with retries inside it.

Transient failures are retried with exponential backoff and full jitter, waiting at least
what `Retry-After` asks, until an overall deadline. Redirects are never followed. Requests go
out through `xray_requests`, which keeps the X-Ray patch of `requests` from recording their
URLs' query strings and their exceptions' text, and traces them itself.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenvend_core.catalogue.providers import (
    Failure,
    ProviderSpec,
    TokenRequest,
    interpret,
    safe_url,
)
from tokenvend_core.errors import ProviderUnavailable
from tokenvend_core.refresh.xray_requests import send, traced
from tokenvend_core.tokens import Token

if TYPE_CHECKING:
    import requests

USER_AGENT = "tokenvend/0.1"


def pooled_session(connections: int) -> requests.Session:
    """A session that keeps a connection per concurrent refresh: a scheduled run's workers
    reuse their TLS connections instead of opening one per token request."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=max(10, connections))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 0.25
    cap: float = 4.0
    max_tries: int = 4
    connect_timeout: float = 3.05
    read_timeout: float = 8.0


class TokenEndpoint:
    def __init__(
        self,
        session: requests.Session | None = None,
        policy: RetryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        import requests

        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._policy = policy or RetryPolicy()
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._jitter = jitter

    def fetch(
        self,
        spec: ProviderSpec,
        request: TokenRequest,
        *,
        deadline: float,
        default_lifetime: int,
        scope: str | None = None,
        on_try: Callable[[Token | Failure, float], None] | None = None,
    ) -> Token | Failure:
        """Send until a token, a failure that retrying cannot mend, or the deadline
        (a `time.monotonic()` value). Returns the last outcome; raises nothing."""
        policy = self._policy
        outcome: Token | Failure = Failure(
            ProviderUnavailable("no attempt fitted in the deadline"), permanent=False, retry=True
        )
        for attempt in range(policy.max_tries):
            remaining = deadline - self._monotonic()
            if remaining <= 0.05:
                break
            started = self._monotonic()
            outcome = self._send_once(spec, request, remaining, default_lifetime, scope)
            if on_try is not None:
                on_try(outcome, self._monotonic() - started)
            if isinstance(outcome, Token) or not outcome.retry:
                return outcome
            if attempt + 1 == policy.max_tries:
                break
            wait = self._jitter() * min(policy.cap, policy.base * 2**attempt)
            if outcome.retry_after is not None:
                wait = max(wait, outcome.retry_after)
            if self._monotonic() + wait >= deadline:
                break
            self._sleep(wait)
        return outcome

    def _send_once(
        self,
        spec: ProviderSpec,
        request: TokenRequest,
        remaining: float,
        default_lifetime: int,
        scope: str | None,
    ) -> Token | Failure:
        import requests

        policy = self._policy
        timeout = (min(policy.connect_timeout, remaining), min(policy.read_timeout, remaining))
        now = self._clock()
        where = safe_url(request.url)
        # The exceptions of requests and urllib3 name the whole URL, query string (and so,
        # for `query` client authentication, the client secret) included: only their kind
        # is ever told, here and in the trace (xray_requests.py).
        with traced(request.url) as trace:
            try:
                response = send(
                    self._session,
                    request.url,
                    params=request.query or None,
                    data=request.form,
                    json=request.json_body,
                    headers=request.headers,
                    timeout=timeout,
                )
                body = response.content
            except requests.Timeout:
                trace.failed("timeout")
                return _unavailable(f"timeout: {where} did not answer in time")
            except requests.exceptions.SSLError:
                trace.failed("TLS error")
                return _unavailable(f"TLS error: no secure connection could be made to {where}")
            except requests.ConnectionError:
                trace.failed("connection error")
                return _unavailable(f"connection error: could not reach {where}")
            except Exception as exc:  # whatever else the HTTP stack raises: its kind alone
                trace.failed(type(exc).__name__)
                return _unavailable(f"request failed ({type(exc).__name__}) to {where}")
            trace.answered(response.status_code)
        return interpret(
            spec,
            response.status_code,
            response.headers,
            body,
            request=request,
            now=now,
            default_lifetime=default_lifetime,
            requested_scope=scope,
        )


def _unavailable(message: str) -> Failure:
    return Failure(ProviderUnavailable(message), permanent=False, retry=True)
