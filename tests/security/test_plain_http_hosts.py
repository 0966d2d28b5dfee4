"""PLAIN_HTTP_HOSTS: the further hosts a stack lets token URLs name over plain HTTP (the local
stack's docker bridge address, for the functions SAM CLI runs in containers). Empty when
deployed: then no host, loopback or listed, gets a secret over plain HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from support import Stack
from tokenvend_core.catalogue.request import build_request
from tokenvend_core.catalogue.spec import spec_for, validate_secret
from tokenvend_core.errors import InvalidRequest
from tokenvend_core.settings import Settings, SettingsError


def oauth2(url: str) -> dict[str, Any]:
    return {"token_url": url, "client_id": "c", "client_secret": "SECRET-plain-http"}


BRIDGE_URL = "http://172.17.0.1:3002/oauth2/token"


def test_a_listed_host_may_be_plain_http() -> None:
    secret = oauth2(BRIDGE_URL)
    hosts = frozenset({"172.17.0.1"})
    assert validate_secret(spec_for("oauth2"), secret, plain_http_hosts=hosts) is secret
    assert build_request(spec_for("oauth2"), secret, plain_http_hosts=hosts).url == BRIDGE_URL


@pytest.mark.parametrize(
    "hosts",
    [
        frozenset(),  # deployed
        frozenset({"172.17.0.2"}),  # another host
        frozenset({"bridge.internal"}),
    ],
)
def test_an_unlisted_host_is_refused_plain_http(hosts: frozenset[str]) -> None:
    secret = oauth2(BRIDGE_URL)
    for allow_loopback in (False, True):  # the loopback setting does not reach it
        settings = {"allow_http_loopback": allow_loopback, "plain_http_hosts": hosts}
        with pytest.raises(InvalidRequest, match="https"):
            validate_secret(spec_for("oauth2"), secret, **settings)
        with pytest.raises(InvalidRequest, match="https"):
            build_request(spec_for("oauth2"), secret, **settings)


def test_listed_names_match_as_the_url_spells_them() -> None:
    hosts = Settings.from_env(
        {"TABLE_NAME": "t", "PLAIN_HTTP_HOSTS": " Bridge.Internal , fd00:0::1,172.17.0.1"}
    ).plain_http_hosts
    assert hosts == frozenset({"bridge.internal", "fd00::1", "172.17.0.1"})
    for url in (
        "http://BRIDGE.internal:8080/token",
        "http://[fd00::1]:8080/token",
        "http://[fd00:0:0::1]/token",  # the same address, spelt otherwise
    ):
        secret = oauth2(url)
        assert validate_secret(spec_for("oauth2"), secret, plain_http_hosts=hosts) is secret
    # A listed host does not stand for its subdomains
    with pytest.raises(InvalidRequest):
        subdomain = oauth2("http://x.bridge.internal/token")
        validate_secret(spec_for("oauth2"), subdomain, plain_http_hosts=hosts)


@pytest.mark.parametrize(
    "raw", ["http://172.17.0.1", "172.17.0.1:3002", "bridge/internal", "a b", "*.internal"]
)
def test_the_setting_names_hosts_only(raw: str) -> None:
    with pytest.raises(SettingsError, match="PLAIN_HTTP_HOSTS"):
        Settings.from_env({"TABLE_NAME": "t", "PLAIN_HTTP_HOSTS": raw})


def test_empty_means_none() -> None:
    for raw in ("", " ", ",", " , "):
        settings = Settings.from_env({"TABLE_NAME": "t", "PLAIN_HTTP_HOSTS": raw})
        assert settings.plain_http_hosts == frozenset()
    assert Settings.from_env({"TABLE_NAME": "t"}).plain_http_hosts == frozenset()


@pytest.mark.parametrize(
    ("listed", "fetched"),
    [
        # A deployed stack (neither setting), the URL plain http on the host the local stack
        # would list
        (frozenset(), False),
        # The sandbox's host listed, the loopback setting off: the list alone lets the
        # request through (the sandbox serves on 127.0.0.1)
        (frozenset({"127.0.0.1"}), True),
        # Another host listed
        (frozenset({"172.17.0.1"}), False),
    ],
    ids=["deployed", "this-host-listed", "another-host-listed"],
)
def test_plain_http_goes_only_to_a_listed_host(
    make_stack: Any, listed: frozenset[str], fetched: bool
) -> None:
    # Given a stack with the loopback setting off and these hosts listed, and a connection
    # whose URL is plain http on 127.0.0.1
    stack: Stack = make_stack(allow_http_loopback=False, plain_http_hosts=listed)
    stack.connect("oauth2")
    # When a workload asks for its token
    status, body, _ = stack.vend("GET", "oauth2")
    if fetched:
        # Then the provider function fetched it over plain http
        assert status == 200, body
        assert stack.sandbox.is_valid(body["access_token"])
        assert stack.sandbox.calls("oauth2") == 1
    else:
        # Then the secret is refused as invalid, and the endpoint is never called
        assert status == 500, body
        assert "https" in body["error"]["message"]
        assert stack.sandbox.calls("oauth2") == 0
