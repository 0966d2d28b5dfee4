"""Catalogue entries as pure logic (no sockets): how a connection's client authentication
is chosen, which secret fields it needs, every form of its secrets, how lifetimes are read,
and that the JOSE library is loaded only for a connection that signs assertions."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey, RSAKey

from tokenvend_core.catalogue.answer import expiry
from tokenvend_core.catalogue.request import build_request
from tokenvend_core.catalogue.spec import (
    client_auth_for,
    parse_catalogue,
    spec_for,
    validate_secret,
)
from tokenvend_core.errors import InvalidRequest
from tokenvend_core.refresh.endpoint import TokenEndpoint
from tokenvend_core.tokens import Token

ROOT = Path(__file__).resolve().parents[2]
RSA_PEM = RSAKey.generate_key(2048).as_pem(private=True).decode()
EC_PEM = ECKey.generate_key("P-256").as_pem(private=True).decode()


def entry(text: str) -> Any:
    head = '[acme]\ndocs = "https://docs.example.com/t"\ngrant = "client_credentials"\n'
    return parse_catalogue(head + text)["acme"]


OAUTH2 = {"token_url": "https://auth.example.com/token", "client_id": "c", "client_secret": "s"}


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ({}, ("client_secret_basic", "form")),
        ({"client_auth": "client_secret_post"}, ("client_secret_post", "form")),
        ({"client_auth": "query"}, ("client_secret_query", "query")),
        ({"client_auth": "json"}, ("client_secret_post", "json")),
        ({"request_format": "json"}, ("client_secret_basic", "json")),
        ({"client_auth": "private_key_jwt", "request_format": "query"},
         ("private_key_jwt", "query")),
    ],
)  # fmt: skip
def test_the_connection_chooses_over_the_entry(secret: dict[str, Any], expected: Any) -> None:
    assert tuple(client_auth_for(spec_for("oauth2"), secret, OAUTH2["token_url"])) == expected


def test_the_seed_entries_keep_their_requests() -> None:
    # aspose: the documented v4 URL takes everything in the query, /connect/token a form
    aspose = build_request(spec_for("aspose"), {"client_id": "c", "client_secret": "s"})
    assert aspose.query == {
        "client_id": "c",
        "client_secret": "s",
        "grant_type": "client_credentials",
    }
    assert aspose.form is None and aspose.json_body is None
    # dingtalk: a JSON body; a connection that names client_secret_post gets a form body
    ding = {"client_id": "c", "client_secret": "s", "corp_id": "ding1"}
    assert build_request(spec_for("dingtalk"), ding).json_body is not None
    posted = build_request(spec_for("dingtalk"), {**ding, "client_auth": "client_secret_post"})
    assert posted.form == {
        "client_id": "c",
        "client_secret": "s",
        "grant_type": "client_credentials",
    }


def test_private_key_jwt_needs_no_client_secret_but_a_key_that_signs() -> None:
    secret = {**OAUTH2, "client_auth": "private_key_jwt", "private_key": RSA_PEM}
    del secret["client_secret"]
    assert validate_secret(spec_for("oauth2"), secret) is secret
    with pytest.raises(InvalidRequest, match="client_secret"):
        validate_secret(
            spec_for("oauth2"), {k: v for k, v in OAUTH2.items() if k != "client_secret"}
        )
    with pytest.raises(InvalidRequest, match="private_key"):
        validate_secret(spec_for("oauth2"), {**OAUTH2, "client_auth": "private_key_jwt"})


def test_every_form_of_the_private_key_and_the_assertion_is_a_secret_form() -> None:
    spec = entry(
        'required = ["token_url", "client_id"]\nclient_auth = "private_key_jwt"\n'
        'assertion_alg = "ES256"\n'
    )
    request = build_request(spec, {**OAUTH2, "private_key": EC_PEM})
    assert request.form is not None
    assertion = request.form["client_assertion"]
    body = [line for line in EC_PEM.splitlines() if "PRIVATE KEY" not in line]
    expected = {EC_PEM, json.dumps(EC_PEM)[1:-1], assertion, assertion.rsplit(".", 1)[1]}
    expected |= {line for line in body if len(line) >= 16} | {"".join(body)}
    assert expected <= set(request.secrets)
    # and a renewed request carries its new assertion's forms as well
    renewed = request.renewed(0)
    assert renewed.form is not None and renewed.form["client_assertion"] != assertion
    assert renewed.form["client_assertion"] in renewed.secrets
    assert "PRIVATE" not in repr(request) and assertion not in repr(request)


def test_base64_of_a_secret_is_a_secret_form() -> None:
    request = build_request(spec_for("oauth2"), {**OAUTH2, "client_secret": "long-secret-123"})
    assert base64.b64encode(b"long-secret-123").decode().rstrip("=") in request.secrets


NOW = 1_999_990_000.0  # ten thousand seconds before 2033-05-18T03:33:20Z


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("seconds", 60, NOW + 60),
        ("seconds", "60", NOW + 60),
        ("seconds", None, None),
        ("seconds", "soon", None),
        ("milliseconds", 60_000, NOW + 60),
        ("milliseconds", "60000", NOW + 60),
        ("absolute", 2_000_000_000, 2_000_000_000.0),
        ("absolute", "2000000000", 2_000_000_000.0),
        ("absolute", 2_000_000_000_000, 2_000_000_000.0),
        ("absolute", "2033-05-18T03:33:20Z", 2_000_000_000.0),
        ("absolute", "2033-05-18T11:33:20+08:00", 2_000_000_000.0),
        ("absolute", "2033-05-18T03:33:20", None),  # no offset: not RFC 3339
        ("absolute", True, None),
        ("absolute", 10**15, NOW + 30 * 86400),  # capped at 30 days
        ("seconds", 10**9, NOW + 30 * 86400),
    ],
)
def test_expiry_kinds(kind: str, value: Any, expected: float | None) -> None:
    spec = entry(f'required = ["token_url", "client_id"]\nexpires_kind = "{kind}"\n')
    assert expiry(spec, value, NOW) == expected


def test_a_token_has_an_empty_extra_by_default() -> None:
    assert Token("t", "Bearer", 1).extra == {}


def test_the_endpoint_never_takes_a_ca_bundle_that_would_turn_verification_off() -> None:
    for wrong in (False, "", 0):
        with pytest.raises(ValueError, match="ca_bundle"):
            TokenEndpoint(ca_bundle=wrong)  # type: ignore[arg-type]


# The JOSE library: loaded by a connection that uses private_key_jwt, and by nothing else.
PROBE = """
import sys
from tokenvend_core.catalogue.request import build_request
from tokenvend_core.catalogue.spec import spec_for, validate_secret
from tokenvend_core.catalogue.answer import interpret
import tokenvend_core.refresh.endpoint
secret = {"token_url": "https://auth.example.com/token", "client_id": "c", "client_secret": "s"}
for auth in ("client_secret_basic", "client_secret_post", "client_secret_query", "query", "json"):
    value = validate_secret(spec_for("oauth2"), {**secret, "client_auth": auth})
    build_request(spec_for("oauth2"), value)
before = "joserfc" in sys.modules
value = {**secret, "client_auth": "private_key_jwt", "private_key": sys.argv[1]}
build_request(spec_for("oauth2"), validate_secret(spec_for("oauth2"), value))
print(before, "joserfc" in sys.modules)
"""


def test_the_jose_library_is_loaded_only_for_private_key_jwt() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, RSA_PEM],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(ROOT / "layers/core"), "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_only_the_request_module_imports_the_jose_library() -> None:
    layer = ROOT / "layers/core/tokenvend_core"
    importing = sorted(
        str(path.relative_to(layer))
        for path in layer.rglob("*.py")
        if "joserfc" in path.read_text()
    )
    assert importing == ["catalogue/request.py"]
