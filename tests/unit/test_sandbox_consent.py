"""The sandbox's consent page: what a user's browser meets at an authorization-code
provider's authorization endpoint (the app, the scope, Allow and Deny), the redirects each
button gives, the error pages that never redirect, and PKCE (RFC 7636, S256) for entries
that say `pkce = true`."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from support import FakeClock
from tokenvend.sandbox import CONSENT_LIFETIME, Sandbox

REDIRECT = "https://app.example.com/connect/callback"
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
SECRET = "s3cret"  # nosec B105: a test secret

CATALOGUE: dict[str, dict[str, Any]] = {
    "userapp": {
        "grant": "authorization_code",
        "token_url": "https://user.example.com/oauth/token",
        "required": ["client_id", "client_secret", "redirect_uri"],
    },
    "pkceapp": {
        "grant": "authorization_code",
        "token_url": "https://pkce.example.com/oauth/token",
        "required": ["client_id", "client_secret", "redirect_uri"],
        "pkce": True,
    },
    "service": {"grant": "client_credentials", "required": ["client_id", "client_secret"]},
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sbx(clock: FakeClock) -> Iterator[Sandbox]:
    with Sandbox(clock=clock, catalogue=CATALOGUE) as sandbox:
        sandbox.register("userapp", "web", SECRET, redirect_uri=REDIRECT, name="Acme Reports")
        sandbox.register("pkceapp", "web", SECRET, redirect_uri=REDIRECT)
        yield sandbox


def open_page(sbx: Sandbox, provider: str = "userapp", **params: str) -> requests.Response:
    query = {"client_id": "web", "redirect_uri": REDIRECT, "response_type": "code", **params}
    return requests.get(
        sbx.authorize_url(provider), params=query, headers=BROWSER, allow_redirects=False
    )


def ticket_of(page: requests.Response) -> str:
    found = re.search(r'name="consent" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def press(
    sbx: Sandbox, page: requests.Response, decision: str, provider: str = "userapp"
) -> requests.Response:
    """What the browser sends when the user clicks a button of the page."""
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action and action.group(1) == f"/{provider}/oauth2/auth"
    return requests.post(
        sbx.url + action.group(1),
        data={"consent": ticket_of(page), "decision": decision},
        headers=BROWSER,
        allow_redirects=False,
    )


def back_at(answer: requests.Response) -> dict[str, list[str]]:
    """The query the redirect_uri receives (asserting it is the registered one)."""
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    return parse_qs(location.query)


def redeem(sbx: Sandbox, provider: str, code: str, **extra: str) -> requests.Response:
    return requests.post(
        sbx.token_url(provider),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "web",
            "client_secret": SECRET,
            **extra,
        },
    )


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# --------------------------------------------------------------------------- the page


def test_a_browser_gets_a_page_naming_the_app_and_the_scope(sbx: Sandbox) -> None:
    # When a browser follows an authorization link
    page = open_page(sbx, scope="files.read user.profile", state="st-1")

    # Then it gets a page to decide on, and no code has been issued yet
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Location" not in page.headers
    assert '<span id="app">Acme Reports</span>' in page.text
    assert "<li>files.read</li><li>user.profile</li>" in page.text
    assert 'id="allow"' in page.text and 'id="deny"' in page.text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"


def test_the_page_names_an_app_without_a_name_by_its_client_id(sbx: Sandbox) -> None:
    page = open_page(sbx, "pkceapp")

    assert '<span id="app">web</span>' in page.text
    assert "no scope named" in page.text


def test_the_app_name_is_shown_as_text_never_as_markup(sbx: Sandbox) -> None:
    sbx.register("userapp", "web", SECRET, redirect_uri=REDIRECT, name="<script>x()</script>")

    page = open_page(sbx, scope="<b>all</b>")

    assert "<script>x()" not in page.text and "<b>all" not in page.text
    assert "&lt;script&gt;x()&lt;/script&gt;" in page.text


def test_allow_redirects_with_a_code_and_the_state(sbx: Sandbox) -> None:
    # Given the consent page of a request with a state
    page = open_page(sbx, state="st-42")

    # When the user clicks Allow
    answer = press(sbx, page, "allow")

    # Then the browser goes back to the app with a code that redeems, and the state
    assert answer.status_code == 303
    query = back_at(answer)
    assert query["state"] == ["st-42"]
    assert "error" not in query
    redeemed = redeem(sbx, "userapp", query["code"][0])
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["refresh_token"]


def test_deny_redirects_with_access_denied_and_the_state(sbx: Sandbox) -> None:
    page = open_page(sbx, state="st-7")

    answer = press(sbx, page, "deny")

    assert answer.status_code == 303
    query = back_at(answer)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["st-7"]
    assert "code" not in query


def test_a_page_is_answered_once(sbx: Sandbox) -> None:
    # Given a page whose Allow was clicked
    page = open_page(sbx, state="s")
    first = press(sbx, page, "allow")

    # When the same form is sent again (the back button, a double click)
    again = press(sbx, page, "allow")
    denied_after = press(sbx, page, "deny")

    # Then only the first gave a code; the others get an error page and go nowhere
    assert first.status_code == 303
    for answer in (again, denied_after):
        assert answer.status_code == 400
        assert "Location" not in answer.headers
        assert "already answered" in answer.text


def test_a_page_left_open_too_long_is_refused(sbx: Sandbox, clock: FakeClock) -> None:
    page = open_page(sbx)
    clock.now += CONSENT_LIFETIME + 1

    answer = press(sbx, page, "allow")

    assert answer.status_code == 400
    assert "Location" not in answer.headers


def test_a_made_up_ticket_or_decision_gets_an_error_page(sbx: Sandbox) -> None:
    page = open_page(sbx)
    url = sbx.authorize_url("userapp")

    forged = requests.post(url, data={"consent": "guess", "decision": "allow"})
    odd = requests.post(url, data={"consent": ticket_of(page), "decision": "maybe"})
    # The odd decision did not spend the page's ticket
    allowed = press(sbx, page, "allow")

    assert forged.status_code == odd.status_code == 400
    assert allowed.status_code == 303


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"client_id": "nobody"}, "Unknown app"),
        ({"redirect_uri": "https://evil.example.com/cb"}, "not registered"),
    ],
)
def test_an_unknown_app_or_a_foreign_redirect_gets_an_error_page_and_no_redirect(
    sbx: Sandbox, params: dict[str, str], says: str
) -> None:
    for headers in (BROWSER, {}):
        query = {"client_id": "web", "redirect_uri": REDIRECT, "state": "s", **params}
        answer = requests.get(
            sbx.authorize_url("userapp"), params=query, headers=headers, allow_redirects=False
        )

        assert answer.status_code == 400
        assert "Location" not in answer.headers
        assert says in answer.text


@pytest.mark.parametrize(("auto", "key"), [("allow", "code"), ("deny", "error")])
def test_scripts_answer_with_auto(sbx: Sandbox, auto: str, key: str) -> None:
    # A browser's Accept, but ?auto= decides: the scripted path of the practice section
    answer = open_page(sbx, state="s", auto=auto)

    assert answer.status_code == 302
    query = back_at(answer)
    assert key in query and query["state"] == ["s"]


def test_an_unknown_auto_value_gets_an_error_page(sbx: Sandbox) -> None:
    answer = open_page(sbx, auto="yes")

    assert answer.status_code == 400
    assert "Location" not in answer.headers


def test_a_request_that_does_not_ask_for_html_is_allowed_at_once(sbx: Sandbox) -> None:
    # curl and requests send Accept: */*: scripts written before the page keep working
    answer = requests.get(
        sbx.authorize_url("userapp"),
        params={"client_id": "web", "redirect_uri": REDIRECT, "state": "s"},
        allow_redirects=False,
    )

    assert answer.status_code == 302
    assert "code" in back_at(answer)


# --------------------------------------------------------------------------- PKCE


def allowed_code(sbx: Sandbox, provider: str, **params: str) -> str:
    page = open_page(sbx, provider, state="s", **params)
    return back_at(press(sbx, page, "allow", provider))["code"][0]


def test_with_pkce_the_code_needs_its_verifier(sbx: Sandbox) -> None:
    # Given codes bound to an S256 challenge
    verifier, challenge = pkce_pair()
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}
    code = allowed_code(sbx, "pkceapp", **pkce)

    # When they are redeemed without a verifier, with another one, then with the right one
    missing = redeem(sbx, "pkceapp", code)
    wrong = redeem(sbx, "pkceapp", code, code_verifier=pkce_pair()[0])
    right = redeem(sbx, "pkceapp", code, code_verifier=verifier)

    # Then only the matching verifier redeems (the failures did not spend the code)
    assert missing.status_code == wrong.status_code == 400
    assert missing.json()["error"] == wrong.json()["error"] == "invalid_grant"
    assert right.status_code == 200, right.text


def test_with_pkce_a_verifier_for_a_code_issued_without_challenge_is_refused(
    sbx: Sandbox,
) -> None:
    code = allowed_code(sbx, "pkceapp")

    answer = redeem(sbx, "pkceapp", code, code_verifier=pkce_pair()[0])
    plain = redeem(sbx, "pkceapp", code)

    assert answer.json()["error"] == "invalid_grant"
    assert plain.status_code == 200, plain.text


@pytest.mark.parametrize(
    "pkce",
    [
        {"code_challenge": "a" * 43, "code_challenge_method": "plain"},
        {"code_challenge": "a" * 43},  # the method defaults to plain
        {"code_challenge": "short", "code_challenge_method": "S256"},
    ],
)
def test_with_pkce_only_s256_challenges_are_taken(sbx: Sandbox, pkce: dict[str, str]) -> None:
    answer = open_page(sbx, "pkceapp", state="s", **pkce)

    assert answer.status_code == 302
    query = back_at(answer)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == ["s"]


def test_without_pkce_in_the_entry_a_challenge_is_ignored(sbx: Sandbox) -> None:
    # As a provider that does not know PKCE: the parameters mean nothing to it
    _, challenge = pkce_pair()
    code = allowed_code(sbx, "userapp", code_challenge=challenge, code_challenge_method="S256")

    assert redeem(sbx, "userapp", code).status_code == 200


def test_the_control_api_binds_codes_to_a_challenge(sbx: Sandbox) -> None:
    verifier, challenge = pkce_pair()
    control = f"{sbx.url}/_sandbox/authorize/"
    body = {"client_id": "web", "redirect_uri": REDIRECT, "code_challenge": challenge}

    bound = requests.post(control + "pkceapp", json=body)
    refused = requests.post(control + "userapp", json=body)

    assert refused.status_code == 400 and "PKCE" in refused.json()["error"]
    code = bound.json()["code"]
    assert redeem(sbx, "pkceapp", code).json()["error"] == "invalid_grant"
    assert redeem(sbx, "pkceapp", code, code_verifier=verifier).status_code == 200


def test_the_catalogue_s_pkce_key_is_a_boolean() -> None:
    with pytest.raises(ValueError, match="pkce"):
        Sandbox(catalogue={"x": {**CATALOGUE["pkceapp"], "pkce": "yes"}})
