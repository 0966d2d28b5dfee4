"""wps365: authorize with a code, refresh with the stored refresh token, and keep every
rotated refresh token in the connection's secret before the new access token is used."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support import REDIRECT_URI, Stack, event
from tokenvend_core.tokens import sha256_hex


def current_secret(stack: Stack) -> dict[str, Any]:
    secret = stack.secrets.get("wps365", "demo")
    assert secret is not None
    return secret.value


def test_authorize_with_the_sample_event_stores_the_grant(stack: Stack) -> None:
    value = stack.connect("wps365")
    code = stack.sandbox.authorize(value["client_id"], REDIRECT_URI)
    answer = stack.call_provider(
        "wps365", event("wps365-authorize.json", code=code, redirect_uri=REDIRECT_URI)
    )
    assert answer["ok"] is True and answer["connection"] == "demo"
    assert answer["expires_at"].endswith("Z") and answer["refresh_expires_at"].endswith("Z")
    assert "access_token" not in json.dumps(answer) and "refresh_token" not in answer
    secret = current_secret(stack)
    assert secret["refresh_token"] == stack.sandbox.refresh_token_of(value["client_id"])
    assert secret["refresh_expires_at"] > 0
    status, body, _ = stack.vend("GET", "wps365")
    assert status == 200 and stack.sandbox.is_valid(body["access_token"])
    assert stack.sandbox.calls("wps365") == 1  # the exchange's token is the one served


def test_refresh_rotates_and_stores_the_new_refresh_token(stack: Stack) -> None:
    value = stack.connect("wps365")
    stack.authorize()
    before = current_secret(stack)["refresh_token"]
    _, token, _ = stack.vend("GET", "wps365")
    body = json.dumps({"rejected_token_sha256": sha256_hex(token["access_token"])})
    status, fresh, _ = stack.vend("POST", "wps365", body=body)
    assert status == 200 and fresh["access_token"] != token["access_token"]
    after = current_secret(stack)["refresh_token"]
    assert after != before and after == stack.sandbox.refresh_token_of(value["client_id"])
    # The next refresh uses the stored one and works.
    status, third, _ = stack.vend("POST", "wps365", body=None)
    assert status == 200 and third["access_token"] != fresh["access_token"]


def test_a_refresh_token_the_secret_will_not_take_is_kept_in_the_table_until_it_does(
    stack: Stack,
) -> None:
    value = stack.connect("wps365")
    stack.authorize()
    _, token, _ = stack.vend("GET", "wps365")
    before = current_secret(stack)["refresh_token"]

    def refuse(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "InternalServiceError", "Message": "down"}}, "PutSecretValue"
        )

    stack.secrets._client.meta.events.register("before-call.secrets-manager.PutSecretValue", refuse)
    stack.refreshers["wps365"]._sleep = lambda _: None
    status, body, _ = stack.vend("POST", "wps365", body=None)
    assert status == 200 and "stale" not in body and body["access_token"] != token["access_token"]
    rotated = stack.sandbox.refresh_token_of(value["client_id"])
    assert current_secret(stack)["refresh_token"] == before != rotated
    state = stack.tokens.get("wps365", "demo", consistent=True)
    assert state is not None and state.pending_refresh_token == rotated
    # The vend function never reads it.
    public = stack.tokens.get("wps365", "demo", public=True)
    assert public is not None and public.pending_refresh_token is None

    # Secrets Manager is back: the next refresh spends the kept grant and stores its successor.
    stack.secrets._client.meta.events.unregister(
        "before-call.secrets-manager.PutSecretValue", refuse
    )
    status, body, _ = stack.vend("POST", "wps365", body=None)
    assert status == 200 and "stale" not in body
    assert current_secret(stack)["refresh_token"] == stack.sandbox.refresh_token_of(
        value["client_id"]
    )
    state = stack.tokens.get("wps365", "demo", consistent=True)
    assert state is not None and state.pending_refresh_token is None


def test_reused_code_is_refused_without_touching_the_grant(stack: Stack) -> None:
    value = stack.connect("wps365")
    code = stack.sandbox.authorize(value["client_id"], REDIRECT_URI)
    assert stack.call_provider(
        "wps365", {"action": "authorize", "connection": "demo", "code": code}
    )["ok"]
    grant = current_secret(stack)["refresh_token"]
    answer = stack.call_provider(
        "wps365", {"action": "authorize", "connection": "demo", "code": code}
    )
    assert answer["ok"] is False and answer["error"]["code"] == "authorization_required"
    assert current_secret(stack)["refresh_token"] == grant
    assert code not in json.dumps(answer)
    status, _, _ = stack.vend("POST", "wps365", body=None)  # the grant still works
    assert status == 200


def test_revoked_grant_answers_409_and_a_new_authorization_mends_it(stack: Stack) -> None:
    value = stack.connect("wps365")
    stack.authorize()
    stack.sandbox.revoke_refresh_tokens(value["client_id"])
    status, body, _ = stack.vend("POST", "wps365", body=None)
    assert status == 200 and body["stale"] is True  # the current token still lives
    assert body["refresh_error"]["code"] == "authorization_required"
    stack.authorize()
    status, body, _ = stack.vend("POST", "wps365", body=None)
    assert status == 200 and "stale" not in body


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "authorize", "connection": "demo"},
        {"action": "authorize", "connection": "demo", "code": ""},
        {"action": "authorize", "connection": "../x", "code": "c"},
        {"action": "launch", "connection": "demo"},
        ["not", "an", "object"],
    ],
)
def test_bad_provider_events_are_invalid_requests(stack: Stack, payload: Any) -> None:
    stack.connect("wps365")
    answer = stack.call_provider("wps365", payload)
    assert answer == {"ok": False, "error": answer["error"]}
    assert answer["error"]["code"] == "invalid_request"
    assert stack.sandbox.calls("wps365") == 0


def test_other_providers_take_no_codes(stack: Stack) -> None:
    stack.connect("dingtalk")
    answer = stack.call_provider(
        "dingtalk", {"action": "authorize", "connection": "demo", "code": "x"}
    )
    assert answer["error"]["code"] == "invalid_request"


def test_connections_list_shows_when_the_grant_ends(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokenvend.cli import main

    stack.connect("wps365")
    stack.authorize()
    monkeypatch.setenv("TOKENVEND_TABLE", stack.settings.table_name)
    capsys.readouterr()
    assert main(["connections", "list", "--json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out) if r["provider"] == "wps365"]
    assert row["status"] == "ok" and row["grant_expires_at"].endswith("Z")
    assert main(["connections", "list"]) == 0
    assert "ok (grant ends in 29d" in capsys.readouterr().out
