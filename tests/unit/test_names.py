from __future__ import annotations

import base64

import pytest

from tokenvend_core.errors import InvalidRequest, UnknownProvider
from tokenvend_core.names import (
    check_connection,
    check_provider,
    parse_min_ttl,
    parse_refresh_body,
)


@pytest.mark.parametrize("name", ["a", "corp-a", "Corp.A_1", "9" * 64])
def test_good_connection_names(name: str) -> None:
    assert check_connection(name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "a b", "a/b", "x" * 65, "ä", None, 3, "a\n"])
def test_bad_connection_names(name: object) -> None:
    with pytest.raises(InvalidRequest):
        check_connection(name)


def test_providers() -> None:
    assert check_provider("wps365") == "wps365"
    with pytest.raises(UnknownProvider):
        check_provider("slack")
    with pytest.raises(InvalidRequest):
        check_provider("Slack!")


@pytest.mark.parametrize(("raw", "value"), [(None, 300), ("0", 0), ("3600", 3600), (42, 42)])
def test_min_ttl(raw: object, value: int) -> None:
    assert parse_min_ttl(raw) == value


@pytest.mark.parametrize("raw", ["-1", "3601", "1e3", " 5", "", "五", True, 1.5, "99999"])
def test_bad_min_ttl(raw: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_min_ttl(raw)


def test_refresh_bodies() -> None:
    digest = "AB" * 32
    assert parse_refresh_body(None) is None
    assert parse_refresh_body("  ") is None
    assert parse_refresh_body("{}") is None
    assert parse_refresh_body(f'{{"rejected_token_sha256": "{digest}"}}') == digest.lower()
    encoded = base64.b64encode(f'{{"rejected_token_sha256": "{digest}"}}'.encode()).decode()
    assert parse_refresh_body(encoded, is_base64=True) == digest.lower()
    for bad in ("[", "[]", '"x"', '{"rejected_token_sha256": 5}', "{" * 5000, "@@@"):
        with pytest.raises(InvalidRequest):
            parse_refresh_body(bad, is_base64=bad == "@@@")
    # A "base64" body that is not even ASCII, or decodes to bytes that are not UTF-8
    for bad in ("\x80", "é", base64.b64encode(b"\xff\xfe").decode()):
        with pytest.raises(InvalidRequest, match="JSON"):
            parse_refresh_body(bad, is_base64=True)
