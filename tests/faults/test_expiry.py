"""Promise 1: no caller gets a token with less than its min_ttl left (but for the two visible
exceptions), and none ever gets an expired one, with container clocks up to 30 s apart."""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable

import boto3
import pytest

from support import Stack
from tokenvend.sandbox import Fault

SKEWS = (-30, 0, 30)
REMAINING = (-10, 5, 25, 40, 290, 331, 400, 3000)
MIN_TTLS = (0, 300)


def store_token(stack: Stack, provider: str, expires_at: int) -> None:
    boto3.client("dynamodb").update_item(
        TableName=stack.settings.table_name,
        Key={"provider": {"S": provider}, "connection": {"S": "demo"}},
        UpdateExpression="SET expires_at = :e",
        ExpressionAttributeValues={":e": {"N": str(expires_at)}},
    )


@pytest.mark.parametrize(("skew", "refresh_works"), itertools.product(SKEWS, (True, False)))
def test_served_tokens_keep_min_ttl_and_never_expire(
    make_stack: Callable[..., Stack], skew: int, refresh_works: bool
) -> None:
    # A container whose clock is `skew` seconds off the true one.
    stack = make_stack(clock=lambda: time.time() + skew)
    stack.connect("oauth2")
    assert stack.vend("GET", "oauth2")[0] == 200
    for remaining, min_ttl in itertools.product(REMAINING, MIN_TTLS):
        store_token(stack, "oauth2", int(time.time()) + remaining)
        stack.vendor.forget()
        if not refresh_works:
            stack.sandbox.inject("oauth2", *[Fault.plain(503)] * 4)
        status, body, _ = stack.vend("GET", "oauth2", min_ttl=min_ttl)
        stack.sandbox.reset()
        case = f"skew={skew} remaining={remaining} min_ttl={min_ttl}"
        if status != 200:
            assert status == 503, case
            continue
        true_left = _true_remaining(body["expires_at"])
        assert true_left > 0, f"expired token served: {case}"
        if body.get("stale"):
            assert not refresh_works, case
        else:
            assert true_left >= min_ttl - 1, f"min_ttl broken: {case}"


def _true_remaining(expires_at: str) -> float:
    from datetime import UTC, datetime

    moment = datetime.strptime(expires_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return moment.timestamp() - time.time()


def test_stale_tokens_are_marked_and_the_failure_is_visible(
    stack: Stack, capfd: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    stack.connect("azure")
    stack.vend("GET", "azure")
    store_token(stack, "azure", int(time.time()) + 200)
    stack.vendor.forget()
    stack.sandbox.inject("azure", *[Fault.html(502)] * 4)
    status, body, _ = stack.vend("GET", "azure", min_ttl=300)
    assert status == 200 and body["stale"] is True
    assert body["refresh_error"] == {
        "code": "provider_unavailable",
        "message": "the token endpoint failed with HTTP 502",
    }
    assert '"VendStale":[1.0]' in capfd.readouterr().out.replace(" ", "")
    assert "served a stale token" in logs.getvalue()
    state = stack.tokens.get("azure", "demo")
    assert state is not None and state.error_code == "provider_unavailable" and state.failing_since
