"""Promise 3: a rotated refresh token is never lost. A failure is injected at each step
between the provider's answer and the token being stored."""

from __future__ import annotations

import io
from typing import Any

import pytest

from support import AwsFault, Stack
from tokenvend_core.need import Need
from tokenvend_core.tokens import sha256_hex


def grant_in_secret(stack: Stack) -> str:
    secret = stack.secrets.get("wps365", "demo")
    assert secret is not None
    return str(secret.value["refresh_token"])


def issued_grant(stack: Stack) -> str:
    grant = stack.sandbox.refresh_token_of("wps365-demo-client")
    assert grant is not None
    return grant


def test_a_failed_secret_write_is_retried(wps: Stack) -> None:
    fault = AwsFault(wps.secrets._client, "PutSecretValue", "InternalServiceError", times=2)
    status, body, _ = wps.vend("POST", "wps365", body=None)
    assert status == 200 and "stale" not in body
    assert fault.raised == 2
    assert grant_in_secret(wps) == issued_grant(wps)


def test_secrets_manager_down_keeps_the_grant_in_the_table(
    wps: Stack, capfd: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    fault = AwsFault(wps.secrets._client, "PutSecretValue", "ServiceUnavailable")
    status, body, _ = wps.vend("POST", "wps365", body=None)
    assert status == 200 and "stale" not in body
    state = wps.tokens.get("wps365", "demo", consistent=True)
    assert state is not None and state.pending_refresh_token == issued_grant(wps)
    assert "RefreshTokenInFallback" in capfd.readouterr().out
    assert "kept in the token table" in logs.getvalue()
    assert issued_grant(wps) not in logs.getvalue()
    # Still down at the next refresh: the kept grant is spent, its successor kept likewise.
    status, _, _ = wps.vend("POST", "wps365", body=None)
    assert status == 200
    state = wps.tokens.get("wps365", "demo", consistent=True)
    assert state is not None and state.pending_refresh_token == issued_grant(wps)
    fault.stop()
    # Back: the next attempt moves the kept grant into the secret before spending it.
    status, _, _ = wps.vend("POST", "wps365", body=None)
    assert status == 200 and grant_in_secret(wps) == issued_grant(wps)
    state = wps.tokens.get("wps365", "demo", consistent=True)
    assert state is not None and state.pending_refresh_token is None


def test_both_places_failing_serves_no_new_token_and_says_so(
    wps: Stack, capfd: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    _, before, _ = wps.vend("GET", "wps365")
    AwsFault(wps.secrets._client, "PutSecretValue", "ServiceUnavailable")
    AwsFault(
        wps.tokens._client,
        "UpdateItem",
        "InternalServerError",
        when=lambda params: "pending_refresh_token" in str(params.get("ExpressionAttributeNames")),
    )
    status, body, _ = wps.vend("POST", "wps365", body=None)
    assert (
        status == 200 and body["stale"] is True and body["access_token"] == before["access_token"]
    )
    assert body["refresh_error"]["code"] == "internal"
    assert "RefreshTokenLost" in capfd.readouterr().out
    assert "could not be stored" in logs.getvalue()


class Crash(BaseException):
    """The function's process ending: nothing after it runs in this attempt."""


def test_a_crash_between_the_answer_and_the_write_is_detected_and_explained(wps: Stack) -> None:
    old = grant_in_secret(wps)

    def crash(**_: Any) -> None:
        raise Crash

    wps.secrets._client.meta.events.register("before-call.secrets-manager.PutSecretValue", crash)
    with pytest.raises(Crash):
        wps.refreshers["wps365"].refresh("demo", Need(newer_than=99))
    wps.secrets._client.meta.events.unregister("before-call.secrets-manager.PutSecretValue", crash)
    state = wps.tokens.get("wps365", "demo", consistent=True)
    assert state is not None and state.grant_in_flight == sha256_hex(old)
    assert issued_grant(wps) != old  # the provider rotated; the secret holds the old one

    status, body, _ = wps.vend("POST", "wps365", body=None)
    assert status == 200 and body["stale"] is True  # the cached token still lives
    assert body["refresh_error"]["code"] == "authorization_required"
    assert "earlier refresh ended" in body["refresh_error"]["message"]
    # Recovery: a new authorization.
    wps.authorize()
    status, body, _ = wps.vend("POST", "wps365", body=None)
    assert status == 200 and "stale" not in body


def test_a_failure_after_the_secret_write_loses_nothing(wps: Stack) -> None:
    AwsFault(
        wps.tokens._client,
        "UpdateItem",
        "InternalServerError",
        times=1,
        when=lambda params: "access_token" in str(params.get("ExpressionAttributeNames")),
    )
    status, _, _ = wps.vend("POST", "wps365", body=None)
    assert status == 200  # the cached token, stale
    assert grant_in_secret(wps) == issued_grant(wps)
    status, body, _ = wps.vend("POST", "wps365", body=None)
    assert status == 200 and "stale" not in body
    assert grant_in_secret(wps) == issued_grant(wps)
