"""Promises 4 and 6: transient failures retried inside one attempt and bounded by its
deadline; permanent ones remembered; no retry storm; AWS failures answered with 503 and
Retry-After, or the cached token, and nothing corrupted."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.stub import Stubber

from support import AwsFault, Stack
from tokenvend.sandbox import Fault
from tokenvend_core.aws.clients import client
from tokenvend_core.errors import ProviderUnavailable
from tokenvend_core.vend.invoker import LambdaInvoker


def test_an_attempt_ends_at_its_deadline(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(attempt_deadline=1)
    stack.connect("oauth2")
    stack.sandbox.inject("oauth2", *[Fault(status=200, delay=0.6)] * 5)
    status, _, headers = stack.vend("GET", "oauth2")
    assert status == 503 and "Retry-After" in headers
    # The deadline ended the attempt: the other slow answers were never asked for.
    assert stack.sandbox.calls("oauth2") <= 2 and stack.sandbox.pending_faults("oauth2") >= 3


def test_retries_back_off_with_full_jitter(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.connect("oauth2")
    waits: list[float] = []
    endpoint = stack.refreshers["oauth2"].endpoint
    endpoint._sleep = waits.append
    endpoint._jitter = lambda: 1.0  # the ceiling of each jittered wait
    stack.sandbox.inject("oauth2", *[Fault.plain(503)] * 3)
    assert stack.vend("GET", "oauth2")[0] == 200
    policy = endpoint._policy
    assert waits == [min(policy.cap, policy.base * 2**n) for n in range(3)]
    endpoint._jitter = lambda: 0.0
    waits.clear()
    stack.sandbox.inject("oauth2", Fault.throttle(retry_after=2))
    stack.vend("POST", "oauth2", body=None)
    assert waits == [2.0]  # Retry-After wins over a shorter jittered wait


def test_permanent_failures_are_not_retried_and_are_remembered(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    stack.connect("dingtalk")
    stack.sandbox.inject("dingtalk", Fault.dingtalk_error("invalid.client"))
    for _ in range(3):
        status, body, _ = stack.vend("GET", "dingtalk")
        assert status == 502 and "invalid.client" in body["error"]["message"]
    assert stack.sandbox.calls("dingtalk") == 1
    assert capfd.readouterr().out.count('"RefreshPermanentFailure":[1.0]') == 1


def test_schedule_backoff_is_capped_exponential(make_stack: Callable[..., Stack]) -> None:
    now = [time.time()]
    stack = make_stack(clock=lambda: now[0], backoff_cap=3600)
    stack.connect("azure")
    refresher = stack.refreshers["azure"]
    gaps = []
    for _ in range(7):
        stack.sandbox.inject("azure", *[Fault.html(500)] * 4)
        refresher.endpoint._sleep = lambda _: None
        stack.call_provider("azure", {"action": "schedule"})
        state = stack.tokens.get("azure", "demo", consistent=True)
        assert state is not None
        gaps.append(round(state.next_attempt_at - now[0]))
        now[0] = state.next_attempt_at + 1
    interval = stack.settings.schedule_interval
    assert gaps == [min(3600, interval * 2**n) for n in range(7)]


def test_throttled_table_gives_503_with_retry_after(stack: Stack) -> None:
    stack.connect("oauth2")
    AwsFault(stack.tokens._client, "GetItem", "ProvisionedThroughputExceededException")
    status, body, headers = stack.vend("GET", "oauth2")
    assert status == 503 and body["error"]["code"] == "provider_unavailable"
    assert int(headers["Retry-After"]) >= 1


def test_a_failing_table_does_not_stop_a_warm_container(stack: Stack) -> None:
    stack.connect("oauth2")
    _, first, _ = stack.vend("GET", "oauth2")
    stack.vendor._memory_seconds = 0  # the memory entry is past its time, the token is not
    AwsFault(stack.tokens._client, "GetItem", "InternalServerError")
    status, body, _ = stack.vend("GET", "oauth2")
    assert status == 200 and body["access_token"] == first["access_token"]


def test_secrets_manager_failure_serves_the_cached_token_or_503(stack: Stack) -> None:
    stack.connect("azure")
    _, first, _ = stack.vend("GET", "azure")
    fault = AwsFault(stack.secrets._client, "GetSecretValue", "InternalServiceError")
    status, body, _ = stack.vend("POST", "azure", body=None)
    assert status == 200 and body["stale"] is True and body["access_token"] == first["access_token"]
    stack.connect("azure", "second")
    status, body, headers = stack.vend("GET", "azure", "second")
    assert fault.raised >= 2
    assert status == 503 and "Retry-After" in headers


def test_a_table_failure_after_the_answer_corrupts_nothing(stack: Stack) -> None:
    stack.connect("oauth2")
    stack.vend("GET", "oauth2")
    before = stack.tokens.get("oauth2", "demo", consistent=True)
    AwsFault(stack.tokens._client, "UpdateItem", "InternalServerError",
             when=lambda p: "access_token" in json.dumps(p.get("ExpressionAttributeNames", {})))  # fmt: skip
    status, body, _ = stack.vend("POST", "oauth2", body=None)
    assert status == 200 and body["stale"] is True
    after = stack.tokens.get("oauth2", "demo", consistent=True)
    assert before is not None and after is not None
    assert (after.access_token, after.version) == (before.access_token, before.version)


@pytest.mark.parametrize(
    ("stub", "words"),
    [
        (lambda s: s.add_client_error("invoke", "TooManyRequestsException", http_status_code=429), "TooManyRequestsException"),
        (lambda s: s.add_client_error("invoke", "ServiceException", http_status_code=500), "ServiceException"),
        (lambda s: s.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(b'{"errorMessage": "Task timed out after 60.00 seconds"}')}), "Unhandled"),
        (lambda s: s.add_response("invoke", {"StatusCode": 200, "Payload": io.BytesIO(b"not json")}), "unreadable"),
    ],
)  # fmt: skip
def test_lambda_failures_are_provider_unavailable(
    stub: Callable[[Stubber], Any], words: str
) -> None:
    lambda_client = client("lambda", total_max_attempts=1)
    invoker = LambdaInvoker(lambda_client, "tokenvend-")
    with Stubber(lambda_client) as stubber:
        stub(stubber)
        with pytest.raises(ProviderUnavailable) as caught:
            invoker.refresh("oauth2", "demo", min_ttl=300)
    assert words in caught.value.message
    assert caught.value.retry_after


def test_a_crashing_provider_function_serves_the_cached_token(stack: Stack) -> None:
    stack.connect("oauth2")
    _, first, _ = stack.vend("GET", "oauth2")
    stack.provider_functions["oauth2"]._refresher = None  # its next start fails
    status, body, _ = stack.vend("POST", "oauth2", body=None)
    assert status == 200 and body["stale"] is True
    assert body["access_token"] == first["access_token"]
