"""The coverage docs/providers.md gives against Nango's catalogue: of its client-credentials
entries (auth_mode OAUTH2_CC, at the commit named in tests/data/nango_cc_coverage.json), each
one counted as expressible is written as a tokenvend catalogue entry in tests/data/nango_cc.toml,
and here each is checked by the catalogue's schema and loader and gets a token from a server
that speaks the dialect the entry describes. The ones that are not are listed with why."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import token_for_drawn_connection
from tokenvend.sandbox import Sandbox
from tokenvend_core.catalogue.spec import ProviderSpec, entry_spec

DATA = Path(__file__).resolve().parents[1] / "data"
COVERAGE = json.loads((DATA / "nango_cc_coverage.json").read_text())
SOURCE = (
    "https://github.com/NangoHQ/nango/blob/"
    f"{COVERAGE['source_commit']}/packages/providers/providers.yaml"
)
ENTRIES: dict[str, dict[str, Any]] = {
    name: {**entry, "docs": SOURCE}
    for name, entry in tomllib.loads((DATA / "nango_cc.toml").read_text()).items()
}


def test_the_measured_share_is_what_the_docs_say_and_at_least_90_percent() -> None:
    expressed, missing = len(ENTRIES), len(COVERAGE["not_expressible"])
    assert expressed + missing == COVERAGE["total"] == 103
    assert expressed == COVERAGE["expressed"]
    assert round(100 * expressed / COVERAGE["total"], 1) == COVERAGE["percent"] >= 90
    docs = (Path(__file__).resolve().parents[2] / "docs/providers.md").read_text()
    assert f"{expressed} of {COVERAGE['total']}" in docs and f"{COVERAGE['percent']} %" in docs
    for item in COVERAGE["not_expressible"]:
        assert f"`{item['name']}`" in docs, item["name"]
        assert item["name"] not in ENTRIES


def test_every_entry_passes_the_schema_and_the_loader() -> None:
    import jsonschema

    schema_text = resources.files("tokenvend_core.catalogue").joinpath("providers.schema.json")
    schema = json.loads(schema_text.read_text())
    jsonschema.validate(ENTRIES, schema)
    for name, entry in ENTRIES.items():
        assert isinstance(entry_spec(name, entry), ProviderSpec)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    running = Sandbox("127.0.0.1", 0, catalogue=ENTRIES).start()
    yield running
    running.stop()


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_each_expressed_entry_gets_a_token(sandbox: Sandbox, name: str) -> None:
    spec = entry_spec(name, ENTRIES[name])
    if spec.client_auth == "tls_client_auth" or "tls_client_cert" in spec.required:
        pytest.skip(
            "a client certificate, which the plain-http sandbox cannot check: "
            "tests/integration/test_catalogue_mtls.py speaks it to a TLS server"
        )

    @settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def fetches(data: st.DataObject) -> None:
        token_for_drawn_connection(sandbox, name, spec, data)

    fetches()
