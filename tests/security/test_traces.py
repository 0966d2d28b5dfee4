"""Every flow with the Tracer on, as in Lambda (in a process of its own, since the Tracer
patches botocore and requests for good): no secret, access token or refresh token, in any
encoding, in any trace, log line or metric, whatever the client authentication and however
the token endpoint fails; and the Tracer never captures a response."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from support import secret_forms
from tokenvend_core.refresh import xray_requests

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("probe") / "probe.json"
    run = subprocess.run(
        [sys.executable, str(HERE / "trace_probe.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    result["stdout"], result["stderr"] = run.stdout, run.stderr
    return result


def strings(node: Any) -> Iterator[str]:
    """Every string in a decoded JSON document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def test_nothing_secret_is_traced_logged_or_measured(probe: dict[str, Any]) -> None:
    entities = probe["entities"]
    names = {json.loads(entity)["name"] for entity in entities}
    # It really traced: the handlers, AWS calls and the token endpoints' HTTP.
    assert {"## lambda_handler", "dynamodb", "secretsmanager", "127.0.0.1"} <= names
    stdout = probe["stdout"]
    assert "refresh failed" in stdout and '"_aws"' in stdout  # logs and metrics too
    values = [v for group in probe["values"].values() for v in group]
    assert len(values) >= 16
    forms = {form for value in values for form in secret_forms(value)}
    for entry in probe["credentials"]:
        forms |= secret_forms(entry["client_secret"], entry["client_id"])
        for other in entry["others"]:
            forms |= secret_forms(other)
    decoded = [text for entity in entities for text in strings(json.loads(entity))]
    traced = "\n".join([*entities, *decoded]).lower()
    leaked = sorted(form for form in forms if form.lower() in traced)
    assert not leaked, f"{len(leaked)} secret forms in X-Ray entities, e.g. {leaked[:3]}"
    logged = (stdout + probe["stderr"]).lower()
    leaked = sorted(form for form in forms if form.lower() in logged)
    assert not leaked, f"{len(leaked)} secret forms in logs or metrics, e.g. {leaked[:3]}"
    for entity in map(json.loads, entities):
        if entity["name"] == "## lambda_handler":
            metadata = json.dumps(entity.get("metadata", {}))
            assert "response" not in metadata


def subsegments(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for child in node.get("subsegments", []):
        yield child
        yield from subsegments(child)


def test_every_failure_of_every_client_authentication_was_exercised(
    probe: dict[str, Any],
) -> None:
    outcomes = probe["outcomes"]
    styles = ("query", "client-secret-post", "client-secret-basic", "json")
    failures = ("refused", "connect-timeout", "read-timeout", "tls", "5xx")
    for failure in failures:
        for style in styles:
            for provider in ("oauth2", "aspose", "wps365"):
                assert outcomes[f"{provider}-{style}-{failure} vend"] == 503
            assert outcomes[f"wps365-{style}-{failure} authorize"] == "provider_unavailable"
        assert outcomes[f"aspose-default-{failure} vend"] == 503
    # The token endpoints' calls are traced as failed, by kind, with no exception recorded.
    token_calls = [
        sub
        for entity in map(json.loads, probe["entities"])
        for sub in [entity, *subsegments(entity)]
        if sub.get("name") == "127.0.0.1" and sub.get("namespace") == "remote"
    ]
    kinds = {sub.get("metadata", {}).get("tokenvend", {}).get("failure") for sub in token_calls}
    assert {"connection error", "timeout", "TLS error"} <= kinds
    assert all("cause" not in sub for sub in token_calls)
    assert all("?" not in sub["http"]["request"]["url"] for sub in token_calls)


def test_the_xray_requests_patch_is_what_xray_requests_py_relies_on(
    probe: dict[str, Any],
) -> None:
    # xray_requests.py sends token requests around what the X-Ray SDK's requests patch wraps.
    # These are the versions whose patch it was written against: after an upgrade, read
    # aws_xray_sdk/ext/requests/patch.py again, check the module's reasoning, and update it.
    assert {name: version(name) for name in xray_requests.CHECKED} == xray_requests.CHECKED
    assert probe["wrapped"] == sorted(xray_requests.PATCHED)
