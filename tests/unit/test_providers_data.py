"""Providers as data: requests built from secrets, and secrets checked against the fields."""

from __future__ import annotations

from typing import Any

import pytest

from tokenvend_core.catalogue.request import build_request
from tokenvend_core.catalogue.spec import load_specs, spec_for, validate_secret
from tokenvend_core.errors import InvalidRequest

GOOD: dict[str, dict[str, Any]] = {
    "aspose": {"client_id": "c", "client_secret": "s"},
    "wps365": {"client_id": "c", "client_secret": "s", "redirect_uri": "https://a/cb"},
    "azure": {"tenant_id": "t", "client_id": "c", "client_secret": "s", "scope": "r/.default"},
    "dingtalk": {"client_id": "c", "client_secret": "s", "corp_id": "ding1"},
    "oauth2": {
        "token_url": "https://auth.example.com/token",
        "client_id": "c",
        "client_secret": "s",
    },
}


def test_every_seed_is_data() -> None:
    assert set(GOOD) <= set(load_specs())


DEFAULT_URLS = {
    "aspose": "https://api.aspose.cloud/v4.0/cells/connect/token",
    "azure": "https://login.chinacloudapi.cn/t/oauth2/v2.0/token",
    "dingtalk": "https://api.dingtalk.com/v1.0/oauth2/ding1/token",
    "oauth2": "https://auth.example.com/token",
}


@pytest.mark.parametrize("provider", DEFAULT_URLS)
def test_default_token_urls(provider: str) -> None:
    spec = spec_for(provider)
    request = build_request(spec, validate_secret(spec, GOOD[provider]))
    assert request.url == DEFAULT_URLS[provider]


def test_wps365_refreshes_with_the_stored_refresh_token() -> None:
    spec = spec_for("wps365")
    request = build_request(spec, {**GOOD["wps365"], "refresh_token": "rt"})
    assert request.url == "https://openapi.wps.cn/oauth2/token"
    assert request.form == {
        "client_id": "c", "client_secret": "s", "grant_type": "refresh_token", "refresh_token": "rt",
    }  # fmt: skip
    assert {"s", "rt"} <= set(request.secrets)  # with every encoding of each
    code = build_request(spec, GOOD["wps365"], code="abc")
    assert code.form is not None and code.form["redirect_uri"] == "https://a/cb"


def test_client_auth_defaults_and_overrides() -> None:
    aspose = spec_for("aspose")
    assert build_request(aspose, GOOD["aspose"]).query["client_secret"] == "s"
    sdk = {**GOOD["aspose"], "token_url": "https://api.aspose.cloud/connect/token"}
    assert build_request(aspose, sdk).form == {
        "client_id": "c", "client_secret": "s", "grant_type": "client_credentials",
    }  # fmt: skip
    dingtalk = build_request(spec_for("dingtalk"), GOOD["dingtalk"])
    assert dingtalk.json_body is not None and dingtalk.json_body["client_secret"] == "s"
    oauth2 = build_request(spec_for("oauth2"), GOOD["oauth2"])
    assert oauth2.headers["Authorization"].startswith("Basic ")
    posted = build_request(
        spec_for("oauth2"), {**GOOD["oauth2"], "client_auth": "client_secret_post"}
    )
    assert posted.form is not None and posted.form["client_secret"] == "s"
    azure = build_request(
        spec_for("azure"), {**GOOD["azure"], "authority_host": "https://login.microsoftonline.com/"}
    )
    assert azure.url == "https://login.microsoftonline.com/t/oauth2/v2.0/token"


def test_request_repr_hides_the_query_and_the_secret() -> None:
    request = build_request(spec_for("aspose"), GOOD["aspose"])
    assert repr(request) == "TokenRequest(url='https://api.aspose.cloud/v4.0/cells/connect/token')"


@pytest.mark.parametrize(
    ("provider", "change", "words"),
    [
        ("dingtalk", {"corp_id": None}, "corp_id"),
        ("dingtalk", {"corp_id": ""}, "corp_id"),
        ("azure", {"tenantid": "x"}, "unknown field"),
        ("oauth2", {"token_url": "http://auth.example.com/token"}, "https"),
        ("oauth2", {"client_auth": "magic"}, "client_auth"),
        ("oauth2", {"extra_params": {"a": 1}}, "extra_params"),
        ("oauth2", {"default_lifetime": 5}, "default_lifetime"),
        ("oauth2", {"allowed_principals": "arn:aws:iam::1:user/a"}, "allowed_principals"),
        ("oauth2", {"client_secret": 5}, "client_secret"),
    ],
)
def test_invalid_secrets(provider: str, change: dict[str, Any], words: str) -> None:
    value = {**GOOD[provider]}
    for key, new in change.items():
        if new is None:
            value.pop(key)
        else:
            value[key] = new
    with pytest.raises(InvalidRequest) as caught:
        validate_secret(spec_for(provider), value)
    assert words in caught.value.message
    assert caught.value.message != "s"


def test_loopback_http_is_allowed_only_where_the_stack_allows_it() -> None:
    local = {**GOOD["oauth2"], "token_url": "http://127.0.0.1:3002/oauth2/token"}
    assert validate_secret(spec_for("oauth2"), local, allow_http_loopback=True) is local
    with pytest.raises(InvalidRequest, match="https"):
        validate_secret(spec_for("oauth2"), local)
