"""Every flow with the Tracer on, as in Lambda (in a process of its own, since the Tracer
patches botocore and requests for good): no secret, access token or refresh token in any
trace, log line or metric, and the Tracer never captures a response."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_nothing_secret_is_traced_logged_or_measured(tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    run = subprocess.run(
        [sys.executable, str(HERE / "trace_probe.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    probe = json.loads(out.read_text())
    entities = probe["entities"]
    names = {json.loads(entity)["name"] for entity in entities}
    # It really traced: the handlers, AWS calls and the token endpoints' HTTP.
    assert {"## lambda_handler", "dynamodb", "secretsmanager", "127.0.0.1"} <= names
    everything = "\n".join(entities) + run.stdout + run.stderr
    assert "refresh failed" in run.stdout and '"_aws"' in run.stdout  # logs and metrics too
    values = [v for group in probe["values"].values() for v in group]
    assert len(values) >= 16
    for value in values:
        assert value not in everything
    for entity in map(json.loads, entities):
        if entity["name"] == "## lambda_handler":
            metadata = json.dumps(entity.get("metadata", {}))
            assert "response" not in metadata
