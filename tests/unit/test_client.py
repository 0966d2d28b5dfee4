"""TokenClient and TokenAuth against real HTTP servers on 127.0.0.1.

`FakeApi` plays the tokenvend API and checks every request's SigV4 signature the way
API Gateway does: it recomputes the signature with botocore over the request it received,
with the fixed test credentials, and refuses a mismatch with 403. `Target` plays a
third-party API that accepts some tokens and answers 401 to the others.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from servers import LoopbackServer, send_json
from support import FakeClock
from tokenvend.client import STALE_REUSE_SECONDS, TokenAuth, TokenClient, TokenVendError

ACCESS_KEY = "AKIAFAKEFORTESTS0001"
SECRET_KEY = "fake-secret-key-for-tokenvend-tests"
SESSION_TOKEN = "fake-session-token"
REGION = "eu-west-1"
AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


HANG_UP = "hang up"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def signature_problem(method: str, url: str, headers: Any, body: bytes) -> str | None:
    """None when the request carries a valid SigV4 signature by the test credentials."""
    match = AUTH_RE.fullmatch(headers.get("Authorization", ""))
    if not match:
        return "no SigV4 Authorization header"
    if match["key"] != ACCESS_KEY:
        return "unknown access key"
    if (match["region"], match["service"]) != (REGION, "execute-api"):
        return f"signed for {match['region']}/{match['service']}"
    if headers.get("X-Amz-Security-Token") != SESSION_TOKEN:
        return "session token missing"
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and x-amz-date must be signed"
    request = AWSRequest(
        method=method, url=url, data=body, headers={name: headers[name] for name in signed}
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "execute-api", REGION)
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    if not hmac.compare_digest(expected, match["signature"]):
        return "signature mismatch"
    return None


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes


class FakeApi(LoopbackServer):
    """The tokenvend API: GET serves the current token, POST .../refresh replaces it unless
    the rejected token's hash names an older one. Tokens are tok-1, tok-2, ..."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.refused: list[str] = []
        self.issued = 0
        self.expires_in = 3600
        self.stale = False
        self.error: tuple[int, dict[str, Any], dict[str, str]] | None = None
        # Scripted outcomes of the next refresh calls, first first: an error answer, or
        # HANG_UP (close the connection without answering). When empty, refreshes succeed.
        self.refresh_errors: list[tuple[int, dict[str, Any], dict[str, str]] | str] = []
        self.delay = 0.0  # seconds every answer is held back (a slow provider behind the API)
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.on_request: Callable[[], None] | None = None  # run as each request is handled
        self._lock = threading.Lock()
        self.serve()
        self.url = self.base_url

    @property
    def token(self) -> str:
        return f"tok-{self.issued}"

    def get_calls(self) -> list[Call]:
        return [call for call in self.calls if call.method == "GET"]

    def refresh_calls(self) -> list[Call]:
        return [call for call in self.calls if call.method == "POST"]

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        body = http.rfile.read(int(http.headers.get("Content-Length") or 0))
        url = f"http://{http.headers['Host']}{http.path}"
        problem = signature_problem(http.command, url, http.headers, body)
        if problem:
            with self._lock:
                self.refused.append(problem)
            send_json(http, 403, {"error": {"code": "forbidden", "message": problem}})
            return
        parts = urlsplit(http.path)
        with self._lock:
            self.calls.append(Call(http.command, parts.path, parse_qs(parts.query), body))
        self.entered.set()
        if self.on_request is not None:
            self.on_request()
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        scripted = self.error
        if http.command == "POST" and self.refresh_errors:
            with self._lock:
                outcome = self.refresh_errors.pop(0)
            if outcome == HANG_UP:
                http.close_connection = True
                return
            assert not isinstance(outcome, str)
            scripted = outcome
        if scripted is not None:
            status, failure, headers = scripted
            send_json(http, status, failure, headers)
            return
        segments = parts.path.strip("/").split("/")
        with self._lock:
            if http.command == "POST":
                rejected = json.loads(body).get("rejected_token_sha256") if body else None
                if rejected is None or rejected == sha256(self.token):
                    self.issued += 1
            elif self.issued == 0:
                self.issued = 1
            answer: dict[str, Any] = {
                "provider": segments[1],
                "connection": segments[2],
                "access_token": self.token,
                "token_type": "Bearer",
                "expires_at": "2030-01-01T00:00:00Z",
                "expires_in": self.expires_in,
            }
        if self.stale:
            answer["stale"] = True
            answer["refresh_error"] = {"code": "provider_unavailable", "message": "down"}
        send_json(http, 200, answer, {"Cache-Control": "no-store"})


class Target(LoopbackServer):
    """A third-party API: 200 for the tokens in `good`, 401 for any other."""

    def __init__(self, good: set[str]) -> None:
        self.good = good
        self.seen: list[tuple[str, bytes]] = []
        self.serve()
        self.url = f"{self.base_url}/work"

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        body = http.rfile.read(int(http.headers.get("Content-Length") or 0))
        authorization = http.headers.get("Authorization", "")
        self.seen.append((authorization, body))
        ok = authorization.removeprefix("Bearer ") in self.good
        data = b"hello" if ok else b'{"error": "invalid_token"}'
        http.send_response(200 if ok else 401)
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "TOKENVEND_API_URL", "TOKENVEND_STACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    yield server
    if server.gate is not None:
        server.gate.set()
    server.close()


@pytest.fixture
def client(api: FakeApi) -> TokenClient:
    return TokenClient(api.url)


# -- signing --------------------------------------------------------------------------------


def test_requests_are_signed_for_execute_api(api: FakeApi, client: TokenClient) -> None:
    answer = client.get("dingtalk", "corp-a", min_ttl=120)
    assert answer["access_token"] == "tok-1"
    assert api.refused == []
    [call] = api.calls
    assert (call.path, call.query) == ("/tokens/dingtalk/corp-a", {"min_ttl": ["120"]})


def test_signed_post_body_is_checked_too(api: FakeApi, client: TokenClient) -> None:
    client.get("dingtalk", "corp-a")
    client.refresh("dingtalk", "corp-a", rejected_token="tok-1")
    assert api.refused == []
    assert json.loads(api.refresh_calls()[0].body) == {"rejected_token_sha256": sha256("tok-1")}


def test_a_wrong_secret_key_is_refused(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given credentials the API does not know the secret of
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-right-key")
    # When / Then
    with pytest.raises(TokenVendError) as caught:
        TokenClient(api.url).get_token("dingtalk", "corp-a")
    assert (caught.value.status, caught.value.code) == (403, "forbidden")
    assert api.refused == ["signature mismatch"]
    assert api.calls == []


def test_api_url_from_the_environment(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENVEND_API_URL", api.url + "/")
    assert TokenClient().get_token("azure", "graph") == "tok-1"
    assert api.calls[0].path == "/tokens/azure/graph"


def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    with pytest.raises(TokenVendError) as caught:
        TokenClient("http://127.0.0.1:9").get_token("dingtalk", "corp-a")
    assert (caught.value.status, caught.value.code) == (0, "no_credentials")


# -- the cache ------------------------------------------------------------------------------


def test_many_calls_one_api_call(api: FakeApi, client: TokenClient) -> None:
    tokens = {client.get_token("dingtalk", "corp-a") for _ in range(100)}
    assert tokens == {"tok-1"}
    assert len(api.calls) == 1


def test_fifty_threads_at_once_make_one_api_call(api: FakeApi, client: TokenClient) -> None:
    # Given an API that holds the first request until every thread is waiting
    api.gate = threading.Event()
    results: list[str] = []
    start = threading.Barrier(50)

    def worker() -> None:
        start.wait()
        results.append(client.get_token("dingtalk", "corp-a"))

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for thread in threads:
        thread.start()
    assert api.entered.wait(10)
    time.sleep(0.2)  # let the other 49 pile up behind the first (no timing is asserted)
    api.gate.set()
    for thread in threads:
        thread.join(10)
    # Then
    assert results == ["tok-1"] * 50
    assert len(api.calls) == 1


def test_waiting_threads_share_an_error(api: FakeApi, client: TokenClient) -> None:
    api.gate = threading.Event()
    api.error = (503, {"error": {"code": "provider_unavailable", "message": "down"}}, {})
    codes: list[str] = []

    def worker() -> None:
        try:
            client.get_token("dingtalk", "corp-a")
        except TokenVendError as error:
            codes.append(error.code)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    assert api.entered.wait(10)
    time.sleep(0.2)
    api.gate.set()
    for thread in threads:
        thread.join(10)
    assert codes == ["provider_unavailable"] * 20
    assert len(api.calls) == 1


def test_min_ttl_values_are_cached_apart(api: FakeApi, client: TokenClient) -> None:
    for _ in range(3):
        client.get_token("dingtalk", "corp-a", min_ttl=300)
        client.get_token("dingtalk", "corp-a", min_ttl=600)
    assert sorted(call.query["min_ttl"][0] for call in api.calls) == ["300", "600"]


def test_connections_are_cached_apart(api: FakeApi, client: TokenClient) -> None:
    client.get_token("dingtalk", "corp-a")
    client.get_token("dingtalk", "corp-b")
    client.get_token("aspose", "corp-a")
    assert [call.path for call in api.calls] == [
        "/tokens/dingtalk/corp-a",
        "/tokens/dingtalk/corp-b",
        "/tokens/aspose/corp-a",
    ]


def test_an_entry_is_reused_until_min_ttl_plus_margin_before_expiry(api: FakeApi) -> None:
    # Given a token with 400 s left, min_ttl 300 and a margin of 60: 40 s of reuse
    clock = FakeClock(1000.0)
    client = TokenClient(api.url, refresh_margin=60)
    client._clock = clock
    api.expires_in = 400
    client.get_token("dingtalk", "corp-a", min_ttl=300)
    # When 39 s have passed, Then the entry serves, its expires_in counted down
    clock.now += 39
    assert client.get("dingtalk", "corp-a", min_ttl=300)["expires_in"] == 361
    assert len(api.calls) == 1
    # When 41 s have passed, Then the API is asked again
    clock.now += 2
    client.get_token("dingtalk", "corp-a", min_ttl=300)
    assert len(api.calls) == 2


def test_reuse_is_counted_from_when_the_request_was_sent(api: FakeApi) -> None:
    # Given an answer that takes 30 s to arrive: a token with 400 s left when the API
    # answered, asked for with min_ttl 300 and a margin of 60
    clock = FakeClock(1000.0)
    client = TokenClient(api.url, refresh_margin=60)
    client._clock = clock
    api.expires_in = 400
    api.on_request = lambda: clock.advance(30)
    client.get_token("dingtalk", "corp-a", min_ttl=300)  # sent at 1000, arrived at 1030
    api.on_request = None
    # When 39 s have passed since it was sent, Then the memory serves it
    clock.now = 1039.0
    assert client.get_token("dingtalk", "corp-a", min_ttl=300) == "tok-1"
    assert len(api.calls) == 1
    # When 41 s have (11 s since it arrived), Then the API is asked again: by the API's
    # clock the token may have less than 300 + 60 s left
    clock.now = 1041.0
    client.get_token("dingtalk", "corp-a", min_ttl=300)
    assert len(api.calls) == 2


def test_a_cached_token_is_never_served_past_its_expiry(api: FakeApi) -> None:
    # Given a caller whose min_ttl and margin add up to less than nothing
    clock = FakeClock(1000.0)
    client = TokenClient(api.url, refresh_margin=0)
    client._clock = clock
    api.expires_in = 100
    client.get_token("dingtalk", "corp-a", min_ttl=-50)
    # When the token has a moment left, Then the memory serves it, with what it has left
    clock.now = 1099.5
    assert client.get("dingtalk", "corp-a", min_ttl=-50)["expires_in"] == 0
    assert len(api.calls) == 1
    # When it has expired, Then the API is asked, though min_ttl would allow 50 s more
    clock.now = 1100.0
    client.get_token("dingtalk", "corp-a", min_ttl=-50)
    assert len(api.calls) == 2


def test_threads_missing_an_expired_entry_at_once_make_one_api_call(api: FakeApi) -> None:
    # Given a cached token that has just stopped being reusable
    clock = FakeClock(1000.0)
    client = TokenClient(api.url)
    client._clock = clock
    client.get_token("dingtalk", "corp-a")
    clock.advance(3600 - 300 - 60)
    # and an API that holds the next request until every thread is waiting
    api.gate = threading.Event()
    api.entered.clear()
    results: list[str] = []
    start = threading.Barrier(20)

    def worker() -> None:
        start.wait()
        results.append(client.get_token("dingtalk", "corp-a"))

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    assert api.entered.wait(10)
    time.sleep(0.2)  # let the other 19 pile up behind the first (no timing is asserted)
    api.gate.set()
    for thread in threads:
        thread.join(10)
    # Then one request between them, and all got its answer
    assert len(api.calls) == 2
    assert results == ["tok-1"] * 20


def test_changing_an_answer_does_not_change_the_memory(api: FakeApi, client: TokenClient) -> None:
    first = client.get("dingtalk", "corp-a")  # fetched
    first["access_token"], first["expires_in"] = "changed", 0
    second = client.get("dingtalk", "corp-a")  # from memory
    second["access_token"] = "changed again"
    assert client.get_token("dingtalk", "corp-a") == "tok-1"
    third = client.get("dingtalk", "corp-a")
    assert (third["access_token"], third["expires_in"] > 3000) == ("tok-1", True)
    assert len(api.calls) == 1


def test_a_token_shorter_than_min_ttl_is_not_reused(api: FakeApi, client: TokenClient) -> None:
    api.expires_in = 100  # the provider's tokens live shorter than the caller asks
    client.get_token("dingtalk", "corp-a", min_ttl=300)
    client.get_token("dingtalk", "corp-a", min_ttl=300)
    assert len(api.calls) == 2


def test_a_stale_answer_is_reused_briefly_and_never_past_expiry(api: FakeApi) -> None:
    clock = FakeClock(1000.0)
    client = TokenClient(api.url, refresh_margin=0)
    client._clock = clock
    api.stale, api.expires_in = True, 1000
    # A stale answer comes back as it is
    answer = client.get("dingtalk", "corp-a", min_ttl=0)
    assert answer["stale"] is True and answer["access_token"] == "tok-1"
    clock.now += STALE_REUSE_SECONDS - 1
    client.get("dingtalk", "corp-a", min_ttl=0)
    assert len(api.calls) == 1
    # but not for long, though it has 1000 s left
    clock.now += 2
    client.get("dingtalk", "corp-a", min_ttl=0)
    assert len(api.calls) == 2
    # and never past its expiry
    api.expires_in = 2
    client.clear()
    client.get("dingtalk", "corp-a", min_ttl=0)
    clock.now += 2.5
    client.get("dingtalk", "corp-a", min_ttl=0)
    assert len(api.calls) == 4


# -- errors ---------------------------------------------------------------------------------


def test_error_answers_raise_with_status_code_and_retry_after(
    api: FakeApi, client: TokenClient
) -> None:
    api.error = (
        503,
        {"error": {"code": "provider_unavailable", "message": "dingtalk timed out"}},
        {"Retry-After": "7"},
    )
    with pytest.raises(TokenVendError) as caught:
        client.get_token("dingtalk", "corp-a")
    error = caught.value
    assert (error.status, error.code, error.retry_after) == (503, "provider_unavailable", 7.0)
    assert error.message == "dingtalk timed out"
    assert "provider_unavailable: dingtalk timed out" in str(error)
    # Errors are not cached
    with pytest.raises(TokenVendError):
        client.get_token("dingtalk", "corp-a")
    assert len(api.calls) == 2


def test_unknown_connection(api: FakeApi, client: TokenClient) -> None:
    api.error = (404, {"error": {"code": "unknown_connection", "message": "no secret"}}, {})
    with pytest.raises(TokenVendError) as caught:
        client.get("dingtalk", "nope")
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
        404,
        "unknown_connection",
        None,
    )


@pytest.mark.parametrize(
    ("provider", "connection", "expected"),
    [
        ("DingTalk", "corp-a", "provider 'DingTalk' is not a provider's name"),
        ("ding/talk", "corp-a", "provider 'ding/talk' is not a provider's name"),
        ("", "corp-a", "provider '' is not a provider's name"),
        ("dingtalk", "corp a", "connection 'corp a' is not a connection's name"),
        ("dingtalk", "a/b", "connection 'a/b' is not a connection's name"),
        ("dingtalk", "..", "connection '..' is not a connection's name"),
        ("dingtalk", "x" * 65, "is not a connection's name: 1 to 64 letters"),
        ("dingtalk", None, "connection of type NoneType is not a connection's name"),
        (["dingtalk"], "corp-a", "provider of type list is not a provider's name"),
    ],
)
def test_a_malformed_name_is_refused_before_any_request(
    api: FakeApi, client: TokenClient, provider: Any, connection: Any, expected: str
) -> None:
    # When / Then: get, get_token and refresh all refuse it with the client's own error
    calls = (
        lambda: client.get(provider, connection),
        lambda: client.get_token(provider, connection),
        lambda: client.refresh(provider, connection),
        lambda: client.refresh(provider, connection, rejected_token="tok-1"),
    )
    for call in calls:
        with pytest.raises(TokenVendError) as caught:
            call()
        assert (caught.value.status, caught.value.code) == (0, "invalid_request")
        assert expected in caught.value.message
    # and nothing reached the API, signed or not
    assert api.calls == [] and api.refused == []


def test_names_of_every_form_the_api_takes_are_let_through(
    api: FakeApi, client: TokenClient
) -> None:
    # A provider this installation's catalogue does not know may be deployed: the API says.
    for provider, connection in [("dingtalk", "corp-a"), ("entra-v1", "A.b_c-9"), ("new", "x")]:
        assert client.get_token(provider, connection) == "tok-1"
    assert [call.path for call in api.calls] == [
        "/tokens/dingtalk/corp-a",
        "/tokens/entra-v1/A.b_c-9",
        "/tokens/new/x",
    ]


def test_token_auth_with_a_malformed_name_sends_nothing(
    api: FakeApi, client: TokenClient, target: Target
) -> None:
    with pytest.raises(TokenVendError) as caught:
        requests.get(target.url, auth=TokenAuth(client, "dingtalk", "corp/a"), timeout=10)
    assert caught.value.code == "invalid_request"
    assert api.calls == [] and target.seen == []


def test_an_answer_without_a_body_format_still_raises(api: FakeApi, client: TokenClient) -> None:
    api.error = (403, {"message": "Missing Authentication Token"}, {})
    with pytest.raises(TokenVendError) as caught:
        client.get("dingtalk", "corp-a")
    assert (caught.value.code, caught.value.message) == (
        "forbidden",
        "Missing Authentication Token",
    )


def test_an_unreachable_api() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]
    with pytest.raises(TokenVendError) as caught:
        TokenClient(f"http://127.0.0.1:{port}", timeout=2).get_token("dingtalk", "corp-a")
    assert (caught.value.status, caught.value.code) == (0, "unreachable")


def test_the_default_timeouts_outlast_api_gateway(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a record of the timeout every request to the API is sent with
    timeouts: list[Any] = []
    request = requests.Session.request

    def recording(self: requests.Session, *args: Any, **kwargs: Any) -> requests.Response:
        timeouts.append(kwargs.get("timeout"))
        return request(self, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", recording)
    client = TokenClient(api.url)
    # When
    client.get_token("dingtalk", "corp-a")
    client.refresh("dingtalk", "corp-a", rejected_token="tok-1")
    # Then the client waits for an answer longer than API Gateway's 29 s integration limit
    # (the API's worst case), and gives up on connecting quickly
    assert len(timeouts) == 2
    for timeout in timeouts:
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        assert read > 29
        assert connect <= 10


def test_a_slow_answer_reaches_the_caller_as_the_apis_503(api: FakeApi) -> None:
    # Given an API whose answer, a 503, takes a while (scaled down: 0.3 s)
    api.delay = 0.3
    api.error = (
        503,
        {"error": {"code": "provider_unavailable", "message": "dingtalk timed out"}},
        {"Retry-After": "7"},
    )
    # When the client's read timeout is shorter than that, Then the answer is lost
    with pytest.raises(TokenVendError) as caught:
        TokenClient(api.url, timeout=(2, 0.1)).get_token("dingtalk", "corp-a")
    assert (caught.value.status, caught.value.code) == (0, "unreachable")
    assert "within 0.1 s" in caught.value.message
    # When it is longer, Then the caller gets the API's own answer and when to come back
    with pytest.raises(TokenVendError) as caught:
        TokenClient(api.url, timeout=(2, 5)).get_token("dingtalk", "corp-a")
    error = caught.value
    assert (error.status, error.code, error.retry_after) == (503, "provider_unavailable", 7.0)


def test_api_gateway_throttling_surfaces_retry_after(api: FakeApi, client: TokenClient) -> None:
    # Given API Gateway's own 429 (its body format), with Retry-After as an HTTP date
    from email.utils import formatdate

    api.error = (
        429,
        {"message": "Too Many Requests"},
        {"Retry-After": formatdate(time.time() + 120, usegmt=True)},
    )
    with pytest.raises(TokenVendError) as caught:
        client.get_token("dingtalk", "corp-a")
    error = caught.value
    assert (error.status, error.code, error.message) == (429, "throttled", "Too Many Requests")
    assert error.retry_after is not None and 60 < error.retry_after <= 120


def test_a_refresh_503_surfaces_retry_after(api: FakeApi, client: TokenClient) -> None:
    api.refresh_errors = [(503, {"error": {"code": "provider_unavailable"}}, {"Retry-After": "12"})]
    with pytest.raises(TokenVendError) as caught:
        client.refresh("dingtalk", "corp-a", rejected_token="tok-1")
    assert (caught.value.status, caught.value.retry_after) == (503, 12.0)


# -- refresh --------------------------------------------------------------------------------


def test_refresh_replaces_the_cached_token(api: FakeApi, client: TokenClient) -> None:
    assert client.get_token("dingtalk", "corp-a") == "tok-1"
    assert client.refresh("dingtalk", "corp-a")["access_token"] == "tok-2"
    assert api.refresh_calls()[0].body == b""
    # the new answer is cached: no further API call
    assert client.get_token("dingtalk", "corp-a") == "tok-2"
    assert len(api.calls) == 2


def test_a_token_rejected_twice_is_reported_once(api: FakeApi, client: TokenClient) -> None:
    client.get_token("dingtalk", "corp-a")
    first = client.refresh("dingtalk", "corp-a", rejected_token="tok-1")
    second = client.refresh("dingtalk", "corp-a", rejected_token="tok-1")
    assert first["access_token"] == second["access_token"] == "tok-2"
    assert len(api.refresh_calls()) == 1


# -- TokenAuth ------------------------------------------------------------------------------


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target(good={"tok-2"})
    yield server
    server.close()


def test_token_auth_sets_the_header(api: FakeApi, client: TokenClient, target: Target) -> None:
    target.good = {"tok-1"}
    response = requests.post(target.url, data=b"x", auth=TokenAuth(client, "dingtalk", "a"))
    assert response.status_code == 200
    assert target.seen == [("Bearer tok-1", b"x")]
    assert api.refresh_calls() == []


def test_token_auth_reports_a_401_and_retries_once(
    api: FakeApi, client: TokenClient, target: Target
) -> None:
    # Given a target that refuses tok-1 and accepts tok-2
    auth = TokenAuth(client, "dingtalk", "corp-a")
    # When
    response = requests.post(target.url, data=io.BytesIO(b"payload"), auth=auth, timeout=10)
    # Then the refused token was reported, and the request sent again with the new one
    assert response.status_code == 200 and response.text == "hello"
    assert [call.body for call in api.refresh_calls()] == [
        json.dumps({"rejected_token_sha256": sha256("tok-1")}).encode()
    ]
    assert target.seen == [("Bearer tok-1", b"payload"), ("Bearer tok-2", b"payload")]
    assert [r.status_code for r in response.history] == [401]
    # and the next request uses the new token straight away
    requests.post(target.url, data=b"again", auth=auth, timeout=10)
    assert target.seen[-1] == ("Bearer tok-2", b"again")
    assert len(api.calls) == 2


def test_token_auth_does_not_loop_on_401(api: FakeApi, client: TokenClient, target: Target) -> None:
    target.good = set()
    response = requests.post(target.url, data=b"p", auth=TokenAuth(client, "dingtalk", "a"))
    assert response.status_code == 401
    assert [seen[0] for seen in target.seen] == ["Bearer tok-1", "Bearer tok-2"]
    assert len(api.refresh_calls()) == 1


def test_token_auth_with_a_session(api: FakeApi, client: TokenClient, target: Target) -> None:
    with requests.Session() as session:
        session.auth = TokenAuth(client, "dingtalk", "corp-a")
        assert session.post(target.url, data=b"1").status_code == 200
        assert session.post(target.url, data=b"2").status_code == 200
    assert [seen[0] for seen in target.seen] == ["Bearer tok-1", "Bearer tok-2", "Bearer tok-2"]
    assert len(api.refresh_calls()) == 1


UNAVAILABLE = {"error": {"code": "provider_unavailable", "message": "in cool-down"}}
INVALID_TOKEN = {"error": "invalid_token"}  # the target's 401 body


class Sleeps(list[float]):
    """Stands in for time.sleep in TokenAuth: records the waits, does not wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def auth_for(client: TokenClient, sleeps: Sleeps, **kwargs: Any) -> TokenAuth:
    auth = TokenAuth(client, "dingtalk", "corp-a", **kwargs)
    auth._sleep = sleeps
    return auth


@pytest.mark.parametrize("retry_after", [None, "30"], ids=["no-retry-after", "long-retry-after"])
def test_token_auth_returns_the_401_when_the_refresh_answers_503(
    api: FakeApi,
    client: TokenClient,
    target: Target,
    sleeps: Sleeps,
    retry_after: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a target that refuses tok-1, and an API in its cool-down for the connection
    headers = {"Retry-After": retry_after} if retry_after else {}
    api.refresh_errors = [(503, UNAVAILABLE, headers)]
    # When
    with caplog.at_level("WARNING", logger="tokenvend.client"):
        response = requests.post(
            target.url, data=b"payload", auth=auth_for(client, sleeps), timeout=10
        )
    # Then the caller gets the target's own answer, still readable, and nothing was waited
    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert target.seen == [("Bearer tok-1", b"payload")]
    assert len(api.refresh_calls()) == 1
    assert sleeps == []
    # and a warning says why, without the token
    assert "provider_unavailable" in caplog.text and "401" in caplog.text
    assert "tok-1" not in caplog.text


@pytest.mark.parametrize(
    ("status", "code"),
    [(502, "provider_rejected"), (409, "authorization_required"), (403, "forbidden")],
)
def test_token_auth_returns_the_401_when_no_new_token_can_be_had(
    api: FakeApi, client: TokenClient, target: Target, sleeps: Sleeps, status: int, code: str
) -> None:
    api.refresh_errors = [(status, {"error": {"code": code, "message": "no"}}, {})]
    response = requests.post(target.url, data=b"p", auth=auth_for(client, sleeps), timeout=10)
    assert (response.status_code, response.json()) == (401, INVALID_TOKEN)
    assert len(target.seen) == 1 and len(api.refresh_calls()) == 1
    assert sleeps == []


def test_token_auth_returns_the_401_when_the_api_hangs_up(
    api: FakeApi, client: TokenClient, target: Target, sleeps: Sleeps
) -> None:
    api.refresh_errors = [HANG_UP]
    response = requests.post(target.url, data=b"p", auth=auth_for(client, sleeps), timeout=10)
    assert (response.status_code, response.json()) == (401, INVALID_TOKEN)
    assert len(target.seen) == 1


def test_token_auth_waits_out_a_short_retry_after_once_then_retries(
    api: FakeApi, client: TokenClient, target: Target, sleeps: Sleeps
) -> None:
    # Given a refresh that answers 503 "come back in 1 s", then succeeds
    api.refresh_errors = [(503, UNAVAILABLE, {"Retry-After": "1"})]
    # When
    response = requests.post(
        target.url, data=io.BytesIO(b"payload"), auth=auth_for(client, sleeps), timeout=10
    )
    # Then it waited once, as told, and the request went again with the new token and body
    assert sleeps == [1.0]
    assert response.status_code == 200 and response.text == "hello"
    assert target.seen == [("Bearer tok-1", b"payload"), ("Bearer tok-2", b"payload")]
    assert len(api.refresh_calls()) == 2
    assert [(r.status_code, r.json()) for r in response.history] == [(401, INVALID_TOKEN)]


def test_token_auth_waits_at_most_once(
    api: FakeApi, client: TokenClient, target: Target, sleeps: Sleeps
) -> None:
    # Given a refresh that keeps answering "come back in 1 s"
    api.refresh_errors = [(503, UNAVAILABLE, {"Retry-After": "1"})] * 5
    # When
    response = requests.post(target.url, data=b"p", auth=auth_for(client, sleeps), timeout=10)
    # Then one wait, one more ask, and the 401
    assert sleeps == [1.0]
    assert len(api.refresh_calls()) == 2
    assert (response.status_code, response.json()) == (401, INVALID_TOKEN)
    assert len(target.seen) == 1


def test_token_auth_waits_no_longer_than_max_wait(
    api: FakeApi, client: TokenClient, target: Target, sleeps: Sleeps
) -> None:
    # Given a throttled API (API Gateway's 429) asking for 2 s, and a caller who waits 1 s at most
    api.refresh_errors = [(429, {"message": "Too Many Requests"}, {"Retry-After": "2"})]
    auth = auth_for(client, sleeps, max_wait=1)
    response = requests.post(target.url, data=b"p", auth=auth, timeout=10)
    assert sleeps == []
    assert len(api.refresh_calls()) == 1
    assert response.status_code == 401
    # while the default waits a couple of seconds
    api.refresh_errors = [(429, {"message": "Too Many Requests"}, {"Retry-After": "2"})]
    client.clear()
    response = requests.post(target.url, data=b"p", auth=auth_for(client, sleeps), timeout=10)
    assert sleeps == [2.0]
    assert response.status_code == 200


def test_token_auth_does_not_resend_a_body_it_cannot_rewind(
    api: FakeApi, client: TokenClient, target: Target
) -> None:
    # Given a streamed body: once sent, it is gone
    def chunks() -> Iterator[bytes]:
        yield b"pay"
        yield b"load"

    response = requests.post(
        target.url, data=chunks(), auth=TokenAuth(client, "dingtalk", "corp-a"), timeout=10
    )
    # Then the refused token is still reported, but the request is not sent a second time
    # with an empty body: the caller gets the 401
    assert response.status_code == 401
    assert len(target.seen) == 1
    assert len(api.refresh_calls()) == 1
    assert client.get_token("dingtalk", "corp-a") == "tok-2"


def test_token_auth_raises_when_there_is_no_first_token(
    api: FakeApi, client: TokenClient, target: Target
) -> None:
    # Given an API that cannot give a token at all
    api.error = (503, UNAVAILABLE, {"Retry-After": "5"})
    # When / Then the request is not sent, and the caller learns why
    with pytest.raises(TokenVendError) as caught:
        requests.post(target.url, data=b"p", auth=TokenAuth(client, "dingtalk", "a"), timeout=10)
    assert (caught.value.status, caught.value.retry_after) == (503, 5.0)
    assert target.seen == []


def test_the_client_module_imports_no_boto3() -> None:
    import subprocess
    import sys

    code = "import sys, tokenvend.client; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
