"""Adding a provider is one catalogue entry: in a temporary copy of the checkout, one entry
is appended to the catalogue, the template is made from it (`make template` does the same),
and `tokenvend local`, started from the copy, vends that provider's token from a generic
token server that speaks the entry's dialect, and nothing else."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import MODULE, PORTS, ROOT, LocalProcess, put_secret

# The dialect of a made-up provider, all of it data: HTTP Basic credentials beside a JSON
# body, the token at a nested field, its lifetime in milliseconds, and one answer field
# passed through to callers.
ENTRY = """
[acme]
title = "Acme Cloud"
docs = "https://acme.example/docs/oauth"
grant = "client_credentials"
token_url = "https://auth.acme.example/oauth2/token"
required = ["client_id", "client_secret"]
optional = ["scope"]
params = ["scope"]
client_auth = "client_secret_basic"
request_format = "json"
token_field = "data.token"
expires_field = "data.expires_in_ms"
expires_kind = "milliseconds"
passthrough = ["data.region"]
"""
CLIENT_ID = "acme-client"
SCOPE = "reports.read"


class AcmeTokenServer(ThreadingHTTPServer):
    """A token endpoint that answers only the request the entry describes."""

    def __init__(self, client_secret: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.client_secret = client_secret
        self.issued: list[str] = []
        self.refused: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/oauth2/token"


class _Handler(BaseHTTPRequestHandler):
    server: AcmeTokenServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        basic = base64.b64encode(f"{CLIENT_ID}:{self.server.client_secret}".encode()).decode()
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        problem = (
            "not json" if self.headers.get("Content-Type") != "application/json" else
            "no basic auth" if self.headers.get("Authorization") != f"Basic {basic}" else
            "bad body" if data != {"grant_type": "client_credentials", "scope": SCOPE} else
            None
        )  # fmt: skip
        if problem:
            self.server.refused.append(problem)
            self._answer(401, {"error": "invalid_client", "error_description": problem})
            return
        token = f"acme-{secrets.token_urlsafe(16)}"
        self.server.issued.append(token)
        self._answer(200, {"data": {"token": token, "expires_in_ms": 3_600_000, "region": "eu-1"}})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _copy_checkout(destination: Path) -> None:
    """The files git tracks, as they are in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    root = tmp_path_factory.mktemp("checkout")
    _copy_checkout(root)
    return root


@pytest.fixture(scope="module")
def server() -> Iterator[AcmeTokenServer]:
    server = AcmeTokenServer(secrets.token_urlsafe(24))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_one_catalogue_entry_is_a_whole_provider(copy: Path, server: AcmeTokenServer) -> None:
    # Given the copy's catalogue with one more entry, and its template made from it
    catalogue = copy / "layers/core/tokenvend_core/catalogue/providers.toml"
    catalogue.write_text(catalogue.read_text() + ENTRY)
    path = f"{copy / 'src'}:{copy / 'layers/core'}"
    environment = {"PYTHONPATH": path}
    made = subprocess.run(
        [sys.executable, "-m", "tokenvend.catalogue_template", "--root", str(copy)],
        env={**environment, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert "AcmeFunction:" in (copy / "template.yaml").read_text()

    # When tokenvend local starts from the copy, and a connection to the server is put
    stack = LocalProcess([*MODULE, *PORTS], cwd=copy, env=environment).wait_ready()
    try:
        put_secret(
            stack,
            "acme",
            "reports",
            {
                "client_id": CLIENT_ID,
                "client_secret": server.client_secret,
                "token_url": server.url,
                "scope": SCOPE,
            },
        )
        answer = stack.call("GET", "/tokens/acme/reports")

        # Then the provider's token is vended, with its lifetime read in milliseconds and its
        # passed-through field
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert server.refused == []
        assert server.issued == [body["access_token"]]
        assert 3500 < body["expires_in"] <= 3600
        assert body["extra"] == {"data.region": "eu-1"}
        # and the stack serves it from its cache thereafter
        again = stack.call("GET", "/tokens/acme/reports").json()
        assert again["access_token"] == body["access_token"] and len(server.issued) == 1
        # and the token came through the provider's own function, the template's
        assert stack.invocations("tokenvend-acme")
    finally:
        stack.stop()
