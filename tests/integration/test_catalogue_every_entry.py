"""Every entry of the catalogue beyond the five seeds, spoken to a real token endpoint: the
sandbox serves each entry's dialect from its data (independently of the code that builds
requests), and tokenvend, reading the same entry, gets a token from it. Field values are
drawn from each entry's own url_fields patterns."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenvend.sandbox import Sandbox
from tokenvend_core.catalogue.request import build_request
from tokenvend_core.catalogue.spec import SEEDS, load_specs, validate_secret
from tokenvend_core.refresh.endpoint import RetryPolicy, TokenEndpoint
from tokenvend_core.tokens import Token

WELL_KNOWN = sorted(name for name in load_specs() if name not in SEEDS)
FAST = RetryPolicy(base=0.01, cap=0.02, max_tries=2, connect_timeout=2, read_timeout=3)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    running = Sandbox("127.0.0.1", 0).start()
    yield running
    running.stop()


def test_the_catalogue_has_at_least_25_cited_well_known_providers() -> None:
    specs = load_specs()
    assert len(WELL_KNOWN) >= 25
    for name in WELL_KNOWN:
        assert specs[name].docs and specs[name].docs.startswith("https://"), name
        assert specs[name].deploy is False, name  # catalogued; a stack deploys what it needs


@pytest.mark.parametrize("name", WELL_KNOWN)
def test_each_entry_gets_a_token_from_a_server_that_speaks_its_dialect(
    sandbox: Sandbox, name: str
) -> None:
    spec = load_specs()[name]
    if spec.client_auth == "tls_client_auth":
        pytest.skip("a client certificate: tests/integration/test_catalogue_mtls.py")

    @settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def fetches(data: st.DataObject) -> None:
        # Given a client registered with the sandbox, and a connection whose url fields
        # are any values the entry's patterns allow
        client_id = f"client-{name}-{data.draw(st.integers(0, 10**6))}"
        attrs, secret = sandbox.demo_connection(name, client_id)
        for field, pattern in spec.url_fields.items():
            secret[field] = data.draw(st.from_regex(rf"\A(?:{pattern})\Z"), label=field)
            if field in attrs:  # a path field: the client exists at its path only
                attrs[field] = secret[field]
        sandbox.register(name, client_id, secret.get("client_secret", ""), **attrs)

        # When tokenvend builds and sends the entry's request
        checked = validate_secret(spec, secret, allow_http_loopback=True)
        request = build_request(spec, checked, allow_http_loopback=True)
        outcome = TokenEndpoint(policy=FAST).fetch(
            spec, request, deadline=time.monotonic() + 10, default_lifetime=3300
        )

        # Then it gets a token that outlives now, with every passed-through field
        assert isinstance(outcome, Token), getattr(outcome, "error", outcome)
        assert outcome.expires_at > time.time()
        assert set(outcome.extra) == set(spec.passthrough)

    fetches()
