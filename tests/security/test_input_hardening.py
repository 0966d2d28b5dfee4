"""Arbitrary paths, query strings, bodies and headers thrown at the vend handler: never a 5xx
for client input, never an AWS call for invalid input, never a token in an error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from support import ENV, LambdaContext, Stack, api_event, build_stack, create_table
from tokenvend.sandbox import Sandbox
from tokenvend_core.names import CONNECTION_RE, PROVIDERS


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Stack, str, list[str]]]:
    with pytest.MonkeyPatch.context() as patch, mock_aws(), Sandbox() as sandbox:
        for name, value in ENV.items():
            patch.setenv(name, value)
        create_table(boto3.client("dynamodb", region_name="us-east-1"))
        stack = build_stack(sandbox)
        stack.connect("dingtalk")
        _, body, _ = stack.vend("GET", "dingtalk")
        aws_calls: list[str] = []
        for client in (stack.tokens._client, stack.secrets._client):
            client.meta.events.register(
                "before-call.*.*", lambda model, **_: aws_calls.append(model.name)
            )
        yield stack, body["access_token"], aws_calls


texts = st.text(max_size=80) | st.sampled_from(["dingtalk", "demo", "../demo", "%2e%2e", "", " "])
maybe_texts = st.none() | texts
headers = st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=4)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "get"]),
    provider=maybe_texts | st.integers(),
    connection=maybe_texts,
    min_ttl=maybe_texts | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True),
    body=maybe_texts | st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    extra_query=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
    header_map=headers,
    base64=st.booleans(),
    resource=st.sampled_from(
        ["/tokens/{provider}/{connection}", "/tokens/{provider}/{connection}/refresh", "/", None]
    ),
)
def test_client_input_never_breaks_the_handler(
    world: tuple[Stack, str, list[str]],
    method: str,
    provider: Any,
    connection: Any,
    min_ttl: Any,
    body: Any,
    extra_query: dict[str, str],
    header_map: dict[str, str],
    base64: bool,
    resource: Any,
) -> None:
    stack, token, aws_calls = world
    event = api_event("GET", "dingtalk", "demo")
    event.update(
        httpMethod=method, resource=resource, headers=header_map, body=body, isBase64Encoded=base64
    )
    event["pathParameters"] = {"provider": provider, "connection": connection}
    query = dict(extra_query)
    if min_ttl is not None:
        query["min_ttl"] = min_ttl
    event["queryStringParameters"] = query or None
    aws_calls.clear()
    invocations = stack.invoker.invocations
    stack.vendor.forget()

    answer = stack.vend_function.lambda_handler(event, LambdaContext("tokenvend-test-vend"))

    status = answer["statusCode"]
    data = json.loads(answer["body"])
    assert status < 500, data
    if status != 200:
        assert token not in answer["body"]
        assert set(data) == {"error"} and set(data["error"]) == {"code", "message"}
    valid = (
        resource in ("/tokens/{provider}/{connection}", "/tokens/{provider}/{connection}/refresh")
        and (method, resource.endswith("refresh")) in (("GET", False), ("POST", True))
        and provider in PROVIDERS
        and isinstance(connection, str)
        and CONNECTION_RE.fullmatch(connection) is not None
    )
    if (
        status == 400
        or (status == 404 and data["error"]["code"] == "unknown_provider")
        or not valid
    ):
        assert status in (400, 404)
        assert aws_calls == [] and stack.invoker.invocations == invocations
