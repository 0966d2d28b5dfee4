"""The vend function invokes a provider function exactly once per need: a second invocation
would be a second refresh attempt. Lambda's 429s, 5xx and a slow answer each cost one
invocation and give 503 with Retry-After, well before the vend function's own timeout."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from support import CALLER, ROOT, TABLE, create_table
from tokenvend.awslocal import MotoServer
from tokenvend.template import load_template
from tokenvend_core.errors import ProviderUnavailable
from tokenvend_core.settings import Settings
from tokenvend_core.vend import runtime


class LambdaEndpoint(ThreadingHTTPServer):
    """A Lambda Invoke endpoint on 127.0.0.1 that answers every invocation the same way."""

    daemon_threads = True

    def __init__(self, status: int, error: str, delay: float = 0) -> None:
        self.status, self.error, self.delay = status, error, delay
        self.invocations = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: LambdaEndpoint

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.invocations += 1
        time.sleep(self.server.delay)
        body = json.dumps({"Type": "Service", "message": "no"}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", self.server.error)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may have given up first
            self.wfile.write(body)


@pytest.fixture
def endpoint(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LambdaEndpoint]:
    """The table on moto's server, the Lambda endpoint above: both real HTTP on loopback."""
    status, error, delay = request.param
    server = LambdaEndpoint(status, error, delay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with MotoServer() as moto:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", server.url)
        create_table(boto3.client("dynamodb"))
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize(
    "endpoint",
    [
        (429, "TooManyRequestsException", 0),
        (500, "ServiceException", 0),
        (502, "EC2UnexpectedException", 0),
        (200, "", 1.5),  # slower than the (shortened) read timeout
    ],
    indirect=True,
    ids=["throttled", "service-error", "bad-gateway", "slow"],
)
def test_one_invocation_whatever_lambda_answers(
    endpoint: LambdaEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "INVOKE_READ_TIMEOUT", 1, raising=False)
    vendor = runtime.build_vendor(Settings(table_name=TABLE))
    with pytest.raises(ProviderUnavailable) as caught:
        vendor.get("oauth2", "demo", 300, CALLER)
    time.sleep(endpoint.delay)  # let a slow answer finish before counting
    assert endpoint.invocations == 1
    assert caught.value.retry_after


def test_the_invoke_client_is_built_with_exactly_one_attempt(aws: None) -> None:
    vendor = runtime.build_vendor(Settings(table_name=TABLE))
    config = vendor._invoker._client.meta.config  # type: ignore[attr-defined]
    assert config.retries["total_max_attempts"] == 1
    assert config.read_timeout == runtime.INVOKE_READ_TIMEOUT


def test_the_vend_functions_timeout_outlasts_its_invoke() -> None:
    template = load_template(ROOT / "template.yaml")
    timeout = template["Resources"]["VendFunction"]["Properties"]["Timeout"]
    assert timeout > runtime.INVOKE_WORST
    assert runtime.INVOKE_WORST < 29  # API Gateway's own limit: the 503 reaches the caller


def test_too_little_time_left_gives_503_and_no_invocation(aws: None) -> None:
    vendor = runtime.build_vendor(Settings(table_name=TABLE))
    calls: list[Any] = []
    vendor._invoker.refresh = lambda *a, **k: calls.append(a)  # type: ignore[method-assign]
    with pytest.raises(ProviderUnavailable) as caught:
        vendor.get("oauth2", "demo", 300, CALLER, remaining=lambda: runtime.INVOKE_WORST - 1)
    assert calls == [] and caught.value.retry_after
