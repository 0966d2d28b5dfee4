"""The catalogue is checked twice, by the same rules: by its JSON Schema (named on its first
line, for editors and tools) and by the loader, which refuses a bad entry when tokenvend
reads the catalogue, naming the entry and the key."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tokenvend_core.catalogue.spec import CatalogueError, entry_spec, load_specs, parse_catalogue

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "layers/core/tokenvend_core/catalogue/providers.toml"
SCHEMA = ROOT / "layers/core/tokenvend_core/catalogue/providers.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(validator: Any, catalogue: dict[str, Any]) -> list[str]:
    return [error.message for error in validator.iter_errors(catalogue)]


def test_the_catalogue_names_its_schema_on_its_first_line() -> None:
    first = CATALOGUE.read_text().splitlines()[0]
    assert first == "#:schema ./providers.schema.json"
    assert (CATALOGUE.parent / first.split()[1]).resolve() == SCHEMA


def test_the_catalogue_is_valid_against_its_schema(validator: Any) -> None:
    catalogue = tomllib.loads(CATALOGUE.read_text())
    assert schema_errors(validator, catalogue) == []
    assert set(load_specs()) == set(catalogue)


# The format's own example, and an entry that uses every key.
SALESFORCE = {
    "title": "Salesforce",
    "docs": "https://help.salesforce.com/s/articleView?id=sf.connected_app_client_credentials_setup.htm",
    "deploy": False,
    "grant": "client_credentials",
    "token_url": "https://{my_domain}.my.salesforce.com/services/oauth2/token",
    "url_fields": {"my_domain": "[A-Za-z0-9-]{1,63}"},
    "required": ["client_id", "client_secret", "my_domain"],
    "client_auth": "client_secret_post",
    "passthrough": ["instance_url"],
}
EVERY_KEY = {
    **SALESFORCE,
    "token_url": "{base}/{my_domain}/oauth2/token",
    "optional": ["base", "scope"],
    "defaults": {"base": "https://login.example.com"},
    "params": ["scope"],
    "client_auth": "private_key_jwt",
    "request_format": "json",
    "credential_names": {"client_id": "username", "client_secret": "password"},
    "url_client_auth": {"/v2/oauth2/token": "client_secret_basic"},
    "token_field": "data.token",
    "expires_field": "data.expires_at",
    "expires_kind": "absolute",
    "passthrough": ["instance_url", "data.region", "token_type"],
    "assertion_alg": "ES256",
    "assertion_audience": "https://login.example.com/",
    "error_name": "error",
    "error_code": "code",
    "error_code_prefix": "E",
    "error_message": ["error_description", "detail.message"],
    "throttle_codes": ["Throttled"],
}


@pytest.mark.parametrize("entry", [SALESFORCE, EVERY_KEY], ids=["example", "every key"])
def test_a_good_entry_passes_both(validator: Any, entry: dict[str, Any]) -> None:
    assert schema_errors(validator, {"acme": entry}) == []
    spec = entry_spec("acme", entry)
    assert spec.passthrough == tuple(entry["passthrough"])


def bad(change: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    entry = {k: v for k, v in SALESFORCE.items() if k not in drop}
    return {**entry, **change}


REFUSED = [
    ("unknown key", bad({"client_authentication": "x"}), "unknown key(s): client_authentication"),
    ("bad client_auth", bad({"client_auth": "client_secret_jwt"}), "client_auth must be one of"),
    ("bad url_client_auth", bad({"url_client_auth": {"/t": "magic"}}), "must be one of"),
    ("bad request_format", bad({"request_format": "xml"}), "request_format must be one of"),
    ("alias against format", bad({"client_auth": "json", "request_format": "form"}),
     "contradicts"),
    ("bad expires_kind", bad({"expires_kind": "minutes"}), "expires_kind must be one of"),
    ("bad grant", bad({"grant": "password"}), "grant must be one of"),
    ("no grant", bad({}, drop=("grant",)), "needs the key grant"),
    ("no docs", bad({}, drop=("docs",)), "needs docs"),
    ("http docs", bad({"docs": "http://example.com"}), "docs must be an https URL"),
    ("no client_id", bad({"required": ["client_secret", "my_domain"]}), "client_id"),
    ("http token_url", bad({"token_url": "http://login.example.com/token"}), "https"),
    ("bad alg", bad({"assertion_alg": "HS256"}), "assertion_alg must be one of"),
    ("bad audience", bad({"assertion_audience": "login"}), "assertion_audience"),
    ("bad credential name", bad({"credential_names": {"refresh_token": "rt"}}),
     "credential_names"),
    ("deploy as text", bad({"deploy": "no"}), "deploy must be true or false"),
    ("bad token_field", bad({"token_field": "data..token"}), "token_field must be a dotted"),
]  # fmt: skip

SECRET_LOOKING = [
    "refresh_token",
    "access_token",
    "id_token",
    "token",
    "data.token",
    "data.accessToken",
    "client_secret",
    "clientSecret",
    "password",
    "private_key",
    "privateKey",
    "client_assertion",
    "data.token.value",
]
REFUSED += [
    (f"passthrough {name}", bad({"passthrough": ["instance_url", name]}), "looks like a secret")
    for name in SECRET_LOOKING
]


@pytest.mark.parametrize(("why", "entry", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_bad_entry_is_refused_by_the_schema_and_the_loader(
    validator: Any, why: str, entry: dict[str, Any], words: str
) -> None:
    # Given an entry that cannot work
    # Then the schema finds it wrong
    assert schema_errors(validator, {"acme": entry}), why
    # And the loader refuses it, saying which entry and what
    with pytest.raises(CatalogueError) as caught:
        entry_spec("acme", entry)
    assert "[acme]" in str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "name", ["instance_url", "token_type", "data.tokens_left", "scope", "region", "api_domain"]
)
def test_passthrough_names_that_are_no_secret_pass(validator: Any, name: str) -> None:
    entry = bad({"passthrough": [name]})
    assert schema_errors(validator, {"acme": entry}) == []
    assert entry_spec("acme", entry).passthrough == (name,)


@pytest.mark.parametrize("name", ["Acme", "-acme", "a" * 33, "ac me"])
def test_a_bad_provider_name_is_refused(validator: Any, name: str) -> None:
    assert schema_errors(validator, {name: SALESFORCE})
    with pytest.raises(CatalogueError, match="name"):
        entry_spec(name, SALESFORCE)


def test_the_seed_entries_need_no_docs(validator: Any) -> None:
    seed = bad({}, drop=("docs",))
    assert schema_errors(validator, {"oauth2": seed}) == []
    assert entry_spec("oauth2", seed).docs is None


@pytest.mark.parametrize(
    ("entry", "words"),
    [  # what the schema cannot see across keys, the loader does
        (bad({"url_fields": {"tenant": "[a-z]+"}}), "url_fields names no {field}"),
        (bad({"url_fields": {"my_domain": "[a-z"}}), "not a valid regular expression"),
        (bad({"required": ["client_id", "client_secret"]}), "{my_domain} is no secret field"),
        (bad({"params": ["scope"]}), "params must be secret fields"),
        (bad({}, drop=("token_url",)), "required must hold token_url"),
    ],
)
def test_what_only_the_loader_sees(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(CatalogueError) as caught:
        entry_spec("acme", entry)
    assert words in str(caught.value)


def test_a_catalogue_that_is_not_toml_is_refused() -> None:
    with pytest.raises(CatalogueError, match="not valid TOML"):
        parse_catalogue("[acme\n")
