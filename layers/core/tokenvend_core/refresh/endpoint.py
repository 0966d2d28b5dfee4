"""Sending a token request: one attempt, with retries inside it.

Transient failures are retried with exponential backoff and full jitter, waiting at least
what `Retry-After` asks, until an overall deadline. Redirects are never followed. Requests go
out through `xray_requests`, which keeps the X-Ray patch of `requests` from recording their
URLs' query strings and their exceptions' text, and traces them itself. A request with a
client assertion gets a newly signed one for every retry (a server may refuse a `jti` it has
seen); one with a client certificate presents it from private files that live only while a
request needs them (`ClientCertificateFiles`).

Which certificate authorities are trusted is requests' choice (the `REQUESTS_CA_BUNDLE`
file when the environment names one, else its default bundle), unless the endpoint is given
a `ca_bundle`: a PEM file of the authorities to trust instead, for tests that serve https on
loopback under a CA of their own. Verification is never turned off here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenvend_core.catalogue.answer import Failure, interpret
from tokenvend_core.catalogue.request import ClientCertificate, TokenRequest
from tokenvend_core.catalogue.spec import ProviderSpec
from tokenvend_core.catalogue.urls import safe_url
from tokenvend_core.errors import ProviderUnavailable, TokenVendError
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


class ClientCertificateFiles:
    """TLS client certificates as the files `requests` needs (`cert=(cert, key)`).

    Each certificate and key is written, readable by this process's user alone (0600), into
    a directory of its own (0700, made by `tempfile.mkdtemp`), under a name keyed by a
    keyed hash of the material (HMAC with a key of this object's, so the name says nothing
    about the key to anyone else, and the same material always has the same name, which lets
    the HTTP pool keep its TLS connection). The files exist only while some request holds
    them: the last one out removes them, and the directory goes when this object does (or
    the process ends)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._salt = os.urandom(32)
        self._held: dict[str, int] = {}
        self._directory: str | None = None

    @property
    def directory(self) -> str | None:
        return self._directory

    @contextmanager
    def files(self, certificate: ClientCertificate | None) -> Iterator[tuple[str, str] | None]:
        """(certificate file, key file) for as long as the block runs; None without one."""
        if certificate is None:
            yield None
            return
        material = f"{certificate.cert_pem}\0{certificate.key_pem}".encode()
        name = hmac.new(self._salt, material, hashlib.sha256).hexdigest()[:32]
        with self._lock:
            directory = self._ensure_directory()
            paths = (os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key"))
            if not self._held.get(name):
                try:
                    _write_private(paths[0], certificate.cert_pem)
                    _write_private(paths[1], certificate.key_pem)
                except OSError:
                    _remove(paths)
                    raise
            self._held[name] = self._held.get(name, 0) + 1
        try:
            yield paths
        finally:
            with self._lock:
                self._held[name] -= 1
                if not self._held[name]:
                    del self._held[name]
                    _remove(paths)

    def _ensure_directory(self) -> str:
        if self._directory is None or not os.path.isdir(self._directory):
            self._directory = tempfile.mkdtemp(prefix="tokenvend-tls-")
            weakref.finalize(self, shutil.rmtree, self._directory, ignore_errors=True)
        return self._directory


def _write_private(path: str, text: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)  # a file left by a crash: made afresh, with these permissions
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as handle:
        handle.write(text)


def _remove(paths: tuple[str, str]) -> None:
    for path in paths:
        with suppress(FileNotFoundError):
            os.unlink(path)


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
        ca_bundle: str | None = None,
    ) -> None:
        import requests

        if ca_bundle is not None and not (isinstance(ca_bundle, str) and ca_bundle):
            raise ValueError("ca_bundle is the path of a PEM file of certificate authorities")
        self._ca_bundle = ca_bundle

        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._policy = policy or RetryPolicy()
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._jitter = jitter
        self.certificates = ClientCertificateFiles()

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
            if attempt:
                try:
                    request = request.renewed(self._clock())
                except TokenVendError as error:  # a key that signed once signs again
                    return Failure(error, permanent=True, retry=False)
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
                with self.certificates.files(request.client_cert) as cert:
                    response = send(
                        self._session,
                        request.url,
                        params=request.query or None,
                        data=request.form,
                        json=request.json_body,
                        headers=request.headers,
                        timeout=timeout,
                        cert=cert,
                        verify=self._ca_bundle,
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
