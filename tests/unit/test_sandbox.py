"""The sandbox's token endpoints, over real HTTP on 127.0.0.1.

The sandbox is itself an HTTP server, so these tests talk to it over loopback sockets:
that is the unit under test. Every test gets its own sandbox on a free port and a clock
it can move.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from servers import standalone_sandbox
from support import FakeClock
from tokenvend.sandbox import PROVIDERS, Fault, Sandbox

SEEDS = ("aspose", "wps365", "azure", "dingtalk", "oauth2")

SCOPE = "https://microsoftgraph.chinacloudapi.cn/.default"
REDIRECT = "https://app.example.com/callback"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sbx(clock: FakeClock) -> Iterator[Sandbox]:
    with Sandbox(clock=clock) as sandbox:
        yield sandbox


def jwt_parts(token: str) -> tuple[dict, dict, bytes]:
    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    header, payload, signature = token.split(".")
    return json.loads(decode(header)), json.loads(decode(payload)), decode(signature)


# --------------------------------------------------------------------------- aspose


def aspose_query(sbx: Sandbox, client_id: str = "asp", secret: str = "asp-secret"):
    return requests.post(
        sbx.token_url("aspose"), params={"client_id": client_id, "client_secret": secret}
    )


def test_aspose_query_style_issues_a_jwt_shaped_token(sbx: Sandbox, clock: FakeClock) -> None:
    sbx.register("aspose", "asp", "asp-secret")

    resp = aspose_query(sbx)

    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    header, payload, signature = jwt_parts(body["access_token"])
    assert header["alg"] == "RS256"
    assert payload["iss"] == "https://api.aspose.cloud"
    assert payload["client_id"] == "asp"
    assert payload["nbf"] == int(clock.now)
    assert payload["exp"] == int(clock.now) + 3600
    assert payload["jti"].startswith("sbx-aspose-")
    assert len(signature) == 256
    assert sbx.is_valid(body["access_token"])


def test_aspose_form_style_reads_the_form_body(sbx: Sandbox) -> None:
    sbx.register("aspose", "asp", "asp-secret", lifetime=86400)

    resp = requests.post(
        sbx.token_url("aspose", style="form"),
        data={
            "grant_type": "client_credentials",
            "client_id": "asp",
            "client_secret": "asp-secret",
        },
    )

    assert resp.status_code == 200
    assert resp.json()["expires_in"] == 86400
    assert sbx.requests("aspose")[0].form["client_id"] == "asp"
    assert sbx.token_url("aspose", style="form").endswith("/aspose/connect/token")


def test_aspose_tokens_are_unique_per_issuance(sbx: Sandbox) -> None:
    sbx.register("aspose", "asp", "asp-secret")

    tokens = {aspose_query(sbx).json()["access_token"] for _ in range(3)}

    assert len(tokens) == 3


@pytest.mark.parametrize(
    ("client_id", "secret"), [("asp", "wrong"), ("nobody", "asp-secret"), ("", "")]
)
def test_aspose_bad_credentials_are_invalid_client(sbx: Sandbox, client_id, secret) -> None:
    sbx.register("aspose", "asp", "asp-secret")

    resp = aspose_query(sbx, client_id, secret)

    assert resp.status_code == 400
    assert resp.json() == {"error": "invalid_client"}


def test_aspose_query_url_ignores_credentials_in_the_form_body(sbx: Sandbox) -> None:
    sbx.register("aspose", "asp", "asp-secret")

    resp = requests.post(
        sbx.token_url("aspose"),
        data={
            "grant_type": "client_credentials",
            "client_id": "asp",
            "client_secret": "asp-secret",
        },
    )

    assert resp.json() == {"error": "invalid_client"}


@pytest.mark.parametrize(
    ("grant", "error"), [(None, "invalid_request"), ("password", "unsupported_grant_type")]
)
def test_aspose_form_style_checks_the_grant(sbx: Sandbox, grant, error) -> None:
    sbx.register("aspose", "asp", "asp-secret")
    form = {"client_id": "asp", "client_secret": "asp-secret"}
    if grant:
        form["grant_type"] = grant

    resp = requests.post(sbx.token_url("aspose", style="form"), data=form)

    assert (resp.status_code, resp.json()) == (400, {"error": error})


# --------------------------------------------------------------------------- wps365


@pytest.fixture
def wps(sbx: Sandbox) -> Sandbox:
    sbx.register("wps365", "wps-app", "wps-key", redirect_uri=REDIRECT, lifetime=7200)
    return sbx


def wps_post(sbx: Sandbox, **form: str) -> requests.Response:
    return requests.post(
        sbx.token_url("wps365"), data={"client_id": "wps-app", "client_secret": "wps-key", **form}
    )


def redeem(
    sbx: Sandbox, code: str, redirect_uri: str = REDIRECT, **client: str
) -> requests.Response:
    """The authorization code grant, by wps-app unless `client` says otherwise."""
    return wps_post(
        sbx, grant_type="authorization_code", code=code, redirect_uri=redirect_uri, **client
    )


def refresh(sbx: Sandbox, refresh_token: str) -> requests.Response:
    return wps_post(sbx, grant_type="refresh_token", refresh_token=refresh_token)


def assert_wps_error(resp: requests.Response, msg: str) -> dict:
    assert resp.status_code == 400
    body = resp.json()
    assert body["msg"] == msg
    assert isinstance(body["code"], int)
    assert body["code"] != 0
    assert isinstance(body["debug"]["desc"], str)
    return body


def test_wps_code_redeems_for_the_five_fields(wps: Sandbox) -> None:
    code = wps.authorize("wps-app", REDIRECT, state="xyz")

    resp = redeem(wps, code)

    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
        "token_type",
    }
    assert body["access_token"].startswith("sbx-wps365-")
    assert body["expires_in"] == 7200
    assert body["refresh_expires_in"] == 2592000
    assert body["token_type"] == "bearer"
    assert wps.refresh_token_of("wps-app") == body["refresh_token"]


def test_wps_code_is_single_use(wps: Sandbox) -> None:
    code = wps.authorize("wps-app", REDIRECT)
    assert redeem(wps, code).status_code == 200

    again = redeem(wps, code)

    assert_wps_error(again, "invalid_grant")


def test_wps_code_expires(wps: Sandbox, clock: FakeClock) -> None:
    code = wps.authorize("wps-app", REDIRECT)
    clock.advance(601)

    assert_wps_error(redeem(wps, code), "invalid_grant")


def test_wps_redirect_uri_must_match_and_a_mismatch_does_not_spend_the_code(
    wps: Sandbox,
) -> None:
    code = wps.authorize("wps-app", REDIRECT)

    body = assert_wps_error(redeem(wps, code, "https://evil.example.com/cb"), "invalid_request")

    assert body["code"] == 40000001
    assert body["debug"]["desc"] == "'redirect_uri' parameter does not match"
    assert redeem(wps, code).status_code == 200


def test_wps_code_of_another_client_is_invalid_grant(wps: Sandbox) -> None:
    wps.register("wps365", "other-app", "other-key")
    code = wps.authorize("other-app", REDIRECT)

    assert_wps_error(redeem(wps, code), "invalid_grant")


def test_wps_refresh_tokens_rotate(wps: Sandbox) -> None:
    first = redeem(wps, wps.authorize("wps-app", REDIRECT)).json()

    second = refresh(wps, first["refresh_token"])

    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["access_token"] != first["access_token"]
    assert wps.refresh_token_of("wps-app") == rotated["refresh_token"]
    assert_wps_error(refresh(wps, first["refresh_token"]), "invalid_grant")
    assert refresh(wps, rotated["refresh_token"]).status_code == 200


def test_wps_refresh_expires_in_counts_down_and_is_not_extended(
    wps: Sandbox, clock: FakeClock
) -> None:
    first = redeem(wps, wps.authorize("wps-app", REDIRECT)).json()
    clock.advance(1000)

    second = refresh(wps, first["refresh_token"]).json()

    assert second["refresh_expires_in"] == 2592000 - 1000
    clock.advance(2592000 - 1000)
    assert_wps_error(refresh(wps, second["refresh_token"]), "invalid_grant")
    assert wps.refresh_token_of("wps-app") is None


def test_wps_revoked_refresh_tokens_are_invalid_grant(wps: Sandbox) -> None:
    first = redeem(wps, wps.authorize("wps-app", REDIRECT)).json()

    wps.revoke_refresh_tokens("wps-app")

    assert_wps_error(refresh(wps, first["refresh_token"]), "invalid_grant")
    assert wps.refresh_token_of("wps-app") is None


def test_wps_refresh_token_of_another_client_is_invalid_grant(wps: Sandbox) -> None:
    wps.register("wps365", "other-app", "other-key")
    code = wps.authorize("other-app", REDIRECT)
    other = redeem(wps, code, client_id="other-app", client_secret="other-key").json()

    assert_wps_error(refresh(wps, other["refresh_token"]), "invalid_grant")


def test_wps_bad_secret_is_invalid_client(wps: Sandbox) -> None:
    code = wps.authorize("wps-app", REDIRECT)

    resp = redeem(wps, code, client_secret="wrong")

    assert_wps_error(resp, "invalid_client")


@pytest.mark.parametrize(
    ("form", "msg"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "authorization_code", "redirect_uri": REDIRECT}, "invalid_request"),
    ],
)
def test_wps_malformed_requests(wps: Sandbox, form: dict, msg: str) -> None:
    assert_wps_error(wps_post(wps, **form), msg)


def test_wps_client_credentials_gives_an_app_token(wps: Sandbox) -> None:
    body = wps_post(wps, grant_type="client_credentials").json()

    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["token_type"] == "bearer"


def test_wps_authorization_page_redirects_with_code_and_state(wps: Sandbox) -> None:
    wps.register("wps365", "web-app", "web-key", redirect_uri="https://app.example.com/cb?x=1")

    resp = requests.get(
        wps.authorize_url(),
        params={
            "client_id": "web-app",
            "redirect_uri": "https://app.example.com/cb?x=1",
            "response_type": "code",
            "state": "st-42",
        },
        allow_redirects=False,
    )

    assert resp.status_code == 302
    location = urlsplit(resp.headers["Location"])
    assert (location.netloc, location.path) == ("app.example.com", "/cb")
    query = parse_qs(location.query)
    assert query["x"] == ["1"]
    assert query["state"] == ["st-42"]
    redeemed = redeem(
        wps,
        query["code"][0],
        "https://app.example.com/cb?x=1",
        client_id="web-app",
        client_secret="web-key",
    )
    assert redeemed.status_code == 200
    assert wps.calls("wps365") == 1  # the page is not a token request


@pytest.mark.parametrize(
    "params",
    [
        {"client_id": "nobody", "redirect_uri": REDIRECT},
        {"client_id": "wps-app", "redirect_uri": "https://evil.example.com/"},
    ],
)
def test_wps_authorization_page_refuses_unknown_clients_and_foreign_redirects(
    wps: Sandbox, params: dict
) -> None:
    resp = requests.get(wps.authorize_url(), params=params, allow_redirects=False)

    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("text/html")


def test_wps_callback_page_shows_the_code_to_a_person(sbx: Sandbox) -> None:
    sbx.register("wps365", "demo", "demo-key", redirect_uri=sbx.callback_url())

    page = requests.get(sbx.authorize_url(), params={"client_id": "demo", "state": "s"})

    assert page.status_code == 200
    assert page.url.startswith(sbx.callback_url())
    code = parse_qs(urlsplit(page.url).query)["code"][0]
    assert code in page.text


def test_wps_authorize_refuses_a_redirect_uri_other_than_the_registered_one(
    wps: Sandbox,
) -> None:
    with pytest.raises(ValueError, match="redirect_uri"):
        wps.authorize("wps-app", "https://elsewhere.example.com/")
    with pytest.raises(ValueError, match="unknown"):
        wps.authorize("nobody", REDIRECT)


# --------------------------------------------------------------------------- azure


@pytest.fixture
def azure(sbx: Sandbox) -> Sandbox:
    sbx.register("azure", "az-app", "az-secret", tenant_id="tenant-a", scope=SCOPE)
    return sbx


def azure_post(sbx: Sandbox, tenant: str = "tenant-a", auth=None, **overrides: str | None):
    form: dict[str, str | None] = {
        "grant_type": "client_credentials",
        "client_id": "az-app",
        "client_secret": "az-secret",
        "scope": SCOPE,
        "Type": "oauth2",
        **overrides,
    }
    sent = {k: v for k, v in form.items() if v is not None}
    return requests.post(f"{sbx.authority_host()}/{tenant}/oauth2/v2.0/token", data=sent, auth=auth)


def assert_aadsts(resp: requests.Response, status: int, error: str, code: int) -> dict:
    assert resp.status_code == status
    body = resp.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert f"\r\nTrace ID: {body['trace_id']}" in body["error_description"]
    assert body["correlation_id"]
    assert body["timestamp"]
    assert body["error_uri"].endswith(f"code={code}")
    return body


def test_azure_client_credentials_success(azure: Sandbox, clock: FakeClock) -> None:
    resp = azure_post(azure)

    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == 3600
    _, claims, _ = jwt_parts(body["access_token"])
    assert claims["aud"] == SCOPE.removesuffix("/.default")
    assert claims["tid"] == "tenant-a"
    assert claims["appid"] == "az-app"
    assert claims["exp"] == int(clock.now) + 3600
    assert claims["jti"].startswith("sbx-azure-")


def test_azure_accepts_http_basic(azure: Sandbox) -> None:
    resp = azure_post(azure, auth=("az-app", "az-secret"), client_id=None, client_secret=None)

    assert resp.status_code == 200


def test_azure_token_url_keeps_the_tenant_placeholder(azure: Sandbox) -> None:
    template = azure.token_url("azure")
    assert "{tenant_id}" in template

    resp = requests.post(
        template.format(tenant_id="tenant-a"),
        data={
            "grant_type": "client_credentials",
            "client_id": "az-app",
            "client_secret": "az-secret",
            "scope": SCOPE,
        },
    )

    assert resp.status_code == 200


def test_azure_unknown_tenant_is_aadsts90002(azure: Sandbox) -> None:
    assert_aadsts(azure_post(azure, tenant="tenant-z"), 400, "invalid_request", 90002)


def test_azure_bad_secret_is_401_aadsts7000215(azure: Sandbox) -> None:
    body = assert_aadsts(azure_post(azure, client_secret="nope"), 401, "invalid_client", 7000215)
    assert "nope" not in json.dumps(body)


def test_azure_unknown_client_is_aadsts700016(azure: Sandbox) -> None:
    assert_aadsts(azure_post(azure, client_id="ghost"), 400, "unauthorized_client", 700016)


@pytest.mark.parametrize(
    "scope", ["https://microsoftgraph.chinacloudapi.cn/User.Read", "https://other/.default"]
)
def test_azure_bad_scope_is_aadsts70011(azure: Sandbox, scope: str) -> None:
    assert_aadsts(azure_post(azure, scope=scope), 400, "invalid_scope", 70011)


def test_azure_v1_endpoint_answers_numbers_as_strings(azure: Sandbox, clock: FakeClock) -> None:
    resp = requests.post(
        f"{azure.authority_host()}/tenant-a/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "az-app",
            "client_secret": "az-secret",
            "resource": SCOPE.removesuffix("/.default"),
        },
    )

    body = resp.json()
    assert body["expires_in"] == "3600"
    assert body["expires_on"] == str(int(clock.now) + 3600)


# --------------------------------------------------------------------------- dingtalk


@pytest.fixture
def ding(sbx: Sandbox) -> Sandbox:
    sbx.register("dingtalk", "ding-app", "ding-secret", corp_id="corp-a", lifetime=7200)
    sbx.register("dingtalk", "ding-app", "ding-secret", corp_id="corp-b", lifetime=7200)
    return sbx


def ding_post(sbx: Sandbox, corp: str = "corp-a", **overrides):
    body = {
        "client_id": "ding-app",
        "client_secret": "ding-secret",
        "grant_type": "client_credentials",
        **overrides,
    }
    return requests.post(sbx.token_url("dingtalk", corp_id=corp), json=body)


def assert_ding_error(resp: requests.Response, status: int, code: str) -> None:
    assert resp.status_code == status
    body = resp.json()
    assert body["code"] == code
    assert set(body) == {"code", "message", "requestid"}


def test_dingtalk_success(ding: Sandbox) -> None:
    resp = ding_post(ding)

    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"access_token", "expires_in"}
    assert body["expires_in"] == 7200
    assert body["access_token"].startswith("sbx-dingtalk-")


def test_dingtalk_gives_the_same_token_within_validity_and_a_new_one_after(
    ding: Sandbox, clock: FakeClock
) -> None:
    first = ding_post(ding).json()["access_token"]
    clock.advance(7000)

    again = ding_post(ding).json()
    assert again["access_token"] == first
    assert again["expires_in"] == 7200  # re-issue extends it

    clock.advance(7201)
    assert ding_post(ding).json()["access_token"] != first


def test_dingtalk_burst_of_concurrent_callers_all_get_the_same_token(ding: Sandbox) -> None:
    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(lambda _: ding_post(ding), range(192)))

    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["access_token"] for a in answers}) == 1
    assert ding.calls("dingtalk") == 192


def test_dingtalk_one_token_per_organization(ding: Sandbox) -> None:
    assert ding_post(ding, "corp-a").json() != ding_post(ding, "corp-b").json()


def test_dingtalk_placeholder_url(ding: Sandbox) -> None:
    assert ding.token_url("dingtalk").endswith("/dingtalk/v1.0/oauth2/{corp_id}/token")


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"client_secret": "wrong"}, 400, "invalid.client"),
        ({"client_id": "ghost"}, 400, "invalid.client"),
        ({"grant_type": "authorization_code"}, 400, "unsupported.grant.type"),
    ],
)
def test_dingtalk_refusals(ding: Sandbox, overrides: dict, status: int, code: str) -> None:
    assert_ding_error(ding_post(ding, **overrides), status, code)


def test_dingtalk_unknown_organization_is_500_unknown_error(ding: Sandbox) -> None:
    assert_ding_error(ding_post(ding, "corp-nowhere"), 500, "unknownError")


def test_dingtalk_app_not_installed_in_a_known_organization(ding: Sandbox) -> None:
    ding.register("dingtalk", "other-app", "other-secret", corp_id="corp-c")

    assert_ding_error(ding_post(ding, "corp-c"), 400, "unauthorized.client")


def test_dingtalk_wants_json_not_a_form(ding: Sandbox) -> None:
    resp = requests.post(
        ding.token_url("dingtalk", corp_id="corp-a"),
        data={"client_id": "ding-app", "client_secret": "ding-secret"},
    )

    assert_ding_error(resp, 400, "Missingclient_id")


# --------------------------------------------------------------------------- oauth2


@pytest.fixture
def oauth(sbx: Sandbox) -> Sandbox:
    sbx.register("oauth2", "svc:a b", "s&c=r:t+%", scope="read write")
    return sbx


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def test_oauth2_basic_auth_with_form_urlencoded_credentials(oauth: Sandbox) -> None:
    resp = requests.post(
        oauth.token_url("oauth2"),
        data={"grant_type": "client_credentials", "scope": "read"},
        headers={"Authorization": basic("svc:a b", "s&c=r:t+%")},
    )

    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read"
    assert body["access_token"].startswith("sbx-oauth2-")
    assert oauth.requests("oauth2")[0].basic_auth == ("svc:a b", "s&c=r:t+%")


def test_oauth2_client_secret_post_without_scope(oauth: Sandbox) -> None:
    resp = requests.post(
        oauth.token_url("oauth2"),
        data={
            "grant_type": "client_credentials",
            "client_id": "svc:a b",
            "client_secret": "s&c=r:t+%",
        },
    )

    assert resp.status_code == 200
    assert "scope" not in resp.json()


def test_oauth2_bad_credentials_are_401_with_www_authenticate(oauth: Sandbox) -> None:
    resp = requests.post(
        oauth.token_url("oauth2"),
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic("svc:a b", "wrong")},
    )

    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("form", "auth", "error"),
    [
        ({"grant_type": "password"}, True, "unsupported_grant_type"),
        ({}, True, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "admin"}, True, "invalid_scope"),
        (
            {"grant_type": "client_credentials", "client_secret": "s&c=r:t+%"},
            True,
            "invalid_request",
        ),
    ],
)
def test_oauth2_rfc6749_errors(oauth: Sandbox, form: dict, auth: bool, error: str) -> None:
    headers = {"Authorization": basic("svc:a b", "s&c=r:t+%")} if auth else {}

    resp = requests.post(oauth.token_url("oauth2"), data=form, headers=headers)

    assert (resp.status_code, resp.json()["error"]) == (400, error)


def test_oauth2_json_body_is_invalid_request(oauth: Sandbox) -> None:
    resp = requests.post(oauth.token_url("oauth2"), json={"grant_type": "client_credentials"})

    assert resp.json()["error"] == "invalid_request"


def test_oauth2_chunked_body_is_read(oauth: Sandbox) -> None:
    chunks = iter(
        [
            b"grant_type=client_credentials",
            b"&client_id=svc%3Aa+b",
            b"&client_secret=s%26c%3Dr%3At%2B%25",
        ]
    )

    resp = requests.post(
        oauth.token_url("oauth2"),
        data=chunks,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert resp.status_code == 200
    assert oauth.requests("oauth2")[0].headers["transfer-encoding"] == "chunked"


# --------------------------------------------------------------------------- faults


@pytest.fixture
def asp(sbx: Sandbox) -> Sandbox:
    sbx.register("aspose", "asp", "asp-secret")
    return sbx


def test_faults_answer_in_order_then_the_real_endpoint_does(asp: Sandbox) -> None:
    asp.inject("aspose", Fault(status=503), Fault.plain(502, "bad gateway"))

    statuses = [aspose_query(asp).status_code for _ in range(3)]

    assert statuses == [503, 502, 200]
    assert asp.calls("aspose") == 3
    assert asp.pending_faults("aspose") == 0


def test_faults_are_per_provider(asp: Sandbox) -> None:
    asp.inject("azure", Fault(status=500))

    assert aspose_query(asp).status_code == 200
    assert asp.pending_faults("azure") == 1


def test_fault_oauth_error(asp: Sandbox) -> None:
    asp.inject("aspose", Fault.oauth_error("invalid_client", 401, "nope"))

    resp = aspose_query(asp)

    assert resp.status_code == 401
    assert resp.json() == {"error": "invalid_client", "error_description": "nope"}
    assert "WWW-Authenticate" in resp.headers


def test_fault_azure_error_has_the_microsoft_shape(asp: Sandbox) -> None:
    asp.inject("azure", Fault.azure_error(7000222, "invalid_client", 401, client="az-app"))

    resp = requests.post(asp.token_url("azure", tenant_id="t"))

    body = assert_aadsts(resp, 401, "invalid_client", 7000222)
    assert "'az-app'" in body["error_description"]


def test_fault_dingtalk_error(asp: Sandbox) -> None:
    asp.inject("dingtalk", Fault.dingtalk_error("Forbidden.AccessDenied.QpsLimitForApi", 403))

    resp = requests.post(asp.token_url("dingtalk", corp_id="c"), json={})

    assert_ding_error(resp, 403, "Forbidden.AccessDenied.QpsLimitForApi")


def test_fault_wps_error(asp: Sandbox) -> None:
    asp.inject("wps365", Fault.wps_error("invalid_grant", desc="used", status=200))

    resp = requests.post(asp.token_url("wps365"))

    assert resp.status_code == 200
    assert resp.json() == {"code": 40000001, "msg": "invalid_grant", "debug": {"desc": "used"}}


def test_fault_html_and_plain(asp: Sandbox) -> None:
    asp.inject("oauth2", Fault.html(502, "<upstream> down"), Fault.plain(503, "try later"))

    page = requests.post(asp.token_url("oauth2"))
    text = requests.post(asp.token_url("oauth2"))

    assert page.status_code == 502
    assert page.headers["Content-Type"].startswith("text/html")
    assert "&lt;upstream&gt; down" in page.text
    assert (text.status_code, text.text) == (503, "try later")
    assert text.headers["Content-Type"].startswith("text/plain")


def test_fault_throttle(asp: Sandbox) -> None:
    asp.inject("azure", Fault.throttle(60))

    resp = requests.post(asp.token_url("azure", tenant_id="t"))

    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "60"
    assert resp.text == "Too Many Requests"


def test_fault_redirect_shows_why_a_token_post_must_not_follow_it(asp: Sandbox) -> None:
    target = asp.token_url("aspose") + "?client_id=asp&client_secret=asp-secret"
    asp.inject("aspose", Fault.redirect(target))

    not_followed = requests.post(asp.token_url("aspose"), allow_redirects=False)
    assert not_followed.status_code == 302
    assert not_followed.headers["Location"] == target

    asp.inject("aspose", Fault.redirect(target))
    followed = requests.post(asp.token_url("aspose"))
    assert followed.status_code == 405  # requests turned the POST into a GET
    assert [r.method for r in asp.requests("aspose")] == ["POST", "POST", "GET"]


def test_fault_garbage_is_not_json(asp: Sandbox) -> None:
    asp.inject("aspose", Fault.garbage())

    resp = aspose_query(asp)

    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):
        resp.json()


def test_fault_success_with_odd_shapes(asp: Sandbox) -> None:
    asp.inject("aspose", Fault.success({"access_token": "sbx-odd", "expires_in": "3599"}))

    assert aspose_query(asp).json() == {"access_token": "sbx-odd", "expires_in": "3599"}


def test_fault_delay_provokes_a_client_timeout(asp: Sandbox) -> None:
    asp.inject("aspose", Fault(status=200, body="{}", delay=5))

    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(asp.token_url("aspose"), timeout=0.2)

    assert aspose_query(asp).status_code == 200


def test_fault_delay_is_cut_short_by_stop(asp: Sandbox) -> None:
    asp.inject("aspose", Fault(delay=60))
    outcome: list[object] = []
    earlier = set(threading.enumerate())

    def call() -> None:
        try:
            outcome.append(requests.post(asp.token_url("aspose"), timeout=30).status_code)
        except requests.ConnectionError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while asp.calls("aspose") == 0 and caller.is_alive():
        caller.join(0.01)

    asp.stop()
    caller.join(10)

    assert not caller.is_alive()
    assert isinstance(outcome[0], requests.ConnectionError)
    for handler in set(threading.enumerate()) - earlier:
        if handler.name == "tokenvend-sandbox-handler":
            handler.join(10)  # a delay still sleeping would hold its thread for a minute
            assert not handler.is_alive()


def test_fault_drop_closes_without_answering(asp: Sandbox) -> None:
    asp.inject("aspose", Fault(drop=True))

    with pytest.raises(requests.ConnectionError):
        aspose_query(asp)

    assert aspose_query(asp).status_code == 200


def test_inject_checks_its_arguments(sbx: Sandbox) -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        sbx.inject("github", Fault())
    with pytest.raises(TypeError):
        sbx.inject("aspose", {"status": 500})  # type: ignore[arg-type]


def test_reset_clears_faults_and_counters_but_not_registrations(asp: Sandbox) -> None:
    asp.inject("aspose", Fault(), Fault())
    aspose_query(asp)

    asp.reset()

    assert asp.calls() == 0
    assert asp.requests("aspose") == []
    assert aspose_query(asp).status_code == 200


def test_echo_request_repeats_the_request_as_it_came(sbx: Sandbox) -> None:
    # Given an endpoint that echoes into the error and its description
    sbx.inject("oauth2", Fault.echo_request(401))
    secret, password = 'pw/+ =&"é', "p@ss word"
    basic = base64.b64encode(f"id:{quote(secret, safe='')}".encode()).decode()

    # When a request carries secrets in the query, the Basic header and the form body
    resp = requests.post(
        sbx.token_url("oauth2"),
        params={"client_secret": secret},
        data={"password": password},
        headers={"Authorization": f"Basic {basic}"},
    )

    # Then both fields hold them as sent on the wire, and decoded
    body = resp.json()
    assert resp.status_code == 401 and body["error"] == body["error_description"]
    text = body["error"]
    assert text.startswith("POST /oauth2/token?client_secret=pw%2F%2B+%3D%26%22%C3%A9 ")
    assert f"Authorization: Basic {basic}" in text
    assert "Body: password=p%40ss+word" in text
    assert f"client_secret={secret}" in text and f"password={password}" in text
    assert f"basic_secret={secret}" in text


def test_echo_request_chooses_its_fields_parts_and_shape(sbx: Sandbox) -> None:
    sbx.inject(
        "wps365",
        Fault.echo_request(400, ("debug.desc",), ("body",), {"code": 40000001, "msg": "x"}),
    )
    resp = requests.post(sbx.token_url("wps365"), json={"client_secret": 'a"b'})
    assert resp.json() == {
        "code": 40000001,
        "msg": "x",
        "debug": {"desc": 'Body: {"client_secret": "a\\"b"}'},
    }


def test_echo_request_in_a_redirect(sbx: Sandbox) -> None:
    sbx.inject("oauth2", Fault.echo_request(302, parts=("request", "decoded")))
    resp = requests.post(
        sbx.token_url("oauth2"), params={"client_secret": "s/1"}, allow_redirects=False
    )
    location = resp.headers["Location"]
    assert resp.status_code == 302
    assert location.startswith("https://echo.sandbox.invalid/moved/POST%20%2Foauth2%2Ftoken")
    assert "client_secret%3Ds%2F1" in location  # decoded, then quoted as a path segment
    assert location.endswith("?client_secret=s%2F1")  # the query string as it came


def test_echo_request_from_the_control_surface(sbx: Sandbox) -> None:
    queued = requests.post(
        f"{sbx.url}/_sandbox/faults/oauth2",
        json={"kind": "echo_request", "status": 400, "parts": ["decoded"]},
    )
    assert queued.json() == {"queued": 1}
    resp = requests.post(sbx.token_url("oauth2"), data={"client_secret": "s3"})
    assert resp.json() == {"error": "client_secret=s3", "error_description": "client_secret=s3"}
    with pytest.raises(ValueError):
        Fault.echo_request(parts=("headers",))
    with pytest.raises(ValueError):
        Fault.echo_request(fields=())


# --------------------------------------------------------------------------- recording


def test_requests_are_recorded_and_counted(asp: Sandbox) -> None:
    asp.register("dingtalk", "d", "ds", corp_id="c")
    aspose_query(asp)
    requests.post(
        asp.token_url("dingtalk", corp_id="c"),
        json={"client_id": "d", "client_secret": "ds", "grant_type": "client_credentials"},
    )

    assert asp.calls() == 2
    assert set(SEEDS) <= set(PROVIDERS) == set(asp.providers)
    assert asp.calls() == sum(asp.calls(p) for p in PROVIDERS)
    assert {p: asp.calls(p) for p in SEEDS} == {
        "aspose": 1,
        "wps365": 0,
        "azure": 0,
        "dingtalk": 1,
        "oauth2": 0,
    }
    rec = asp.requests("aspose")[0]
    assert rec.method == "POST"
    assert rec.path == "/aspose/v4.0/cells/connect/token"
    assert rec.query == {"client_id": "asp", "client_secret": "asp-secret"}
    ding = asp.requests("dingtalk")[0]
    assert ding.json["client_id"] == "d"
    assert ding.headers["Content-Type"] == "application/json"
    assert ding.headers["content-type"] == "application/json"
    assert json.loads(ding.body) == ding.json


def test_keep_alive_connection_serves_several_answers(asp: Sandbox) -> None:
    host, port = urlsplit(asp.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    path = "/aspose/v4.0/cells/connect/token?client_id=asp&client_secret=asp-secret"
    try:
        bodies = []
        for _ in range(2):
            conn.request("POST", path, body=b"")
            resp = conn.getresponse()
            assert resp.version == 11
            bodies.append(json.loads(resp.read()))
    finally:
        conn.close()

    assert bodies[0]["access_token"] != bodies[1]["access_token"]


def test_nothing_is_printed(asp: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    token = aspose_query(asp).json()["access_token"]
    asp.inject("aspose", Fault(drop=True))
    with pytest.raises(requests.ConnectionError):
        aspose_query(asp)
    requests.get(asp.url + "/nowhere")

    out, err = capfd.readouterr()

    assert (out, err) == ("", "")
    assert token not in out + err


def test_register_checks_attributes(sbx: Sandbox) -> None:
    with pytest.raises(TypeError, match="tenant"):
        sbx.register("aspose", "a", "s", tenant_id="t")
    with pytest.raises(ValueError, match="unknown provider"):
        sbx.register("github", "a", "s")


def test_token_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        _ = Sandbox().url


# --------------------------------------------------------------------------- control surface


def test_control_surface_drives_a_sandbox_from_outside(sbx: Sandbox) -> None:
    # Given a client registered and two faults queued over HTTP
    registered = requests.post(
        f"{sbx.url}/_sandbox/register/dingtalk",
        json={"client_id": "d", "client_secret": "ds", "corp_id": "c", "lifetime": 60},
    )
    queued = requests.post(
        f"{sbx.url}/_sandbox/faults/dingtalk",
        json=[
            {"status": 503, "body": "busy", "headers": {"Retry-After": "7"}},
            {
                "kind": "dingtalk_error",
                "code": "Forbidden.AccessDenied.QpsLimitForApp",
                "status": 403,
            },
        ],
    )
    assert (registered.status_code, queued.json()) == (200, {"queued": 2})

    # When three token requests arrive
    def ask() -> requests.Response:
        return ding_post(sbx, "c", client_id="d", client_secret="ds")

    answers = [ask() for _ in range(3)]

    # Then the faults come first, then the real token, and the counts say so
    assert [a.status_code for a in answers] == [503, 403, 200]
    assert answers[0].headers["Retry-After"] == "7"
    assert answers[2].json()["expires_in"] == 60
    calls = requests.get(f"{sbx.url}/_sandbox/calls").json()
    assert set(calls) == set(PROVIDERS)
    assert {p: calls[p] for p in SEEDS} == {
        "aspose": 0,
        "wps365": 0,
        "azure": 0,
        "dingtalk": 3,
        "oauth2": 0,
    }

    token = answers[2].json()["access_token"]
    active = requests.post(f"{sbx.url}/_sandbox/introspect", json={"token": token}).json()
    assert active == {
        "active": True,
        "provider": "dingtalk",
        "client_id": "d",
        "exp": 1_800_000_060,
    }

    assert requests.post(f"{sbx.url}/_sandbox/reset").status_code == 200
    assert requests.get(f"{sbx.url}/_sandbox/calls").json()["dingtalk"] == 0


def test_control_surface_faults_with_delay_and_drop(sbx: Sandbox) -> None:
    requests.post(
        f"{sbx.url}/_sandbox/faults/oauth2",
        json=[{"drop": True}, {"kind": "throttle", "retry_after": 5, "delay": 0.01}],
    )

    with pytest.raises(requests.ConnectionError):
        requests.post(sbx.token_url("oauth2"))
    assert requests.post(sbx.token_url("oauth2")).headers["Retry-After"] == "5"


@pytest.mark.parametrize(
    ("path", "payload", "status"),
    [
        ("/_sandbox/faults/oauth2", [{"kind": "explode"}], 400),
        ("/_sandbox/faults/oauth2", [{"stauts": 500}], 400),
        ("/_sandbox/faults/github", [{"status": 500}], 400),
        ("/_sandbox/register/azure", {"client_id": "a"}, 400),
        ("/_sandbox/register/azure", {"client_id": "a", "client_secret": "s", "bad": 1}, 400),
        ("/_sandbox/nothing", {}, 404),
    ],
)
def test_control_surface_refuses_bad_input(sbx: Sandbox, path: str, payload, status) -> None:
    resp = requests.post(sbx.url + path, json=payload)

    assert resp.status_code == status
    assert "error" in resp.json()
    assert sbx.pending_faults("oauth2") == 0


def test_control_surface_revokes_wps_grants(wps: Sandbox) -> None:
    first = redeem(wps, wps.authorize("wps-app", REDIRECT)).json()

    requests.post(f"{wps.url}/_sandbox/wps365/revoke", json={"client_id": "wps-app"})

    assert_wps_error(refresh(wps, first["refresh_token"]), "invalid_grant")


# --------------------------------------------------------------------------- main


def test_module_runs_standalone_and_stops_on_sigterm() -> None:
    with standalone_sandbox("--port", "0") as ran:
        assert ran.url.startswith("http://127.0.0.1:")
        calls = requests.get(f"{ran.url}/_sandbox/calls", timeout=5).json()
        assert calls == dict.fromkeys(PROVIDERS, 0)
    assert ran.returncode == 0
    assert ran.stderr == ""
