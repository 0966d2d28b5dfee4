"""Right after start, every provider's `demo` connection vends a token through the signed API."""

from __future__ import annotations

import pytest
from e2e.harness import PROVIDERS, LocalProcess, introspect


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_providers_demo_connection_vends_a_live_token(
    stack: LocalProcess, provider: str
) -> None:
    # When
    answer = stack.call("GET", f"/tokens/{provider}/demo")

    # Then
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Pragma"] == "no-cache"
    body = answer.json()
    assert (body["provider"], body["connection"]) == (provider, "demo")
    assert body["token_type"].lower() == "bearer"
    assert body["expires_in"] > 300  # the default min_ttl
    assert body["expires_at"].endswith("Z")
    # The token is one the sandbox issued to this provider's demo client, and still valid.
    info = introspect(stack, body["access_token"])
    assert info["active"] is True
    assert info["provider"] == provider
    assert info["client_id"] == f"tokenvend-demo-{provider}"


def test_a_second_get_is_served_from_the_cache(stack: LocalProcess) -> None:
    # Given
    first = stack.call("GET", "/tokens/azure/demo").json()
    calls = stack.sandbox("GET", "calls")["azure"]

    # When
    second = stack.call("GET", "/tokens/azure/demo?min_ttl=60").json()

    # Then
    assert second["access_token"] == first["access_token"]
    assert stack.sandbox("GET", "calls")["azure"] == calls


def test_the_services_own_errors_come_through_the_api(stack: LocalProcess) -> None:
    unknown = stack.call("GET", "/tokens/dingtalk/no-such-connection")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_connection"

    bad_ttl = stack.call("GET", "/tokens/dingtalk/demo?min_ttl=99999")
    assert bad_ttl.status_code == 400
    assert bad_ttl.json()["error"]["code"] == "invalid_request"
