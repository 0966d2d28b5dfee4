"""wps365: a connection authorized through the sandbox's consent step, then refreshed through
the API; every rotated refresh token is stored in the connection's secret."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import requests
from e2e.harness import LocalProcess, introspect, put_secret, secret_of, sha256

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never visited: the code is read off the redirect


def consent(stack: LocalProcess, client_id: str) -> str:
    """The code the sandbox's authorization page redirects with (consent is implied)."""
    answer = requests.get(
        f"{stack.sandbox_url}/wps365/oauth2/auth",
        params={"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code in (302, 303), answer.text
    return parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]


def refresh(stack: LocalProcess, connection: str, rejected: str) -> dict[str, str]:
    """POST .../refresh reporting `rejected`. Within the connection's cool-down (1 s here) the
    provider is not asked, and the still-valid token is served marked stale: wait, ask again."""
    body = json.dumps({"rejected_token_sha256": sha256(rejected)}).encode()
    give_up = time.monotonic() + 10
    while True:
        answer = stack.call("POST", f"/tokens/wps365/{connection}/refresh", body=body)
        assert answer.status_code in (200, 503), answer.text
        if answer.status_code == 200 and not answer.json().get("stale"):
            return dict(answer.json())
        assert time.monotonic() < give_up, f"still refused after the cool-down: {answer.text}"
        time.sleep(1.1)


def test_authorize_then_refresh_stores_each_rotated_refresh_token(stack: LocalProcess) -> None:
    # Given a wps365 app at the sandbox and a connection that was never authorized
    connection = f"user-{uuid.uuid4().hex[:8]}"
    client_id = f"wps-{connection}"
    client_secret = secrets.token_urlsafe(16)
    stack.sandbox(
        "POST",
        "register/wps365",
        {"client_id": client_id, "client_secret": client_secret, "redirect_uri": REDIRECT_URI},
    )
    put_secret(
        stack,
        "wps365",
        connection,
        {
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uri": REDIRECT_URI,
            "token_url": f"{stack.sandbox_url}/wps365/oauth2/token",
        },
    )
    before = stack.call("GET", f"/tokens/wps365/{connection}")
    assert before.status_code == 409, before.text
    assert before.json()["error"]["code"] == "authorization_required"

    # When the user consents and the code is redeemed by the wps365 function
    event = {
        "action": "authorize",
        "connection": connection,
        "code": consent(stack, client_id),
        "redirect_uri": REDIRECT_URI,
    }
    answer = stack.client("lambda").invoke(
        FunctionName="tokenvend-wps365", Payload=json.dumps(event).encode()
    )
    result = json.loads(answer["Payload"].read())

    # Then the grant's refresh token is in the secret and a token is served
    assert "FunctionError" not in answer, result
    assert result["ok"] is True, result
    first_grant = secret_of(stack, "wps365", connection)["refresh_token"]
    assert first_grant
    first = stack.call("GET", f"/tokens/wps365/{connection}")
    assert first.status_code == 200, first.text
    first_token = first.json()["access_token"]

    # When the caller reports the token rejected, twice
    second_token = refresh(stack, connection, first_token)["access_token"]
    second_grant = secret_of(stack, "wps365", connection)["refresh_token"]
    third_token = refresh(stack, connection, second_token)["access_token"]
    third_grant = secret_of(stack, "wps365", connection)["refresh_token"]

    # Then each refresh got a new token with a rotated refresh token, stored before use: the
    # sandbox spends a refresh token when it is used, so the third refresh worked only
    # because the secret held the second grant's live refresh token.
    assert len({first_token, second_token, third_token}) == 3
    assert len({first_grant, second_grant, third_grant}) == 3
    assert introspect(stack, third_token)["active"] is True
    assert introspect(stack, third_token)["client_id"] == client_id


def test_the_demo_connections_link_goes_to_the_sandbox(stack: LocalProcess) -> None:
    # When an operator asks for a link for the demo connection
    answer = stack.call("POST", "/connections/wps365/demo/connect")
    assert answer.status_code == 200, answer.text
    link = answer.json()["url"]

    # Then it is the sandbox's consent page (never the real provider's), and consenting there
    # sends the browser to the connection's redirect URI with a code and the link's state
    assert link.startswith(f"{stack.sandbox_url}/wps365/oauth2/auth?")
    consent = requests.get(link + "&auto=allow", allow_redirects=False, timeout=10)
    assert consent.status_code in (302, 303), consent.text
    redirect = urlsplit(consent.headers["Location"])
    query = parse_qs(redirect.query)
    assert (
        f"{redirect.scheme}://{redirect.netloc}{redirect.path}"
        == secret_of(stack, "wps365", "demo")["redirect_uri"]
    )
    assert query["code"] and query["state"] == parse_qs(urlsplit(link).query)["state"]
