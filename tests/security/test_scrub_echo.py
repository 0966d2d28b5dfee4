"""Endpoints that echo the request they received put every secret of the connection, in every
encoding tokenvend sent it in, into their answer. None of it may reach what callers are
told or what is logged: the description, the provider's error name and code, a redirect's
Location. Served by the sandbox's echoing fault over real HTTP, for every client
authentication, then through the whole vend path."""

from __future__ import annotations

import io
import json
import time
from typing import Any
from urllib.parse import quote_plus

import pytest

from support import FAST, REDIRECT_URI, Stack, connection_secret, secret_forms
from tokenvend.sandbox import Fault, Sandbox
from tokenvend_core.catalogue.answer import Failure, scrub
from tokenvend_core.catalogue.request import build_request
from tokenvend_core.catalogue.spec import CLIENT_AUTHS, spec_for, validate_secret
from tokenvend_core.errors import ProviderRejected, ProviderUnavailable
from tokenvend_core.refresh.endpoint import TokenEndpoint

# Values whose encodings all differ: '/' (quote vs quote(safe="")), ' ' ('+' vs '%20'),
# '+', '&', '=', '"' and '\\' (JSON escaping), non-ASCII (\\u escapes, UTF-8 percent escapes).
CLIENT_SECRET = 'S3cr3t/+ =&"é\\~tail-0451'
PASSWORD = 'pässw/rd+ "q"&=end-9137'
REFRESH_TOKEN = "rt/+ =&é-refresh-8812"
CODE = 'code/+ =&"é-8843'

# Where each provider's error shape puts its name or code, and its description.
NAMES = {
    "aspose": ("error",),
    "oauth2": ("error",),
    "azure": ("error", "error_codes"),
    "dingtalk": ("code",),
    "wps365": ("msg", "code"),
}
DESCRIPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "aspose": ("error_description", {"error": "invalid_request"}),
    "oauth2": ("error_description", {"error": "invalid_request"}),
    "azure": ("error_description", {"error": "invalid_request", "error_codes": [900144]}),
    "dingtalk": ("message", {"code": "invalid.client"}),
    "wps365": ("debug.desc", {"msg": "invalid_request", "code": 40000001}),
}


def all_forms(client_id: str, *values: str) -> set[str]:
    found = secret_forms(CLIENT_SECRET, client_id)
    for value in values:
        found |= secret_forms(value)
    return found


def assert_clean(text: str, secret_forms: set[str]) -> None:
    lowered = text.lower()
    leaked = sorted(form for form in secret_forms if form.lower() in lowered)
    assert not leaked, f"secret forms in {text!r}: {leaked}"


def assert_bounded(message: str) -> None:
    assert "\n" not in message and "\r" not in message
    assert message.isprintable()
    assert len(message) < 700


@pytest.fixture(autouse=True)
def sandbox(module_sandbox: Sandbox) -> Sandbox:
    module_sandbox.reset()
    return module_sandbox


def configured(sandbox: Sandbox, provider: str, style: str) -> dict[str, Any]:
    value = connection_secret(sandbox, provider, "echo")
    value.update(
        client_secret=CLIENT_SECRET, client_auth=style, extra_params={"password": PASSWORD}
    )
    if provider == "wps365":
        value["refresh_token"] = REFRESH_TOKEN
    return validate_secret(spec_for(provider), value, allow_http_loopback=True)


def fetch(provider: str, secret: dict[str, Any], **kw: Any) -> Failure:
    spec = spec_for(provider)
    outcome = TokenEndpoint(policy=FAST).fetch(
        spec,
        build_request(spec, secret, allow_http_loopback=True, **kw),
        deadline=time.monotonic() + 3,
        default_lifetime=3300,
    )
    assert isinstance(outcome, Failure), outcome
    return outcome


def carries_a_secret(part: str, style: str) -> bool:
    """Whether this part of the request holds a secret, for this client authentication."""
    return {
        "request": style == "query",
        "authorization": style == "client_secret_basic",
        "body": style != "query",
        "decoded": True,
    }[part]


CASES = [
    (provider, style, part)
    for provider in NAMES
    for style in CLIENT_AUTHS
    for part in ("request", "authorization", "body", "decoded")
]


@pytest.mark.parametrize(("provider", "style", "part"), CASES)
def test_an_echoed_request_leaves_no_secret_in_the_description(
    sandbox: Sandbox, provider: str, style: str, part: str
) -> None:
    # Given an endpoint whose error description repeats a part of the request
    secret = configured(sandbox, provider, style)
    field, body = DESCRIPTIONS[provider]
    sandbox.inject(provider, Fault.echo_request(400, (field,), (part,), body))
    # When tokenvend's request fails there
    outcome = fetch(provider, secret)
    # Then the caller is told the provider's words, with every secret taken out
    assert isinstance(outcome.error, ProviderRejected)
    message = outcome.error.message
    assert ("[redacted]" in message) is carries_a_secret(part, style), message
    assert_clean(message, all_forms(secret["client_id"], PASSWORD, REFRESH_TOKEN))
    assert_bounded(message)


@pytest.mark.parametrize(("provider", "style"), [(p, s) for p in NAMES for s in CLIENT_AUTHS])
def test_an_echoed_request_leaves_no_secret_in_the_error_name_or_code(
    sandbox: Sandbox, provider: str, style: str
) -> None:
    # Given an endpoint that puts the whole request into its error's name and code too
    secret = configured(sandbox, provider, style)
    field, _ = DESCRIPTIONS[provider]
    sandbox.inject(provider, Fault.echo_request(400, (*NAMES[provider], field)))
    outcome = fetch(provider, secret)
    assert isinstance(outcome.error, ProviderRejected)
    assert_clean(outcome.error.message, all_forms(secret["client_id"], PASSWORD, REFRESH_TOKEN))
    assert_bounded(outcome.error.message)
    for part in ("request", "authorization", "body", "decoded"):
        if carries_a_secret(part, style):
            sandbox.inject(provider, Fault.echo_request(400, NAMES[provider], (part,)))
            message = fetch(provider, secret).error.message
            assert_clean(message, all_forms(secret["client_id"], PASSWORD, REFRESH_TOKEN))
            assert_bounded(message)


@pytest.mark.parametrize("style", CLIENT_AUTHS)
def test_an_echoed_authorization_code_is_scrubbed(sandbox: Sandbox, style: str) -> None:
    secret = configured(sandbox, "wps365", style)
    field, body = DESCRIPTIONS["wps365"]
    sandbox.inject("wps365", Fault.echo_request(400, (field,), ("decoded",), body))
    outcome = fetch("wps365", secret, code=CODE, redirect_uri=REDIRECT_URI)
    assert "[redacted]" in outcome.error.message
    assert_clean(outcome.error.message, all_forms(secret["client_id"], PASSWORD, CODE))


@pytest.mark.parametrize("style", CLIENT_AUTHS)
def test_an_echo_in_a_redirects_location_is_scrubbed(sandbox: Sandbox, style: str) -> None:
    secret = configured(sandbox, "oauth2", style)
    sandbox.inject("oauth2", Fault.echo_request(302, parts=("decoded",)))
    outcome = fetch("oauth2", secret)
    assert isinstance(outcome.error, ProviderRejected) and "redirect" in outcome.error.message
    assert "echo.sandbox.invalid" in outcome.error.message
    assert "[redacted]" in outcome.error.message
    sandbox.inject("oauth2", Fault.echo_request(302))
    whole = fetch("oauth2", secret).error.message
    assert_clean(whole, all_forms(secret["client_id"], PASSWORD))
    assert_clean(outcome.error.message, all_forms(secret["client_id"], PASSWORD))
    assert_bounded(outcome.error.message)


@pytest.mark.parametrize("style", CLIENT_AUTHS)
def test_an_echo_in_a_server_error_is_scrubbed(sandbox: Sandbox, style: str) -> None:
    secret = configured(sandbox, "azure", style)
    field, body = DESCRIPTIONS["azure"]
    echo = Fault.echo_request(500, (field,), ("decoded",), body)
    sandbox.inject("azure", *[echo] * FAST.max_tries)
    outcome = fetch("azure", secret)
    assert isinstance(outcome.error, ProviderUnavailable)
    assert "[redacted]" in outcome.error.message
    assert_clean(outcome.error.message, all_forms(secret["client_id"], PASSWORD))


def test_a_providers_error_name_and_code_are_bounded_and_scrubbed(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "dingtalk", "json")
    long_code = "Forbidden." + "x" * 5000 + CLIENT_SECRET + "\r\nsecond line"
    sandbox.inject("dingtalk", Fault.dingtalk_error(long_code, 400, "no\x00pe\u202e"))
    outcome = fetch("dingtalk", secret)
    assert_bounded(outcome.error.message)
    assert len(outcome.error.message) < 400
    assert_clean(outcome.error.message, all_forms(secret["client_id"], PASSWORD))


def test_a_code_that_is_not_a_plain_value_is_not_shown(sandbox: Sandbox) -> None:
    # A structured "code" would be shown through its repr, with its own escaping: it is not
    # a code at all.
    secret = configured(sandbox, "dingtalk", "json")
    body = {"code": {"echo": CLIENT_SECRET}, "message": "nope"}
    sandbox.inject("dingtalk", Fault(status=400, body=json.dumps(body)))
    outcome = fetch("dingtalk", secret)
    assert_clean(outcome.error.message, all_forms(secret["client_id"]))


@pytest.mark.parametrize(
    "text",
    [
        f"before {quote_plus(CLIENT_SECRET).lower()} after",  # re-encoded with lower-case hex
        f"before {CLIENT_SECRET[:6]}\x00{CLIENT_SECRET[6:]} after",  # split by a control char
        f"{CLIENT_SECRET[:6]}\u200b{CLIENT_SECRET[6:]}",  # split by a zero-width space
        f"{CLIENT_SECRET.upper()}",
        "x" * 10_000 + CLIENT_SECRET,
        f"line one\r\n{CLIENT_SECRET}",
    ],
)
def test_scrub_catches_what_a_server_may_do_to_a_secret(text: str) -> None:
    secret = configured_offline()
    request = build_request(spec_for("oauth2"), secret)
    shown = scrub(text, request.secrets)
    assert_clean(shown, all_forms(secret["client_id"], PASSWORD))
    assert_bounded(shown) if shown else None
    assert len(shown) <= 240


def configured_offline() -> dict[str, Any]:
    return {
        "token_url": "https://auth.example.com/token",
        "client_id": "client id/+",
        "client_secret": CLIENT_SECRET,
        "extra_params": {"password": PASSWORD},
    }


def test_the_request_carries_every_form_of_every_secret() -> None:
    secret = {**configured_offline(), "client_auth": "client_secret_basic"}
    request = build_request(spec_for("oauth2"), secret)
    assert all_forms(secret["client_id"], PASSWORD) <= set(request.secrets)
    assert request.headers["Authorization"] in request.secrets
    wps = build_request(
        spec_for("wps365"),
        {"client_id": "c", "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT_URI},
        code=CODE,
    )
    assert secret_forms(CODE) <= set(wps.secrets)


@pytest.mark.parametrize("style", CLIENT_AUTHS)
def test_nothing_secret_reaches_the_502_or_the_logs(
    stack: Stack, style: str, capfd: pytest.CaptureFixture[str], logs: io.StringIO
) -> None:
    # Given a connection with a password among its extra parameters, at an echoing endpoint
    connection = f"echo-{style}"
    value = connection_secret(stack.sandbox, "oauth2", connection)
    value.update(
        client_secret=CLIENT_SECRET, client_auth=style, extra_params={"password": PASSWORD}
    )
    stack.put_secret("oauth2", connection, value)
    secret_forms = all_forms(value["client_id"], PASSWORD)
    # (an error name tokenvend does not know: not remembered as permanent, so each vend below
    # reaches the endpoint)
    described = Fault.echo_request(400, ("error_description",), body={"error": "echoed"})
    stack.sandbox.inject("oauth2", described)
    # When a workload asks for its token, and then twice more at endpoints that echo the
    # whole request into every field, with a 4xx, then a 5xx
    status, body, _ = stack.vend("GET", "oauth2", connection)
    assert status == 502, body
    assert "[redacted]" in body["error"]["message"]
    stack.sandbox.inject("oauth2", Fault.echo_request(400))
    status, named, _ = stack.vend("POST", "oauth2", connection, body=None)
    assert status == 502, named
    stack.sandbox.inject("oauth2", *[Fault.echo_request(503)] * FAST.max_tries)
    status, second, _ = stack.vend("POST", "oauth2", connection, body=None)
    assert status in (502, 503), second
    assert stack.sandbox.calls("oauth2") == 2 + FAST.max_tries
    assert stack.sandbox.pending_faults("oauth2") == 0
    # Then neither the answers nor anything logged or measured holds a secret
    out, err = capfd.readouterr()
    assert "refresh failed" in logs.getvalue()
    assert_clean(json.dumps(body, ensure_ascii=False), secret_forms)
    assert_clean(json.dumps(body), secret_forms)
    assert_clean(json.dumps(named, ensure_ascii=False), secret_forms)
    assert_clean(json.dumps(second, ensure_ascii=False), secret_forms)
    assert_clean(out + err + logs.getvalue(), secret_forms)
