"""No secret, access token or refresh token in any log line, metric or error body: every
flow runs with recognisable values, and everything that was written is searched for them."""

from __future__ import annotations

import base64
import io
import json

import pytest

from support import CLIENT_SECRET, PROVIDERS, Stack
from tokenvend.sandbox import Fault
from tokenvend_core.tokens import sha256_hex


def test_nothing_secret_is_logged_or_returned_in_errors(
    stack: Stack, capfd: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    tokens: set[str] = set()
    errors: list[str] = []
    for provider in PROVIDERS:
        stack.connect(provider)
    stack.authorize()
    refresh_tokens = {stack.secrets.get("wps365", "demo").value["refresh_token"]}  # type: ignore[union-attr]
    for provider in PROVIDERS:
        status, body, _ = stack.vend("GET", provider)
        assert status == 200
        tokens.add(body["access_token"])
        status, body, _ = stack.vend(
            "POST",
            provider,
            body=json.dumps({"rejected_token_sha256": sha256_hex(body["access_token"])}),
        )
        assert status == 200
        tokens.add(body["access_token"])
    current_grant = stack.secrets.get("wps365", "demo").value["refresh_token"]  # type: ignore[union-attr]
    refresh_tokens.add(current_grant)

    # Failures whose bodies echo what was sent, then every error path once more.
    faults = {
        # aspose sends its credentials in the query string: this endpoint repeats all of it
        "aspose": Fault.echo_request(400, ("error", "error_description")),
        "azure": Fault.azure_error(7000215, "invalid_client", 401),
        "dingtalk": Fault.dingtalk_error(
            "invalid.client", message=f"bad {CLIENT_SECRET}-dingtalk-demo"
        ),
        "oauth2": Fault.echo_request(401, ("error_description",), body={"error": "x"}),
        "wps365": Fault.wps_error(
            "invalid_grant", desc=f"refresh token {current_grant} is used up"
        ),
    }
    for provider, fault in faults.items():
        stack.sandbox.inject(provider, *[fault] * 4)
        status, body, _ = stack.vend("POST", provider, body=None)
        assert status == 200 and body["stale"] is True  # an error, told beside the cached token
        errors.append(json.dumps(body["refresh_error"]))
        status, body, _ = stack.vend("GET", provider, "missing")
        assert status == 404
        errors.append(json.dumps(body))

    out, err = capfd.readouterr()
    logged = logs.getvalue()
    audited = json.dumps(stack.audit.records)
    written = out + err + logged + "\n".join(errors) + audited
    assert "refresh failed" in logged and "provider_rejected" in logged  # it did log
    # and recorded every decision in the audit trail, a token by its fingerprint alone
    assert len(stack.audit.of("vend")) == 2 * len(PROVIDERS)
    assert {r["outcome"] for r in stack.audit.of("refresh")} >= {"provider", "stale"}
    for value in tokens | refresh_tokens:
        assert sha256_hex(value) not in audited
        assert base64.b64encode(value.encode()).decode() not in written
    assert "RefreshPermanentFailure" in out  # and emitted metrics
    for value in tokens | refresh_tokens:
        assert value not in written
    assert CLIENT_SECRET not in written
    basic = base64.b64encode(
        f"oauth2-demo-client:{CLIENT_SECRET}-oauth2-demo".encode()
    ).decode()  # oauth2 sends HTTP Basic
    assert basic not in written
    assert "[redacted]" in written  # the echoes were shown, without the secrets
