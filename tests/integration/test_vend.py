"""The vend function through API Gateway events: hits, misses, min_ttl, stale-if-error and
every status of the contract's error table."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from support import CALLER, LambdaContext, Stack, api_event
from tokenvend.sandbox import Fault
from tokenvend_core.tokens import sha256_hex


def count_calls(client: Any, operation: str) -> list[str]:
    seen: list[str] = []
    client.meta.events.register(f"before-call.*.{operation}", lambda **kw: seen.append(operation))
    return seen


def expire_in(stack: Stack, provider: str, seconds: int, connection: str = "demo") -> None:
    """Make the stored token look older than it is (as a clock moving on would)."""
    import time

    boto3.client("dynamodb").update_item(
        TableName=stack.settings.table_name,
        Key={"provider": {"S": provider}, "connection": {"S": connection}},
        UpdateExpression="SET expires_at = :e",
        ExpressionAttributeValues={":e": {"N": str(int(time.time()) + seconds)}},
    )
    stack.vendor.forget()


def test_miss_then_table_hit_then_memory_hit(stack: Stack) -> None:
    stack.connect("dingtalk")
    status, first, headers = stack.vend("GET", "dingtalk")
    assert status == 200
    assert headers["Cache-Control"] == "no-store" and headers["Pragma"] == "no-cache"
    assert set(first) >= {
        "provider",
        "connection",
        "access_token",
        "token_type",
        "expires_at",
        "expires_in",
    }
    assert first["expires_at"].endswith("Z") and 3500 < first["expires_in"] <= 3600
    assert stack.invoker.invocations == 1

    gets = count_calls(stack.tokens._client, "GetItem")
    status, second, _ = stack.vend("GET", "dingtalk")
    assert status == 200 and second["access_token"] == first["access_token"]
    assert gets == []  # served from memory
    stack.vendor.forget()
    status, third, _ = stack.vend("GET", "dingtalk")
    assert third["access_token"] == first["access_token"]
    assert gets == ["GetItem"] and stack.invoker.invocations == 1
    assert stack.sandbox.calls("dingtalk") == 1


def test_min_ttl_beyond_the_cached_token_refreshes_first(stack: Stack) -> None:
    stack.connect("oauth2")
    _, first, _ = stack.vend("GET", "oauth2")
    expire_in(stack, "oauth2", 200)
    status, second, _ = stack.vend("GET", "oauth2", min_ttl=300)
    assert status == 200 and second["access_token"] != first["access_token"]
    assert second["expires_in"] >= 300
    status, third, _ = stack.vend("GET", "oauth2", min_ttl=0)
    assert third["access_token"] == second["access_token"]


def test_fresh_token_shorter_than_min_ttl_is_served(stack: Stack) -> None:
    stack.connect("oauth2", lifetime=120)
    status, body, _ = stack.vend("GET", "oauth2", min_ttl=3600)
    assert status == 200 and 0 < body["expires_in"] <= 120
    assert "stale" not in body


def test_memory_never_serves_past_expiry_minus_min_ttl(stack: Stack) -> None:
    stack.connect("oauth2")
    stack.vend("GET", "oauth2")
    expire_in(stack, "oauth2", 100)
    stack.vend("GET", "oauth2", min_ttl=0)  # memory now holds the 100-second token
    status, body, _ = stack.vend("GET", "oauth2", min_ttl=300)
    assert status == 200 and body["expires_in"] >= 300


def test_stale_if_error_serves_the_unexpired_token_marked_stale(stack: Stack) -> None:
    stack.connect("azure")
    _, first, _ = stack.vend("GET", "azure")
    expire_in(stack, "azure", 120)
    stack.sandbox.inject("azure", *[Fault.plain(503)] * 4)
    status, body, headers = stack.vend("GET", "azure", min_ttl=300)
    assert status == 200
    assert body["access_token"] == first["access_token"]
    assert body["stale"] is True
    assert body["refresh_error"]["code"] == "provider_unavailable"
    assert headers["Cache-Control"] == "no-store"


def test_an_expired_token_is_never_served(stack: Stack) -> None:
    stack.connect("azure")
    stack.vend("GET", "azure")
    expire_in(stack, "azure", -5)  # expired, and DynamoDB's TTL sweeper has not run
    stack.sandbox.inject("azure", *[Fault.plain(503)] * 4)
    status, body, headers = stack.vend("GET", "azure", min_ttl=0)
    assert status == 503
    assert body["error"]["code"] == "provider_unavailable"
    assert int(headers["Retry-After"]) >= 1
    assert "access_token" not in body


def test_refresh_with_the_current_token_rejected_fetches_a_new_one(stack: Stack) -> None:
    stack.connect("oauth2")
    _, token, _ = stack.vend("GET", "oauth2")
    body = json.dumps({"rejected_token_sha256": sha256_hex(token["access_token"])})
    status, fresh, _ = stack.vend("POST", "oauth2", body=body)
    assert status == 200 and fresh["access_token"] != token["access_token"]
    assert stack.sandbox.calls("oauth2") == 2


def test_refresh_with_an_older_token_rejected_serves_the_current_one(stack: Stack) -> None:
    stack.connect("oauth2")
    _, token, _ = stack.vend("GET", "oauth2")
    body = json.dumps({"rejected_token_sha256": sha256_hex("an older token")})
    status, same, _ = stack.vend("POST", "oauth2", body=body)
    assert status == 200 and same["access_token"] == token["access_token"]
    assert stack.sandbox.calls("oauth2") == 1


def test_refresh_without_a_body_fetches_a_new_one(stack: Stack) -> None:
    stack.connect("oauth2")
    _, token, _ = stack.vend("GET", "oauth2")
    status, fresh, _ = stack.vend("POST", "oauth2", body=None)
    assert status == 200 and fresh["access_token"] != token["access_token"]
    _, after, _ = stack.vend("GET", "oauth2")
    assert after["access_token"] == fresh["access_token"]


BAD = [
    ("GET", "Dingtalk", "demo", {}, "invalid_request"),
    ("GET", "ding talk", "demo", {}, "invalid_request"),
    ("GET", "dingtalk", "-demo", {}, "invalid_request"),
    ("GET", "dingtalk", "x" * 65, {}, "invalid_request"),
    ("GET", "dingtalk", "de/mo", {}, "invalid_request"),
    ("GET", "dingtalk", "demo", {"min_ttl": "3601"}, "invalid_request"),
    ("GET", "dingtalk", "demo", {"min_ttl": "-1"}, "invalid_request"),
    ("GET", "dingtalk", "demo", {"min_ttl": "1.5"}, "invalid_request"),
    ("GET", "dingtalk", "demo", {"min_ttl": "abc"}, "invalid_request"),
    ("POST", "dingtalk", "demo", {"body": "not json"}, "invalid_request"),
    ("POST", "dingtalk", "demo", {"body": "[1]"}, "invalid_request"),
    ("POST", "dingtalk", "demo", {"body": '{"rejected_token_sha256": "abc"}'}, "invalid_request"),
    ("POST", "dingtalk", "demo", {"body": '{"other": 1}'}, "invalid_request"),
    ("GET", "slack", "demo", {}, "unknown_provider"),
]


@pytest.mark.parametrize(("method", "provider", "connection", "kw", "code"), BAD)
def test_bad_input_is_refused_before_any_aws_call(
    stack: Stack, method: str, provider: str, connection: str, kw: dict[str, Any], code: str
) -> None:
    calls = count_calls(stack.tokens._client, "*")
    status, body, _ = stack.vend(method, provider, connection, **kw)
    assert body["error"]["code"] == code
    assert status == (404 if code == "unknown_provider" else 400)
    assert calls == [] and stack.invoker.invocations == 0


def test_unknown_connection_is_404(stack: Stack) -> None:
    status, body, _ = stack.vend("GET", "dingtalk", "nobody")
    assert status == 404 and body["error"]["code"] == "unknown_connection"
    assert "tokenvend connections put dingtalk nobody" in body["error"]["message"]


def test_allowed_principals(stack: Stack) -> None:
    stack.connect("aspose", allowed_principals=["arn:aws:iam::123456789012:role/reporting"])
    caller = "arn:aws:sts::123456789012:assumed-role/reporting/session-1"
    status, _, _ = stack.vend("GET", "aspose", caller=caller)
    assert status == 200
    stack.vendor.forget()
    for other in (CALLER, "arn:aws:sts::123456789012:assumed-role/reporting-admin/s"):
        status, body, _ = stack.vend("GET", "aspose", caller=other)
        assert status == 403 and body["error"]["code"] == "forbidden"
        assert "access_token" not in body
    # A caller that is not allowed cannot make the provider be asked either.
    stack.connect("azure", allowed_principals=["arn:aws:iam::123456789012:user/someone-else"])
    status, _, _ = stack.vend("GET", "azure")
    assert status == 403 and stack.sandbox.calls("azure") == 0


def test_unauthorized_wps365_connection_is_409(stack: Stack) -> None:
    stack.connect("wps365")
    status, body, _ = stack.vend("GET", "wps365")
    assert status == 409 and body["error"]["code"] == "authorization_required"
    assert "tokenvend authorize" in body["error"]["message"]
    assert stack.sandbox.calls("wps365") == 0


def test_provider_rejection_is_502_with_the_providers_code_and_is_remembered(stack: Stack) -> None:
    stack.connect("azure")
    stack.sandbox.inject("azure", Fault.azure_error(7000215, "invalid_client", 401))
    status, body, _ = stack.vend("GET", "azure")
    assert status == 502 and body["error"]["code"] == "provider_rejected"
    assert "AADSTS7000215" in body["error"]["message"]
    # Remembered: not retried until the secret changes.
    status, again, _ = stack.vend("GET", "azure")
    assert status == 502 and again["error"]["message"] == body["error"]["message"]
    assert stack.sandbox.calls("azure") == 1
    stack.connect("azure")  # a new secret version
    status, body, _ = stack.vend("GET", "azure")
    assert status == 200 and stack.sandbox.calls("azure") == 2


def test_provider_unavailable_is_503_with_retry_after(stack: Stack) -> None:
    stack.connect("dingtalk")
    stack.sandbox.inject("dingtalk", *[Fault.throttle(retry_after=30)] * 2)
    status, body, headers = stack.vend("GET", "dingtalk")
    assert status == 503 and body["error"]["code"] == "provider_unavailable"
    assert headers["Retry-After"] == "30"


def test_malformed_secret_is_500_internal_without_details_of_the_value(stack: Stack) -> None:
    stack.put_secret("oauth2", "broken", {"client_id": "x", "client_secret": "hunter2-secret"})
    status, body, _ = stack.vend("GET", "oauth2", "broken")
    assert status == 500 and body["error"]["code"] == "internal"
    assert "token_url" in body["error"]["message"]
    assert "hunter2-secret" not in json.dumps(body)


def test_crashing_provider_function_is_503(stack: Stack) -> None:
    stack.connect("oauth2")
    stack.provider_functions["oauth2"]._refresher = None  # its wiring fails at the next call
    status, body, headers = stack.vend("GET", "oauth2")
    assert status == 503 and "Retry-After" in headers
    assert body["error"]["code"] == "provider_unavailable"


def test_unknown_route_is_400(stack: Stack) -> None:
    event = api_event("GET", "oauth2", "demo")
    event["resource"] = "/admin"
    answer = stack.vend_function.lambda_handler(event, LambdaContext("vend"))
    assert answer["statusCode"] == 400


def test_a_refused_token_is_not_served_back_as_stale(make_stack: Any) -> None:
    stack = make_stack(cool_down=30)
    stack.connect("oauth2")
    _, token, _ = stack.vend("GET", "oauth2")
    body = json.dumps({"rejected_token_sha256": sha256_hex(token["access_token"])})
    status, answer, headers = stack.vend("POST", "oauth2", body=body)  # within the cool-down
    assert status == 503 and answer["error"]["code"] == "provider_unavailable"
    assert int(headers["Retry-After"]) >= 1 and token["access_token"] not in json.dumps(answer)


def test_a_connection_whose_secret_awaits_deletion_is_unknown(stack: Stack) -> None:
    stack.connect("oauth2", "leaving")
    boto3.client("secretsmanager").delete_secret(
        SecretId=stack.secrets.name("oauth2", "leaving"), RecoveryWindowInDays=7
    )
    status, body, _ = stack.vend("GET", "oauth2", "leaving")
    assert status == 404 and body["error"]["code"] == "unknown_connection"
