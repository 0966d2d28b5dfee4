"""ApiType HTTP: the vend function reads API Gateway's HTTP API events (payload format 2.0)
as it reads the REST API's (1.0). Every route, refusal and audit record is the same whichever
format brings the request; the caller comes from `requestContext.authorizer.iam`."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import CALLER, EVENTS, LambdaContext, Stack, api_event, event
from tokenvend_core.audit import fingerprint
from tokenvend_core.tokens import sha256_hex
from tokenvend_core.vend.api import as_rest


def as_http(rest: dict[str, Any]) -> dict[str, Any]:
    """The HTTP API's event for the same request as a REST proxy event (the shape API
    Gateway documents for payload format 2.0 with IAM authorization)."""
    context, identity = rest["requestContext"], rest["requestContext"]["identity"]
    multi = rest.get("multiValueQueryStringParameters") or {}
    route = f"{rest['httpMethod']} {rest['resource']}"
    http: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route,
        "rawPath": context.get("path", rest.get("path")),
        "rawQueryString": urlencode([(k, v) for k, vs in multi.items() for v in vs]),
        "headers": {k.lower(): v for k, v in (rest.get("headers") or {}).items()},
        "requestContext": {
            "accountId": context.get("accountId"),
            "apiId": "a1b2c3d4e5",
            "http": {
                "method": rest["httpMethod"],
                "path": rest.get("path"),
                "protocol": "HTTP/1.1",
                "sourceIp": identity.get("sourceIp"),
                "userAgent": "test",
            },
            "requestId": context.get("requestId"),
            "routeKey": route,
            "stage": "v1",
        },
        "isBase64Encoded": bool(rest.get("isBase64Encoded")),
    }
    if multi:
        http["queryStringParameters"] = {k: ",".join(v) for k, v in multi.items()}
    if rest.get("pathParameters") is not None:
        http["pathParameters"] = rest["pathParameters"]
    if identity.get("userArn") is not None:
        http["requestContext"]["authorizer"] = {
            "iam": {"accountId": "123456789012", "userArn": identity["userArn"]}
        }
    if rest.get("body") is not None:
        http["body"] = rest["body"]
    return http


def call(stack: Stack, data: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    answer = stack.vend_function.lambda_handler(data, LambdaContext("tokenvend-test-vend"))
    body = answer["body"]
    parsed = json.loads(body) if answer["headers"]["Content-Type"] == "application/json" else body
    return answer["statusCode"], parsed, answer["headers"]


def test_the_samples_of_both_formats_say_the_same() -> None:
    for rest_name, http_name in (
        ("vend-get.json", "vend-http-get.json"),
        ("vend-refresh.json", "vend-http-refresh.json"),
        ("vend-connect.json", "vend-http-connect.json"),
        ("vend-callback.json", "vend-http-callback.json"),
    ):
        rest, http = event(rest_name), json.loads((EVENTS / http_name).read_text())
        assert http["version"] == "2.0"
        read = as_rest(http)
        for key in ("resource", "httpMethod", "pathParameters", "queryStringParameters",
                    "multiValueQueryStringParameters", "body", "isBase64Encoded"):  # fmt: skip
            assert read[key] == rest[key], (http_name, key)
        identity = rest["requestContext"]["identity"]
        assert read["requestContext"]["identity"] == {
            "userArn": identity["userArn"],
            "sourceIp": identity["sourceIp"],
        }


def test_a_token_its_refresh_and_the_audit_record_through_an_http_api(stack: Stack) -> None:
    stack.connect("oauth2")
    rest = api_event("GET", "oauth2", "demo", min_ttl=60)
    rest["requestContext"]["requestId"] = request_id = uuid.uuid4().hex
    status, body, headers = call(stack, as_http(rest))
    assert status == 200 and body["provider"] == "oauth2" and body["expires_in"] > 60
    assert headers["Cache-Control"] == "no-store"
    (record,) = [r for r in stack.audit.of("vend") if r["request_id"] == request_id]
    assert (record["caller"], record["source_ip"]) == (CALLER, "203.0.113.10")
    assert record["fingerprint"] == fingerprint(body["access_token"])
    rejected = json.dumps({"rejected_token_sha256": sha256_hex(body["access_token"])})
    status, fresh, _ = call(stack, as_http(api_event("POST", "oauth2", "demo", body=rejected)))
    assert status == 200 and fresh["access_token"] != body["access_token"]


def test_refusals_are_the_same_in_both_formats(stack: Stack) -> None:
    stack.connect("oauth2", "listed", allowed_principals=[CALLER])
    cases = [
        api_event("GET", "oauth2", "listed", caller="arn:aws:iam::123456789012:user/other"),
        api_event("GET", "oauth2", "nobody"),
        api_event("GET", "nosuch", "demo"),
        api_event("GET", "oauth2", "listed", min_ttl="soon"),
        api_event("POST", "oauth2", "listed", body="{not json"),
        api_event("GET", "oauth2", "listed", caller=""),
    ]
    for rest in cases:
        assert call(stack, as_http(rest))[:2] == call(stack, rest)[:2]


def test_the_link_callback_page_is_the_same_in_both_formats(stack: Stack) -> None:
    for rest_name, http_name in (("vend-callback.json", "vend-http-callback.json"),):
        rest, http = event(rest_name), json.loads((EVENTS / http_name).read_text())
        assert call(stack, http) == call(stack, rest)
        assert call(stack, http)[0] == 400


def test_a_repeated_query_name_is_seen_as_repeated_not_comma_joined(stack: Stack) -> None:
    """The HTTP API joins a repeated name's values with commas in queryStringParameters; the
    callback must still see two states (and refuse them), as it does through REST."""
    http = json.loads((EVENTS / "vend-http-callback.json").read_text())
    state = http["queryStringParameters"]["state"]
    http["rawQueryString"] += f"&state={state}"
    http["queryStringParameters"]["state"] = f"{state},{state}"
    assert as_rest(http)["multiValueQueryStringParameters"]["state"] == [state, state]
    status, page, _ = call(stack, http)
    assert status == 400 and 'data-outcome="link_invalid"' in page


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST"]),
    provider=st.one_of(st.sampled_from(["oauth2", "dingtalk"]), st.text(max_size=12)),
    connection=st.text(max_size=20),
    min_ttl=st.one_of(st.none(), st.text(max_size=8), st.integers(-5, 10**6).map(str)),
    body=st.one_of(st.none(), st.text(max_size=40)),
)
def test_any_request_gets_the_same_answer_in_both_formats(
    stack: Stack, method: str, provider: str, connection: str, min_ttl: Any, body: Any
) -> None:
    rest = api_event(method, provider, connection, min_ttl=min_ttl, body=body)
    assert call(stack, as_http(rest))[:2] == call(stack, rest)[:2]
