"""The audit trail, flow by flow, through the real handlers on moto and the sandbox: each
decision leaves exactly one record, in the fixed shape, with the right caller, request,
connection, secret version, expiry and fingerprint — and never a token."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from support import (
    CALLER,
    REDIRECT_URI,
    FakeClock,
    LambdaContext,
    Stack,
    api_event,
    event,
)
from tokenvend.sandbox import Fault
from tokenvend_core.audit import FIELDS, fingerprint
from tokenvend_core.tokens import sha256_hex

OTHER = "arn:aws:iam::123456789012:role/other-workload"


def vend(
    stack: Stack, method: str, provider: str, connection: str = "demo", **kw: Any
) -> tuple[int, dict[str, Any], str]:
    """One API request with a request id of its own; (status, body, request id)."""
    data = api_event(method, provider, connection, **kw)
    request_id = str(uuid.uuid4())
    data["requestContext"]["requestId"] = request_id
    answer = stack.vend_function.lambda_handler(data, LambdaContext("tokenvend-test-vend"))
    return answer["statusCode"], json.loads(answer["body"]), request_id


def of_request(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    return [record for record in stack.audit.records if record["request_id"] == request_id]


def expires(body: dict[str, Any]) -> str:
    return str(body["expires_at"])


def test_every_record_has_the_fixed_shape_and_no_token(stack: Stack) -> None:
    stack.connect("dingtalk")
    status, body, _ = vend(stack, "GET", "dingtalk")
    assert status == 200
    assert stack.audit.records
    for record in stack.audit.records:
        assert tuple(record) == FIELDS
        assert record["audit"] == 1
        assert body["access_token"] not in json.dumps(record)
        assert sha256_hex(body["access_token"]) not in json.dumps(record)  # only 16 of 64


def test_a_vend_through_the_provider_leaves_one_answer_and_one_attempt(stack: Stack) -> None:
    # Given a connection with no token yet
    stack.connect("dingtalk")
    version = stack.secrets.get("dingtalk", "demo").version  # type: ignore[union-attr]
    # When a caller asks for it
    status, body, request_id = vend(stack, "GET", "dingtalk")
    assert status == 200
    # Then the vend function records its answer, and the provider function its attempt,
    # both under the API's request id
    records = of_request(stack, request_id)
    assert [r["action"] for r in records] == ["refresh_attempt", "vend"]
    attempt, answer = records
    assert answer == {
        "audit": 1,
        "time": answer["time"],
        "request_id": request_id,
        "function": "tokenvend-test-vend",
        "action": "vend",
        "trigger": "api",
        "caller": CALLER,
        "source_ip": "203.0.113.10",
        "provider": "dingtalk",
        "connection": "demo",
        "outcome": "provider",
        "error_code": None,
        "secret_version": version,
        "expires_at": expires(body),
        "fingerprint": fingerprint(body["access_token"]),
        "detail": None,
    }
    assert attempt["function"] == "tokenvend-test-dingtalk"
    assert (attempt["trigger"], attempt["caller"], attempt["outcome"]) == ("vend", CALLER, "ok")
    assert attempt["source_ip"] == "203.0.113.10"
    assert attempt["fingerprint"] == answer["fingerprint"]
    assert attempt["secret_version"] == version
    assert attempt["expires_at"] == expires(body)
    assert time.strptime(answer["time"], "%Y-%m-%dT%H:%M:%S.%fZ")


def test_memory_and_table_hits_each_leave_one_record(stack: Stack) -> None:
    stack.connect("oauth2")
    vend(stack, "GET", "oauth2")
    status, body, first = vend(stack, "GET", "oauth2")
    stack.vendor.forget()
    _, _, second = vend(stack, "GET", "oauth2")
    assert status == 200
    assert [(r["action"], r["outcome"]) for r in of_request(stack, first)] == [("vend", "memory")]
    assert [(r["action"], r["outcome"]) for r in of_request(stack, second)] == [("vend", "table")]
    for request_id in (first, second):
        (record,) = of_request(stack, request_id)
        assert record["fingerprint"] == fingerprint(body["access_token"])


def test_refusals_are_recorded_with_their_code_and_caller(stack: Stack) -> None:
    stack.connect("oauth2", "listed", allowed_principals=[CALLER])
    vend(stack, "GET", "oauth2", "listed")
    cases = [
        (("GET", "oauth2", "listed"), {"caller": OTHER}, 403, "forbidden"),
        (("GET", "oauth2", "missing"), {}, 404, "unknown_connection"),
        (("GET", "nosuch", "demo"), {}, 404, "unknown_provider"),
        (("GET", "oauth2", "listed"), {"min_ttl": "soon"}, 400, "invalid_request"),
    ]
    for args, kw, status, code in cases:
        answered, body, request_id = vend(stack, *args, **kw)
        assert (answered, body["error"]["code"]) == (status, code)
        (record,) = of_request(stack, request_id)
        assert (record["action"], record["outcome"], record["error_code"]) == (
            "vend",
            "refused",
            code,
        )
        assert record["caller"] == kw.get("caller", CALLER)
        assert record["fingerprint"] is None and record["expires_at"] is None


def test_a_forced_refresh_and_a_stale_answer(stack: Stack) -> None:
    stack.connect("oauth2")
    _, first, _ = vend(stack, "GET", "oauth2")
    rejected = json.dumps({"rejected_token_sha256": sha256_hex(first["access_token"])})
    status, fresh, request_id = vend(stack, "POST", "oauth2", body=rejected)
    assert status == 200 and fresh["access_token"] != first["access_token"]
    records = of_request(stack, request_id)
    assert [(r["action"], r["outcome"]) for r in records] == [
        ("refresh_attempt", "ok"),
        ("refresh", "provider"),
    ]
    assert records[1]["fingerprint"] == fingerprint(fresh["access_token"])
    # When the provider fails a forced refresh, the cached token is served stale
    stack.sandbox.inject("oauth2", *[Fault(status=503)] * 4)
    status, stale, request_id = vend(stack, "POST", "oauth2")
    assert status == 200 and stale["stale"] is True
    attempt, answer = of_request(stack, request_id)
    assert (attempt["action"], attempt["outcome"]) == ("refresh_attempt", "failed")
    assert attempt["error_code"] == stale["refresh_error"]["code"]
    assert attempt["fingerprint"] is None
    assert (answer["action"], answer["outcome"]) == ("refresh", "stale")
    assert answer["error_code"] == stale["refresh_error"]["code"]
    assert answer["fingerprint"] == fingerprint(fresh["access_token"])


def test_a_scheduled_run_leaves_its_summary_and_one_record_per_attempt(stack: Stack) -> None:
    for connection in ("a", "b", "c"):
        stack.connect("oauth2", connection)
    context = LambdaContext("tokenvend-test-oauth2")
    stack.provider_functions["oauth2"].lambda_handler(event("provider-schedule.json"), context)
    records = of_request(stack, context.aws_request_id)
    attempts = [r for r in records if r["action"] == "refresh_attempt"]
    assert sorted(r["connection"] for r in attempts) == ["a", "b", "c"]
    assert {(r["trigger"], r["outcome"], r["caller"]) for r in attempts} == {
        ("schedule", "ok", None)
    }
    (summary,) = [r for r in records if r["action"] == "schedule"]
    assert records[-1] is summary or records[-1] == summary
    assert (summary["provider"], summary["connection"], summary["outcome"]) == (
        "oauth2",
        None,
        "ok",
    )
    assert summary["detail"]["refreshed"] == 3 and summary["detail"]["connections"] == 3
    assert len(records) == 4


def test_a_fan_out_batch_is_a_run_of_its_own(stack: Stack) -> None:
    stack.connect("oauth2", "a")
    context = LambdaContext("tokenvend-test-oauth2")
    batch = {"action": "refresh_batch", "connections": [{"connection": "a", "min_ttl": 60}]}
    stack.provider_functions["oauth2"].lambda_handler(
        {"Records": [{"messageId": "m1", "body": json.dumps(batch)}, {"body": "{"}]}, context
    )
    records = of_request(stack, context.aws_request_id)
    assert [(r["action"], r["trigger"], r["outcome"]) for r in records] == [
        ("refresh_attempt", "fanout", "ok"),
        ("schedule", "fanout", "ok"),
        ("schedule", "fanout", "failed"),
    ]
    assert records[2]["error_code"] == "invalid_request"


def test_an_operator_code_redemption_is_recorded_redeemed_or_refused(stack: Stack) -> None:
    stack.connect("wps365")
    answer = stack.authorize()
    assert answer["ok"] is True
    (redeemed,) = stack.audit.of("authorize")
    assert (redeemed["trigger"], redeemed["outcome"], redeemed["connection"]) == (
        "operator",
        "ok",
        "demo",
    )
    held = stack.tokens.get("wps365", "demo")
    assert held is not None and redeemed["fingerprint"] == fingerprint(held.access_token)
    assert redeemed["secret_version"] == held.secret_version
    assert not stack.audit.of("refresh_attempt")  # a redemption is not also an attempt
    stack.audit.clear()
    refused = stack.call_provider(
        "wps365", {"action": "authorize", "connection": "demo", "code": "not-a-code"}
    )
    assert refused["ok"] is False
    (record,) = stack.audit.records
    assert (record["action"], record["outcome"], record["error_code"]) == (
        "authorize",
        "refused",
        refused["error"]["code"],
    )
    assert "not-a-code" not in json.dumps(record)


@pytest.fixture
def linked(make_stack: Callable[..., Stack]) -> Stack:
    key = boto3.client("kms").create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    stack = make_stack(link_key_id=key["KeyMetadata"]["KeyId"], clock=FakeClock(time.time()))
    stack.connect("wps365")
    return stack


def callback(stack: Stack, query: dict[str, str] | None) -> tuple[int, str]:
    data = event("vend-callback.json")
    data["queryStringParameters"] = query
    data["multiValueQueryStringParameters"] = {k: [v] for k, v in (query or {}).items()} or None
    data["requestContext"]["requestId"] = request_id = str(uuid.uuid4())
    answer = stack.vend_function.lambda_handler(data, LambdaContext("tokenvend-test-vend"))
    assert answer["statusCode"] in (200, 400)
    return answer["statusCode"], request_id


def test_the_link_flow_records_the_link_and_each_callback_once(linked: Stack) -> None:
    stack = linked
    data = event("vend-connect.json")
    data["requestContext"]["requestId"] = connect_id = str(uuid.uuid4())
    answer = stack.vend_function.lambda_handler(data, LambdaContext("tokenvend-test-vend"))
    link = json.loads(answer["body"])
    (made,) = of_request(stack, connect_id)
    assert (made["action"], made["outcome"], made["connection"]) == ("connect", "ok", "demo")
    assert made["expires_at"] == link["expires_at"] and made["fingerprint"] is None
    state = link["url"].split("state=")[1].split("&")[0]
    from urllib.parse import unquote

    state = unquote(state)
    secret = stack.secrets.get("wps365", "demo").value  # type: ignore[union-attr]
    code = stack.sandbox.authorize(secret["client_id"], REDIRECT_URI)

    # A callback with no state invokes nothing: the vend function records the refusal
    status, nothing = callback(stack, {"code": code})
    assert status == 400
    (refused,) = of_request(stack, nothing)
    assert (refused["action"], refused["trigger"], refused["error_code"]) == (
        "authorize",
        "link",
        "link_invalid",
    )
    assert refused["function"] == "tokenvend-test-vend"
    # An altered state: the provider function judges it and records it, once
    status, altered = callback(stack, {"state": state[:-2] + "AA", "code": code})
    assert status == 400
    (refused,) = of_request(stack, altered)
    assert refused["function"] == "tokenvend-test-wps365"
    assert (refused["outcome"], refused["error_code"]) == ("refused", "link_invalid")
    # The real one redeems, recorded once by the provider function under the API's request
    status, good = callback(stack, {"state": state, "code": code})
    assert status == 200
    (redeemed,) = of_request(stack, good)
    assert (redeemed["action"], redeemed["trigger"], redeemed["outcome"]) == (
        "authorize",
        "link",
        "ok",
    )
    held = stack.tokens.get("wps365", "demo")
    assert held is not None and redeemed["fingerprint"] == fingerprint(held.access_token)
    # Used again: refused as used, once
    status, again = callback(stack, {"state": state, "code": code})
    assert status == 400
    (refused,) = of_request(stack, again)
    assert refused["error_code"] == "link_used"
    for record in stack.audit.records:
        assert code not in json.dumps(record) and state not in json.dumps(record)


def test_a_refresh_invoked_directly_is_told_from_one_by_the_vend_function(stack: Stack) -> None:
    stack.connect("dingtalk")
    answer = stack.call_provider(
        "dingtalk", {"action": "refresh", "connection": "demo", "min_ttl": 0}
    )
    assert answer["ok"] is True
    (attempt,) = stack.audit.of("refresh_attempt")
    assert (attempt["trigger"], attempt["caller"], attempt["outcome"]) == ("direct", None, "ok")


def test_a_link_made_by_invoking_the_provider_function_directly_is_recorded_there(
    linked: Stack,
) -> None:
    answer = linked.call_provider("wps365", {"action": "connect", "connection": "demo"})
    assert answer["ok"] is True
    (made,) = linked.audit.of("connect")
    assert (made["function"], made["trigger"], made["outcome"]) == (
        "tokenvend-test-wps365",
        "direct",
        "ok",
    )
    assert made["expires_at"] == answer["expires_at"]
    refused = linked.call_provider("wps365", {"action": "connect", "connection": "nobody"})
    assert refused["ok"] is False
    assert [(r["outcome"], r["error_code"]) for r in linked.audit.of("connect")][1:] == [
        ("refused", "unknown_connection")
    ]
