"""Right after start, every provider's `demo` connection has a token in the table and vends it
through the signed API; and everything tokenvend local writes to stderr dates its lines in one
format."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from e2e.harness import MODULE, PORTS, PROVIDERS, LocalProcess, introspect, token_item

# RFC 3339 in UTC to the millisecond: Powertools' `use_rfc3339` with `utc`, and log.py's.
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProcess]:
    """A stack of its own, in a directory of its own, that nothing else has asked anything."""
    directory: Path = tmp_path_factory.mktemp("fresh-stack")
    process = LocalProcess([*MODULE, *PORTS], cwd=directory)
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def test_every_demo_connection_has_a_token_when_ready_is_printed(fresh: LocalProcess) -> None:
    # When: right after `ready`, before any caller asked for anything
    calls = fresh.sandbox("GET", "calls")
    items = {provider: token_item(fresh, provider, "demo") for provider in PROVIDERS}

    # Then the token table holds a live token of the sandbox's for each demo connection
    assert [p for p, item in items.items() if item is None] == []
    tokens = {provider: str(item["access_token"]) for provider, item in items.items() if item}
    for provider, token in tokens.items():
        info = introspect(fresh, token)
        assert (info["active"], info["provider"]) == (True, provider)
    # and a first GET is served from it, without asking any token endpoint
    for provider in PROVIDERS:
        answer = fresh.call("GET", "/tokens/" + provider + "/demo?min_ttl=60")
        assert answer.status_code == 200, answer.text
        assert answer.json()["access_token"] == tokens[provider]
    assert fresh.sandbox("GET", "calls") == calls


def test_every_stderr_line_dates_itself_in_one_format(fresh: LocalProcess) -> None:
    # Given the stack's stderr from its start, with lines of both sources: its own
    # (tokenvend-local) and the functions' Powertools Logger (tokenvend)
    fresh.call("GET", "/tokens/dingtalk/demo")  # one more function line, through the API
    assert fresh.stop(signal.SIGTERM) == 0
    lines = [line for line in fresh.stderr if line.strip()]
    # Then every line is a JSON object, and every log line's timestamp has the one format
    services = set()
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        if "_aws" in record:
            continue  # a metric (CloudWatch's embedded metric format: epoch milliseconds)
        stamp = record.get("timestamp")
        assert isinstance(stamp, str) and TIMESTAMP.fullmatch(stamp), line
        assert datetime.strptime(stamp, TIMESTAMP_FORMAT).utcoffset() == timedelta(0)
        services.add(record.get("service"))
    assert {"tokenvend", "tokenvend-local"} <= services


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_providers_demo_connection_vends_a_live_token(
    stack: LocalProcess, provider: str
) -> None:
    # When
    answer = stack.call("GET", f"/tokens/{provider}/demo")

    # Then
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Pragma"] == "no-cache"
    body = answer.json()
    assert (body["provider"], body["connection"]) == (provider, "demo")
    assert body["token_type"].lower() == "bearer"
    assert body["expires_in"] > 300  # the default min_ttl
    assert body["expires_at"].endswith("Z")
    # The token is one the sandbox issued to this provider's demo client, and still valid.
    info = introspect(stack, body["access_token"])
    assert info["active"] is True
    assert info["provider"] == provider
    assert info["client_id"] == f"tokenvend-demo-{provider}"


def test_a_second_get_is_served_from_the_cache(stack: LocalProcess) -> None:
    # Given
    first = stack.call("GET", "/tokens/azure/demo").json()
    calls = stack.sandbox("GET", "calls")["azure"]

    # When
    second = stack.call("GET", "/tokens/azure/demo?min_ttl=60").json()

    # Then
    assert second["access_token"] == first["access_token"]
    assert stack.sandbox("GET", "calls")["azure"] == calls


def test_the_services_own_errors_come_through_the_api(stack: LocalProcess) -> None:
    unknown = stack.call("GET", "/tokens/dingtalk/no-such-connection")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_connection"

    bad_ttl = stack.call("GET", "/tokens/dingtalk/demo?min_ttl=99999")
    assert bad_ttl.status_code == 400
    assert bad_ttl.json()["error"]["code"] == "invalid_request"
