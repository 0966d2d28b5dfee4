"""Token URLs are judged as the HTTP library will use them: nothing that `urlsplit` and
urllib3 could read as different hosts, nothing but https (plain http only on loopback, and
only where the stack allows it), checked on the secret, after {field} filling, and again
when the request is built."""

from __future__ import annotations

from typing import Any

import pytest
from urllib3.util import parse_url

from tokenvend_core.catalogue.request import build_request
from tokenvend_core.catalogue.spec import spec_for, validate_secret
from tokenvend_core.errors import InvalidRequest

BASE = {"client_id": "c", "client_secret": "SECRET-url-test"}


def oauth2(url: str) -> dict[str, Any]:
    return {**BASE, "token_url": url}


REFUSED = [
    # urlsplit reads host 127.0.0.1; requests/urllib3 connect to 127.0.0.2 over plain http
    "http://127.0.0.2:8080\\@127.0.0.1/token",
    "https://good.example\\@evil.example/token",
    "https://good.example\\evil.example/token",
    "https://user:pw@auth.example.com/token",
    "https://user@auth.example.com/token",
    "https://auth.example.com@evil.example/token",
    "https://auth.example.com/token#fragment",
    "https://auth.example.com/token#",
    "https://auth.example.com/to\tken",
    "https://auth.example.com/token\n",
    "https://auth.example.com/token\r\nX-Injected: 1",
    "https://auth.example.com/to ken",
    " https://auth.example.com/token",
    "https://auth.exa mple.com/token",
    "https://auth.example.com\x00.evil/token",
    "https://auth.example.com/\x7ftoken",
    "https://\u0430\u0443th.example.com/token",  # Cyrillic letters that look Latin
    "https://auth.example.com/tökén",
    "https://auth.example.com:99999/token",
    "https://auth.example.com:port/token",
    "https:///token",
    "https://",
    "ftp://auth.example.com/token",
    "file:///etc/passwd",
    "auth.example.com/token",
    "//auth.example.com/token",
    "http://auth.example.com/token",
    "http://localhost.evil.com/token",
    "http://127.0.0.1.nip.io/token",
    "http://[::1]@evil.example/token",
    "https://auth.example.com/../token",
    "https://auth.example.com/a/%2e%2e/token",
    "https://[fe80::1%25eth0]/token",
    "https://auth.example.com%2F@evil.example/token",
    "https://auth.example.com/{tenant_id}/token",
]


@pytest.mark.parametrize("url", REFUSED)
@pytest.mark.parametrize("allow_http_loopback", [False, True])
def test_urls_the_http_library_could_read_otherwise_are_refused(
    url: str, allow_http_loopback: bool
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_secret(spec_for("oauth2"), oauth2(url), allow_http_loopback=allow_http_loopback)
    assert url.strip() not in caught.value.message  # it says what is wrong, not the URL
    with pytest.raises(InvalidRequest):  # nor does a request for it get built
        build_request(spec_for("oauth2"), oauth2(url), allow_http_loopback=allow_http_loopback)


def test_the_backslash_url_really_is_two_hosts() -> None:
    # Why the check above matters: the two parsers disagree about where the request goes.
    from urllib.parse import urlsplit

    url = "http://127.0.0.2:8080\\@127.0.0.1/token"
    assert urlsplit(url).hostname == "127.0.0.1"
    assert parse_url(url).host == "127.0.0.2"


ACCEPTED = [
    "https://auth.example.com/oauth2/token",
    "https://AUTH.example.com:8443/oauth2/token?api-version=2",
    "https://127.0.0.1:8443/token",  # https on loopback is https
    "https://localhost/token",
    "https://[::1]:8443/token",
    "https://auth.example.com./token",
    "https://auth-1.example.com/a%20b/token",
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_plain_https_urls_are_accepted(url: str) -> None:
    secret = oauth2(url)
    assert validate_secret(spec_for("oauth2"), secret) is secret
    assert build_request(spec_for("oauth2"), secret).url == url


LOOPBACK = [
    "http://127.0.0.1/",
    "http://127.0.0.1:3002/oauth2/token",
    "http://localhost:8080/token",
    "http://[::1]:8080/token",
    "http://127.0.0.5/token",
]


@pytest.mark.parametrize("url", LOOPBACK)
def test_plain_http_only_on_loopback_and_only_where_allowed(url: str) -> None:
    secret = oauth2(url)
    with pytest.raises(InvalidRequest, match="https"):
        validate_secret(spec_for("oauth2"), secret)
    with pytest.raises(InvalidRequest, match="https"):
        build_request(spec_for("oauth2"), secret, allow_http_loopback=False)
    assert validate_secret(spec_for("oauth2"), secret, allow_http_loopback=True) is secret
    assert build_request(spec_for("oauth2"), secret, allow_http_loopback=True).url == url


AZURE = {"client_id": "c", "client_secret": "SECRET-url-test", "scope": "api://r/.default"}


@pytest.mark.parametrize(
    "tenant",
    [
        "t/../evil",
        "/../",
        "..",
        ".",
        "t@evil.example",
        "evil.example\\@t",
        "t\\evil",
        "t?x=1",
        "t#x",
        "t x",
        "t\n",
        "t%2F..",
        "https://evil.example",
        "tenant-ü",
        "",
    ],
)
def test_a_field_filled_into_the_path_stays_one_plain_segment(tenant: str) -> None:
    secret = {**AZURE, "tenant_id": tenant}
    with pytest.raises(InvalidRequest):
        validate_secret(spec_for("azure"), secret, allow_http_loopback=True)
    with pytest.raises(InvalidRequest):
        build_request(spec_for("azure"), secret)


@pytest.mark.parametrize("corp", ["ding/../x", "ding@evil", "ding\\x", ".."])
def test_dingtalk_corp_id_stays_one_plain_segment(corp: str) -> None:
    secret = {"client_id": "c", "client_secret": "SECRET-url-test", "corp_id": corp}
    with pytest.raises(InvalidRequest):
        validate_secret(spec_for("dingtalk"), secret)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("tenant_id", "72f988bf-86f1-41af-91ab-2d7cd011db47", True),
        ("tenant_id", "contoso.partner.onmschina.cn", True),
        ("authority_host", "https://login.partner.microsoftonline.cn", True),
        ("authority_host", "https://login.microsoftonline.com/", True),
        ("authority_host", "http://login.chinacloudapi.cn", False),
        ("authority_host", "https://login.chinacloudapi.cn\\@evil.example", False),
        ("authority_host", "https://user@login.chinacloudapi.cn", False),
        ("authority_host", "https://login.chinacloudapi.cn#", False),
        ("authority_host", "login.chinacloudapi.cn", False),
    ],
)
def test_azure_urls_are_judged_after_filling(field: str, value: str, allowed: bool) -> None:
    secret = {**AZURE, "tenant_id": "t", field: value}
    if allowed:
        validate_secret(spec_for("azure"), secret)
        url = build_request(spec_for("azure"), secret).url
        assert url.startswith("https://") and url.endswith("/oauth2/v2.0/token")
    else:
        with pytest.raises(InvalidRequest):
            validate_secret(spec_for("azure"), secret, allow_http_loopback=True)


# A stack without the loopback setting never sends over plain http, through the whole vend
# path: test_plain_http_hosts.py::test_plain_http_goes_only_to_a_listed_host[deployed].
