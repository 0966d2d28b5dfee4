"""Every sample event in events/ drives its function's handler to a sensible answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3
import pytest

from support import EVENTS, PROVIDERS, REDIRECT_URI, LambdaContext, Stack, event
from tokenvend_core.tokens import sha256_hex
from tokenvend_core.vend.api import as_rest

SAMPLES = sorted(path.name for path in Path(EVENTS).glob("*.json"))
LINK_SAMPLES = (
    "vend-connect.json", "vend-callback.json", "vend-http-connect.json", "vend-http-callback.json"
)  # fmt: skip


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """A stack with the link key, as the template gives the authorization-code providers."""
    kms = boto3.client("kms")
    key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    return make_stack(link_key_id=key["KeyId"])


def test_there_is_a_sample_for_every_function_and_kind_of_event() -> None:
    expected = {
        "vend-get.json",
        "vend-refresh.json",
        "provider-schedule.json",
        "wps365-authorize.json",
        *LINK_SAMPLES,
        "vend-http-get.json",
        "vend-http-refresh.json",
    }
    expected |= {f"{provider}-refresh.json" for provider in PROVIDERS}
    assert expected <= set(SAMPLES)


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_event(stack: Stack, name: str) -> None:
    for provider in PROVIDERS:
        stack.connect(provider)
    stack.authorize()
    data = event(name)
    if name in LINK_SAMPLES:
        check_link_sample(stack, name, data)
    elif name.startswith("vend-"):
        read = as_rest(data)  # a REST (1.0) or HTTP API (2.0) sample, as the function reads it
        provider = read["pathParameters"]["provider"]
        connection = read["pathParameters"]["connection"]
        stack.connect(provider, connection)
        if read.get("body"):
            # The sample names a token the service never issued: the current one is served.
            assert json.loads(read["body"])["rejected_token_sha256"] != sha256_hex("x")
        answer = stack.vend_function.lambda_handler(data, LambdaContext("tokenvend-test-vend"))
        assert answer["statusCode"] == 200, answer["body"]
        assert json.loads(answer["body"])["access_token"]
    elif name == "provider-schedule.json":
        for provider in PROVIDERS:
            result = stack.call_provider(provider, data)
            assert result["ok"] is True and result["schedule"]["failed"] == 0
    elif name == "wps365-authorize.json":
        secret = stack.secrets.get("wps365", "demo")
        assert secret is not None
        code = stack.sandbox.authorize(secret.value["client_id"], REDIRECT_URI)
        result = stack.call_provider("wps365", {**data, "code": code, "redirect_uri": REDIRECT_URI})
        assert result["ok"] is True
    else:
        provider = name.removesuffix("-refresh.json")
        result = stack.call_provider(provider, data)
        assert result["ok"] is True, result
        # The version of the connection's item that holds the new token; never the token.
        state = stack.tokens.get(provider, "demo", consistent=True)
        assert state is not None and state.access_token
        assert result["version"] == state.version
        assert state.access_token not in json.dumps(result)


def check_link_sample(stack: Stack, name: str, data: dict[str, object]) -> None:
    context = LambdaContext("tokenvend-test-vend")
    http = name.startswith("vend-http-")
    connect = event("vend-http-connect.json" if http else "vend-connect.json")
    answer = stack.vend_function.lambda_handler(connect, context)
    assert answer["statusCode"] == 200, answer["body"]
    link = json.loads(answer["body"])
    assert set(link) == {"url", "expires_at"} and link["url"].startswith("https://")
    if name.endswith("-connect.json"):
        return
    # The sample's own state was made by no key of this stack's: an invalid link.
    refused = stack.vend_function.lambda_handler(data, context)
    assert refused["statusCode"] == 400
    assert refused["headers"]["Content-Type"] == "text/html; charset=utf-8"
    # With the state of the link just made and the code the user came back with: connected.
    secret = stack.secrets.get("wps365", "demo")
    assert secret is not None
    state = parse_qs(urlsplit(link["url"]).query)["state"][0]
    code = stack.sandbox.authorize(secret.value["client_id"], REDIRECT_URI)
    query = {"state": state, "code": code}
    if http:
        data = {**data, "queryStringParameters": query, "rawQueryString": urlencode(query)}
    else:
        data = {
            **data,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
        }
    answer = stack.vend_function.lambda_handler(data, context)
    assert answer["statusCode"] == 200, answer["body"]
    assert "Connected" in answer["body"] and state not in answer["body"]
