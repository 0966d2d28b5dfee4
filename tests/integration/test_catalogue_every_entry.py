"""Every entry of the catalogue beyond the five seeds, spoken to a real token endpoint: the
sandbox serves each entry's dialect from its data (independently of the code that builds
requests), and tokenvend, reading the same entry, gets a token from it. Field values are
drawn from each entry's own url_fields patterns."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import token_for_drawn_connection
from tokenvend.sandbox import Sandbox
from tokenvend_core.catalogue.spec import SEEDS, load_specs

WELL_KNOWN = sorted(name for name in load_specs() if name not in SEEDS)


def test_the_catalogue_has_at_least_25_cited_well_known_providers() -> None:
    specs = load_specs()
    assert len(WELL_KNOWN) >= 25
    for name in WELL_KNOWN:
        assert specs[name].docs and specs[name].docs.startswith("https://"), name
        assert specs[name].deploy is False, name  # catalogued; a stack deploys what it needs


@pytest.mark.parametrize("name", WELL_KNOWN)
def test_each_entry_gets_a_token_from_a_server_that_speaks_its_dialect(
    module_sandbox: Sandbox, name: str
) -> None:
    spec = load_specs()[name]
    if spec.client_auth == "tls_client_auth":
        pytest.skip("a client certificate: tests/integration/test_catalogue_mtls.py")

    @settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def fetches(data: st.DataObject) -> None:
        # Given a connection whose url fields are any values the entry's patterns allow,
        # when tokenvend builds and sends the entry's request
        token = token_for_drawn_connection(module_sandbox, name, spec, data)

        # Then it gets a token that outlives now, with every passed-through field
        assert token.expires_at > time.time()

    fetches()
