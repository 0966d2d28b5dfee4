"""Each provider's token endpoint, spoken to over real HTTP on 127.0.0.1: its success, every
error shape providers.md lists, and the faults a real endpoint throws."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from support import FAST, REDIRECT_URI, connection_secret
from tokenvend.sandbox import Fault, Sandbox
from tokenvend_core.catalogue.answer import Failure
from tokenvend_core.catalogue.request import build_request
from tokenvend_core.catalogue.spec import spec_for, validate_secret
from tokenvend_core.errors import AuthorizationRequired, ProviderRejected, ProviderUnavailable
from tokenvend_core.refresh.endpoint import RetryPolicy, TokenEndpoint
from tokenvend_core.tokens import Token


@pytest.fixture(autouse=True)
def sandbox(module_sandbox: Sandbox) -> Sandbox:
    module_sandbox.reset()
    return module_sandbox


def configured(sandbox: Sandbox, provider: str, **extra: Any) -> dict[str, Any]:
    value = connection_secret(sandbox, provider, "t")
    attrs = {
        k: v for k, v in value.items() if k in ("tenant_id", "scope", "corp_id", "redirect_uri")
    }
    sandbox.register(provider, value["client_id"], value["client_secret"], **attrs)
    value.update(extra)
    return validate_secret(spec_for(provider), value, allow_http_loopback=True)


def fetch(
    provider: str,
    secret: dict[str, Any],
    *,
    policy: RetryPolicy = FAST,
    deadline: float = 3.0,
    **kw: Any,
) -> Token | Failure:
    spec = spec_for(provider)
    request = build_request(spec, secret, allow_http_loopback=True, **kw)
    return TokenEndpoint(policy=policy).fetch(
        spec, request, deadline=time.monotonic() + deadline, default_lifetime=3300
    )


@pytest.mark.parametrize("provider", ["aspose", "azure", "dingtalk", "oauth2"])
def test_client_credentials_success(sandbox: Sandbox, provider: str) -> None:
    secret = configured(sandbox, provider)
    before = time.time()
    outcome = fetch(provider, secret)
    assert isinstance(outcome, Token), outcome
    assert sandbox.is_valid(outcome.access_token)
    assert before + 3500 <= outcome.expires_at <= time.time() + 3600
    assert outcome.token_type.lower() == "bearer"


def test_aspose_query_and_form_styles(sandbox: Sandbox) -> None:
    query = configured(sandbox, "aspose")
    assert isinstance(fetch("aspose", query), Token)
    seen = sandbox.requests("aspose")[-1]
    assert seen.query["client_secret"] == query["client_secret"]  # documented v4 style

    form = configured(sandbox, "aspose", token_url=sandbox.token_url("aspose", style="form"))
    assert isinstance(fetch("aspose", form), Token)
    seen = sandbox.requests("aspose")[-1]
    assert "client_secret" not in seen.query
    assert seen.form["grant_type"] == "client_credentials"


def test_oauth2_uses_http_basic_with_form_encoded_credentials(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "oauth2")
    secret["client_secret"] = secret["client_secret"]  # registered as is
    assert isinstance(fetch("oauth2", secret), Token)
    seen = sandbox.requests("oauth2")[-1]
    raw = seen.headers["Authorization"].split(" ", 1)[1]
    assert base64.b64decode(raw).decode().startswith(secret["client_id"] + ":")
    assert "client_secret" not in seen.form
    assert seen.form["scope"] == "read write"


def test_dingtalk_sends_json(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "dingtalk")
    assert isinstance(fetch("dingtalk", secret), Token)
    seen = sandbox.requests("dingtalk")[-1]
    assert seen.headers["Content-Type"].startswith("application/json")
    assert json.loads(seen.body)["grant_type"] == "client_credentials"


def test_extra_params_are_sent(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "azure", extra_params={"Type": "oauth2"})
    assert isinstance(fetch("azure", secret), Token)
    assert sandbox.requests("azure")[-1].form["Type"] == "oauth2"


def test_wps365_code_exchange_then_refresh(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "wps365")
    code = sandbox.authorize(secret["client_id"], REDIRECT_URI)
    first = fetch("wps365", secret, code=code)
    assert isinstance(first, Token) and first.refresh_token
    assert first.refresh_expires_at is not None and first.refresh_expires_at > time.time() + 86400
    secret["refresh_token"] = first.refresh_token
    second = fetch("wps365", secret)
    assert isinstance(second, Token)
    assert second.refresh_token and second.refresh_token != first.refresh_token
    # The old refresh token is dead now: the connection needs a new authorization.
    secret["refresh_token"] = first.refresh_token
    third = fetch("wps365", secret)
    assert isinstance(third, Failure) and isinstance(third.error, AuthorizationRequired)
    assert third.permanent and "invalid_grant" in third.error.message
    assert first.refresh_token not in third.error.message


def test_wps365_without_refresh_token_needs_authorization(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "wps365")
    with pytest.raises(AuthorizationRequired):
        fetch("wps365", secret)
    assert sandbox.calls("wps365") == 0


LIFETIMES = [
    ({"access_token": "a1", "expires_in": "7200"}, 7200),
    ({"access_token": "a2", "expires_in": 3599.0}, 3599),
    ({"access_token": "a3"}, 3300),  # no lifetime at all: the default
    ({"access_token": "a4", "expires_in": "soon"}, 3300),
]


@pytest.mark.parametrize(("body", "lifetime"), LIFETIMES)
def test_lifetimes(sandbox: Sandbox, body: dict[str, Any], lifetime: int) -> None:
    secret = configured(sandbox, "oauth2")
    sandbox.inject("oauth2", Fault.success(body))
    now = time.time()
    outcome = fetch("oauth2", secret)
    assert isinstance(outcome, Token)
    assert abs(outcome.expires_at - (now + lifetime)) <= 2


def test_jwt_exp_when_no_expires_in(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "oauth2")
    exp = int(time.time()) + 1234

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    jwt = f"{part({'alg': 'RS256'})}.{part({'exp': exp, 'sub': 'x'})}.c2ln"
    sandbox.inject("oauth2", Fault.success({"access_token": jwt, "token_type": "Bearer"}))
    outcome = fetch("oauth2", secret)
    assert isinstance(outcome, Token) and outcome.expires_at == exp


def test_default_lifetime_from_the_secret(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "oauth2", default_lifetime=600)
    sandbox.inject("oauth2", Fault.success({"access_token": "opaque"}))
    spec = spec_for("oauth2")
    outcome = TokenEndpoint(policy=FAST).fetch(
        spec,
        build_request(spec, secret, allow_http_loopback=True),
        deadline=time.monotonic() + 3,
        default_lifetime=secret["default_lifetime"],
    )
    assert isinstance(outcome, Token) and abs(outcome.expires_at - time.time() - 600) <= 2


# provider, fault, error class, permanent, a text the caller's message must carry
REJECTIONS = [
    ("aspose", Fault.oauth_error("invalid_client"), ProviderRejected, True, "invalid_client"),
    ("azure", Fault.azure_error(7000215, "invalid_client", 401), ProviderRejected, True, "AADSTS7000215"),
    ("azure", Fault.azure_error(7000222, "invalid_client", 401), ProviderRejected, True, "AADSTS7000222"),
    ("azure", Fault.azure_error(700016, "unauthorized_client"), ProviderRejected, True, "AADSTS700016"),
    ("azure", Fault.azure_error(70011, "invalid_scope"), ProviderRejected, True, "AADSTS70011"),
    ("azure", Fault.azure_error(90002, "invalid_request"), ProviderRejected, True, "AADSTS90002"),
    ("dingtalk", Fault.dingtalk_error("invalid.client"), ProviderRejected, True, "invalid.client"),
    ("dingtalk", Fault.dingtalk_error("unsupported.grant.type"), ProviderRejected, True, "unsupported.grant.type"),
    ("dingtalk", Fault.dingtalk_error("unauthorized.client", 401), ProviderRejected, True, "unauthorized.client"),
    ("oauth2", Fault.oauth_error("invalid_client", 401), ProviderRejected, True, "invalid_client"),
    ("oauth2", Fault.oauth_error("invalid_scope"), ProviderRejected, True, "invalid_scope"),
    ("oauth2", Fault.oauth_error("unsupported_grant_type"), ProviderRejected, True, "unsupported_grant_type"),
    ("wps365", Fault.wps_error("invalid_client", 40000002), ProviderRejected, True, "invalid_client"),
    ("wps365", Fault.wps_error("invalid_grant"), AuthorizationRequired, True, "invalid_grant"),
    ("wps365", Fault.wps_error("invalid_request", desc="'redirect_uri' parameter does not match"), ProviderRejected, True, "redirect_uri"),
]  # fmt: skip


@pytest.mark.parametrize(("provider", "fault", "error", "permanent", "shown"), REJECTIONS)
def test_rejections_are_permanent_and_carry_the_providers_code(
    sandbox: Sandbox, provider: str, fault: Fault, error: type, permanent: bool, shown: str
) -> None:
    secret = (
        configured(sandbox, provider, refresh_token="rt-1")
        if provider == "wps365"
        else configured(sandbox, provider)
    )
    sandbox.inject(provider, fault)
    outcome = fetch(provider, secret)
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, error)
    assert outcome.permanent is permanent and not outcome.retry
    assert shown in outcome.error.message
    assert secret["client_secret"] not in outcome.error.message
    assert "\r" not in outcome.error.message and "\n" not in outcome.error.message
    assert sandbox.calls(provider) == 1  # a permanent failure is not retried


TRANSIENT = [
    ("dingtalk", Fault.dingtalk_error("server.error", 500)),
    ("dingtalk", Fault.dingtalk_error("unknownError", 500)),
    ("dingtalk", Fault.dingtalk_error("Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", 403)),
    ("azure", Fault.html(502)),
    ("azure", Fault.plain(503)),
    ("oauth2", Fault.html(400, "proxy says no")),
    ("oauth2", Fault.garbage()),
    ("oauth2", Fault.success({"token_type": "Bearer"})),  # 200 without a token
    ("oauth2", Fault.oauth_error("temporarily_unavailable", 503)),
    ("aspose", Fault(status=500, body="")),
]


@pytest.mark.parametrize(("provider", "fault"), TRANSIENT)
def test_transient_failures_are_retried_then_succeed(
    sandbox: Sandbox, provider: str, fault: Fault
) -> None:
    secret = configured(sandbox, provider)
    sandbox.inject(provider, fault, fault)
    outcome = fetch(provider, secret)
    assert isinstance(outcome, Token), outcome
    assert sandbox.calls(provider) == 3


@pytest.mark.parametrize(("provider", "fault"), TRANSIENT)
def test_transient_failures_that_persist_end_as_unavailable(
    sandbox: Sandbox, provider: str, fault: Fault
) -> None:
    secret = configured(sandbox, provider)
    sandbox.inject(provider, *[fault] * 4)
    outcome = fetch(provider, secret)
    assert isinstance(outcome, Failure) and isinstance(outcome.error, ProviderUnavailable)
    assert not outcome.permanent
    assert sandbox.calls(provider) == 4
    assert outcome.error.retry_after is not None


def test_429_retry_after_is_honoured(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "azure")
    sandbox.inject("azure", Fault.throttle(retry_after=1))
    started = time.monotonic()
    outcome = fetch("azure", secret, deadline=5)
    assert isinstance(outcome, Token)
    assert time.monotonic() - started >= 1.0  # waited as asked
    assert sandbox.calls("azure") == 2


def test_retry_after_beyond_the_deadline_stops_with_it(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "azure")
    sandbox.inject("azure", Fault.throttle(retry_after=60))
    outcome = fetch("azure", secret, deadline=2)
    assert isinstance(outcome, Failure) and isinstance(outcome.error, ProviderUnavailable)
    assert outcome.error.retry_after == 60
    assert "throttled" in outcome.error.message
    assert sandbox.calls("azure") == 1


def test_timeout_is_transient(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "oauth2")
    sandbox.inject("oauth2", Fault(status=200, delay=2.0))
    policy = RetryPolicy(base=0.01, cap=0.02, max_tries=2, connect_timeout=0.5, read_timeout=0.3)
    outcome = fetch("oauth2", secret, policy=policy, deadline=3)
    assert isinstance(outcome, Token), outcome  # the second try got through
    assert sandbox.calls("oauth2") == 2


def test_dropped_connection_is_transient(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "dingtalk")
    sandbox.inject("dingtalk", Fault(drop=True))
    outcome = fetch("dingtalk", secret)
    assert isinstance(outcome, Token)


def test_connection_refused_is_transient() -> None:
    secret = {"token_url": "http://127.0.0.1:9/token", "client_id": "c", "client_secret": "s3cret"}
    outcome = fetch("oauth2", secret, deadline=1)
    assert isinstance(outcome, Failure) and isinstance(outcome.error, ProviderUnavailable)
    assert "s3cret" not in outcome.error.message


def test_redirects_are_never_followed(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "azure")
    sandbox.inject(
        "azure", Fault.redirect("https://login.partner.microsoftonline.cn/t/oauth2/v2.0/token?x=1")
    )
    outcome = fetch("azure", secret)
    assert isinstance(outcome, Failure) and isinstance(outcome.error, ProviderRejected)
    assert "login.partner.microsoftonline.cn" in outcome.error.message
    assert "x=1" not in outcome.error.message
    assert sandbox.calls("azure") == 1  # the POST did not become a GET elsewhere


def test_query_style_secret_never_reaches_a_message(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "aspose")
    sandbox.inject(
        "aspose", Fault.redirect(f"{sandbox.url}/elsewhere?client_secret={secret['client_secret']}")
    )
    outcome = fetch("aspose", secret)
    assert isinstance(outcome, Failure)
    assert secret["client_secret"] not in outcome.error.message


def test_echoed_secret_in_a_description_is_scrubbed(sandbox: Sandbox) -> None:
    secret = configured(sandbox, "oauth2")
    sandbox.inject(
        "oauth2", Fault.oauth_error("invalid_client", 401, f"bad secret {secret['client_secret']}")
    )
    outcome = fetch("oauth2", secret)
    assert isinstance(outcome, Failure)
    assert secret["client_secret"] not in outcome.error.message
    assert "[redacted]" in outcome.error.message


def test_requests_go_out_as_the_session_would_send_them(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Token requests go around Session.request (xray_requests.py); they keep its behaviour:
    # the session's headers, and the proxy the environment names.
    secret = configured(sandbox, "oauth2")
    secret["token_url"] = "http://127.0.0.2:9/oauth2/token"  # nothing listens there
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", sandbox.url)
    assert isinstance(fetch("oauth2", secret), Token)  # the sandbox answered, as the proxy
    seen = sandbox.requests("oauth2")[-1]
    assert seen.headers["User-Agent"] == "tokenvend/0.1"
    assert seen.headers["Authorization"].startswith("Basic ")
