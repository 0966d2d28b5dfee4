"""Answers that say the token is already dead are failures, never tokens: over real HTTP
from the sandbox, then through the vend function. The default lifetime is only for answers
that say nothing about expiry."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from support import FAST, Stack, connection_secret
from tokenvend.sandbox import Fault, Sandbox
from tokenvend_core.catalogue.answer import Failure
from tokenvend_core.catalogue.request import build_request
from tokenvend_core.catalogue.spec import spec_for, validate_secret
from tokenvend_core.errors import ProviderUnavailable
from tokenvend_core.refresh.endpoint import TokenEndpoint
from tokenvend_core.tokens import Token

EXPIRED = "the provider issued a token that has already expired"


@pytest.fixture(autouse=True)
def sandbox(module_sandbox: Sandbox) -> Sandbox:
    module_sandbox.reset()
    return module_sandbox


def jwt(**claims: Any) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def fetch(sandbox: Sandbox, default_lifetime: int = 3300) -> Token | Failure:
    spec = spec_for("oauth2")
    value = connection_secret(sandbox, "oauth2", "t")
    sandbox.register("oauth2", value["client_id"], value["client_secret"], scope=value["scope"])
    secret = validate_secret(spec, value, allow_http_loopback=True)
    return TokenEndpoint(policy=FAST).fetch(
        spec,
        build_request(spec, secret, allow_http_loopback=True),
        deadline=time.monotonic() + 3,
        default_lifetime=default_lifetime,
    )


def dead_answers() -> list[dict[str, Any]]:
    past = int(time.time()) - 60
    return [
        {"access_token": "dead-1", "token_type": "Bearer", "expires_in": 0},
        {"access_token": "dead-2", "token_type": "Bearer", "expires_in": -5},
        {"access_token": "dead-3", "token_type": "Bearer", "expires_in": "0"},
        {"access_token": "dead-4", "token_type": "Bearer", "expires_in": "-3600"},
        {"access_token": jwt(exp=past, sub="x"), "token_type": "Bearer"},
        {"access_token": jwt(exp=int(time.time()), sub="x"), "token_type": "Bearer"},
    ]


@pytest.mark.parametrize("index", range(len(dead_answers())))
def test_a_token_the_provider_says_is_dead_is_a_transient_failure(
    sandbox: Sandbox, index: int
) -> None:
    # Given an endpoint that keeps issuing tokens that are dead on arrival
    sandbox.inject("oauth2", *[Fault.success(dead_answers()[index])] * FAST.max_tries)
    # When tokenvend asks for one
    outcome = fetch(sandbox)
    # Then it gets a transient failure that says so, after a bounded number of tries
    assert isinstance(outcome, Failure), outcome
    assert isinstance(outcome.error, ProviderUnavailable)
    assert outcome.error.message == EXPIRED
    assert not outcome.permanent and outcome.retry
    assert sandbox.calls("oauth2") == FAST.max_tries


def test_a_dead_token_then_a_live_one_within_the_attempt_serves_the_live_one(
    sandbox: Sandbox,
) -> None:
    sandbox.inject("oauth2", Fault.success({"access_token": "dead", "expires_in": 0}))
    outcome = fetch(sandbox)
    assert isinstance(outcome, Token) and outcome.access_token != "dead"
    assert outcome.expires_at > time.time() + 3000
    assert sandbox.calls("oauth2") == 2


def test_a_jwt_with_a_future_exp_and_no_expires_in_lives_until_its_exp(sandbox: Sandbox) -> None:
    exp = int(time.time()) + 1234
    sandbox.inject("oauth2", Fault.success({"access_token": jwt(exp=exp), "token_type": "Bearer"}))
    outcome = fetch(sandbox)
    assert isinstance(outcome, Token) and outcome.expires_at == exp


@pytest.mark.parametrize(
    "body",
    [
        {"access_token": "opaque", "token_type": "Bearer"},
        {"access_token": "opaque", "token_type": "Bearer", "expires_in": "soon"},
        {"access_token": jwt(sub="no-exp"), "token_type": "Bearer"},
    ],
)
def test_an_answer_that_says_nothing_of_expiry_gets_the_default_lifetime(
    sandbox: Sandbox, body: dict[str, Any]
) -> None:
    sandbox.inject("oauth2", Fault.success(body))
    before = time.time()
    outcome = fetch(sandbox, default_lifetime=600)
    assert isinstance(outcome, Token), outcome
    assert before + 598 <= outcome.expires_at <= time.time() + 600


def test_a_dead_token_is_never_vended(stack: Stack) -> None:
    stack.connect("oauth2")
    stack.sandbox.inject(
        "oauth2", *[Fault.success({"access_token": "dead", "expires_in": 0})] * FAST.max_tries
    )
    status, body, headers = stack.vend("GET", "oauth2")
    assert status == 503, body
    assert body["error"]["code"] == "provider_unavailable"
    assert EXPIRED in body["error"]["message"]
    assert "dead" not in json.dumps(body)
    assert "Retry-After" in headers
    # and the next attempt, once the provider issues live tokens again, gets one
    status, body, _ = stack.vend("GET", "oauth2")
    assert status == 200 and body["access_token"] != "dead"
