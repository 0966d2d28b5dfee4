"""The `tokenvend` command against AWS services on 127.0.0.1: moto for Secrets Manager,
DynamoDB (the table made from template.yaml's definition) and CloudFormation; small HTTP
servers for the Lambda Invoke API and the tokenvend API. The command runs in-process
through `main([...])`, and once as the installed console script.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
import requests

from servers import LoopbackServer, send_json
from tokenvend.awslocal import MotoServer
from tokenvend.cli import main
from tokenvend.template import load_template, table_definition
from tokenvend_core.aws.store import TokenStore
from tokenvend_core.errors import ProviderRejected, ProviderUnavailable
from tokenvend_core.tokens import Token, sha256_hex

REGION = "us-east-1"
TABLE = "tokenvend-test-tokens"
SECRETS = {
    "aspose": {"client_id": "asp", "client_secret": "s-aspose-0001"},
    "wps365": {
        "client_id": "wps",
        "client_secret": "s-wps365-0001",
        "redirect_uri": "https://app.example.com/callback",
    },
    "azure": {
        "tenant_id": "t1",
        "client_id": "az",
        "client_secret": "s-azure-0001",
        "scope": "https://microsoftgraph.chinacloudapi.cn/.default",
    },
    "dingtalk": {"client_id": "ding", "client_secret": "s-dingtalk-0001", "corp_id": "corp1"},
    "oauth2": {
        "token_url": "https://auth.example.com/token",
        "client_id": "o2",
        "client_secret": "s-oauth2-0001",
    },
}


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


class Aws:
    """boto3 clients on the moto server, for the test's own Given and Then."""

    def __init__(self, url: str) -> None:
        self.sm = boto3.client("secretsmanager", endpoint_url=url, region_name=REGION)
        self.ddb = boto3.client("dynamodb", endpoint_url=url, region_name=REGION)
        self.cfn = boto3.client("cloudformation", endpoint_url=url, region_name=REGION)
        self.tokens = TokenStore(self.ddb, TABLE)

    def secret_names(self) -> list[str]:
        return sorted(entry["Name"] for entry in self.sm.list_secrets()["SecretList"])

    def secret(self, name: str) -> dict[str, Any]:
        return json.loads(self.sm.get_secret_value(SecretId=name)["SecretString"])

    def put_secret(self, provider: str, connection: str, prefix: str = "tokenvend/") -> None:
        self.sm.create_secret(
            Name=f"{prefix}{provider}/{connection}", SecretString=json.dumps(SECRETS[provider])
        )

    def item(self, provider: str, connection: str) -> dict[str, Any] | None:
        key = {"provider": {"S": provider}, "connection": {"S": connection}}
        return self.ddb.get_item(TableName=TABLE, Key=key).get("Item")

    def healthy(self, provider: str, connection: str, *, now: float, left: int) -> str:
        token = f"secret-token-{provider}-{connection}"
        assert self.tokens.try_lease(provider, connection, "test", now, seconds=60, cool_down=0)
        self.tokens.save_token(
            provider,
            connection,
            "test",
            Token(token, "Bearer", int(now) + left),
            now=now,
            secret_version="v1",
            allowed_principals=None,
        )
        return token

    def failure(self, provider: str, connection: str, error: Any, *, now: float, permanent: bool):
        assert self.tokens.try_lease(provider, connection, "test", now, seconds=60, cool_down=0)
        self.tokens.save_failure(
            provider,
            connection,
            "test",
            error,
            now=now,
            permanent=permanent,
            secret_version="v1",
            next_attempt_at=now + 120,
        )


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Aws:
    requests.post(f"{moto.url}/moto-api/reset", timeout=10).raise_for_status()
    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "TOKENVEND_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("TOKENVEND_STACK", "tokenvend")
    monkeypatch.setenv("TOKENVEND_TABLE", TABLE)
    monkeypatch.delenv("TOKENVEND_SECRETS_PREFIX", raising=False)
    aws = Aws(moto.url)
    aws.ddb.create_table(TableName=TABLE, **table_definition(load_template()))
    return aws


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def write(tmp_path: Path, value: dict[str, Any], name: str = "secret.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(value))
    return str(path)


class Recorder(LoopbackServer):
    """An HTTP server on 127.0.0.1 that records requests and answers what `reply` says."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.reply: tuple[int, Any, dict[str, str]] = (200, {}, {})
        self.serve()
        self.url = self.base_url

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        body = http.rfile.read(int(http.headers.get("Content-Length") or 0))
        self.requests.append((http.command, http.path, dict(http.headers), body))
        status, payload, headers = self.reply
        send_json(http, status, payload, headers)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


# -- connections put ------------------------------------------------------------------------


def test_put_creates_then_adds_a_version(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the connection is put for the first time
    first = SECRETS["dingtalk"]
    status, out, err = run(
        capsys, "connections", "put", "dingtalk", "corp-a", "--file", write(tmp_path, first)
    )
    # Then the secret is created
    assert (status, err) == (0, "")
    assert out.startswith("created secret tokenvend/dingtalk/corp-a (version ")
    assert aws.secret("tokenvend/dingtalk/corp-a") == first
    # When it is put again
    second = {**first, "client_secret": "s-dingtalk-0002"}
    status, out, err = run(
        capsys, "connections", "put", "dingtalk", "corp-a", "--file", write(tmp_path, second)
    )
    # Then a new version holds the new value
    assert (status, err) == (0, "")
    assert out.startswith("added version ") and out.rstrip().endswith("tokenvend/dingtalk/corp-a")
    assert "s-dingtalk-000" not in out
    assert aws.secret("tokenvend/dingtalk/corp-a") == second
    versions = aws.sm.list_secret_version_ids(SecretId="tokenvend/dingtalk/corp-a")["Versions"]
    assert len(versions) == 2


def test_put_uses_the_prefix_from_the_environment(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENVEND_SECRETS_PREFIX", "team-a/")
    path = write(tmp_path, SECRETS["aspose"])
    assert run(capsys, "connections", "put", "aspose", "cells", "--file", path)[0] == 0
    assert aws.secret_names() == ["team-a/aspose/cells"]


# -- connections list -----------------------------------------------------------------------


@pytest.fixture
def fleet(aws: Aws) -> dict[str, str]:
    """Connections in every state; returns the tokens that must never be printed."""
    now = time.time()
    tokens = {}
    for provider, connection in [
        ("dingtalk", "healthy"),
        ("azure", "failing"),
        ("oauth2", "broken"),
        ("aspose", "busy"),
        ("aspose", "new"),
        ("wps365", "alice"),
        ("wps365", "revoked"),
    ]:
        aws.put_secret(provider, connection)
    tokens["healthy"] = aws.healthy("dingtalk", "healthy", now=now - 120, left=3700)
    tokens["failing"] = aws.healthy("azure", "failing", now=now - 3000, left=3300)
    aws.failure(
        "azure", "failing", ProviderUnavailable("login timed out"), now=now - 600, permanent=False
    )
    aws.failure(
        "oauth2",
        "broken",
        ProviderRejected("the provider refused the client (invalid_client)"),
        now=now - 60,
        permanent=True,
    )
    tokens["busy"] = aws.healthy("aspose", "busy", now=now - 3000, left=3300)
    assert aws.tokens.try_lease("aspose", "busy", "refresher", now, seconds=60, cool_down=0)
    from tokenvend_core.errors import AuthorizationRequired

    aws.failure(
        "wps365",
        "revoked",
        AuthorizationRequired("the grant was refused; authorize again"),
        now=now - 30,
        permanent=True,
    )
    tokens["orphan"] = aws.healthy("dingtalk", "orphan", now=now - 10, left=600)
    return tokens


def test_list_json_shows_every_connection_and_its_state(
    aws: Aws, fleet: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "connections", "list", "--json")
    assert (status, err) == (0, "")
    for token in fleet.values():
        assert token not in out
    rows = {(row["provider"], row["connection"]): row for row in json.loads(out)}
    assert list(rows) == [
        ("aspose", "busy"),
        ("aspose", "new"),
        ("wps365", "alice"),
        ("wps365", "revoked"),
        ("azure", "failing"),
        ("dingtalk", "healthy"),
        ("dingtalk", "orphan"),
        ("oauth2", "broken"),
    ]
    status_of = {key: row["status"] for key, row in rows.items()}
    assert status_of == {
        ("aspose", "busy"): "refreshing",
        ("aspose", "new"): "no_token",
        ("wps365", "alice"): "needs_authorization",
        ("wps365", "revoked"): "needs_authorization",
        ("azure", "failing"): "failing",
        ("dingtalk", "healthy"): "ok",
        ("dingtalk", "orphan"): "no_secret",
        ("oauth2", "broken"): "permanent_error",
    }
    healthy = rows[("dingtalk", "healthy")]
    assert 3570 <= healthy["expires_in"] <= 3580
    assert healthy["refreshed_at"].endswith("Z") and healthy["last_error"] is None
    assert healthy["secret"] is True and healthy["secret_version"]
    failing = rows[("azure", "failing")]
    assert failing["last_error"] == {
        "code": "provider_unavailable",
        "message": "login timed out",
        "permanent": False,
    }
    assert failing["failing_since"].endswith("Z") and failing["failures"] == 1
    assert 250 <= failing["expires_in"] <= 300  # the old token still serves
    broken = rows[("oauth2", "broken")]
    assert broken["last_error"]["code"] == "provider_rejected"
    assert broken["last_error"]["permanent"] is True and broken["expires_in"] is None
    assert rows[("aspose", "busy")]["refreshing"] is True
    assert rows[("wps365", "revoked")]["last_error"]["code"] == "authorization_required"
    assert rows[("dingtalk", "orphan")]["secret"] is False


def test_list_table_is_readable(
    aws: Aws, fleet: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "connections", "list")
    assert (status, err) == (0, "")
    for token in fleet.values():
        assert token not in out
    lines = out.splitlines()
    assert lines[0].split() == ["PROVIDER", "CONNECTION", "STATUS", "EXPIRES", "IN", "LAST",
                                "REFRESH", "LAST", "ERROR"]  # fmt: skip
    # the columns line up: every row's status starts where the header's does
    column = lines[0].index("STATUS")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines[1:])
    row = {" ".join(line.split()[:2]): line for line in lines[1:]}
    assert len(row) == 8
    assert "  ok  " in row["dingtalk healthy"] and " 59m " in row["dingtalk healthy"]
    assert re.search(r"  2m( \d+s)? ago  ", row["dingtalk healthy"])
    assert "failing since 20" in row["azure failing"]
    assert "provider_unavailable: login timed out" in row["azure failing"]
    assert "permanent error" in row["oauth2 broken"]
    assert "provider_rejected: the provider refused" in row["oauth2 broken"]
    assert "needs authorization" in row["wps365 alice"]
    assert "refreshing" in row["aspose busy"]
    assert "no token" in row["aspose new"]
    assert "no secret" in row["dingtalk orphan"]


def test_list_with_nothing(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "connections", "list", "--json") == (0, "[]\n", "")
    status, out, _ = run(capsys, "connections", "list")
    assert (status, out) == (0, "no connections (secrets under tokenvend/)\n")


# -- connections delete ---------------------------------------------------------------------


def test_delete_removes_the_secret_and_the_cached_token(
    aws: Aws, fleet: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert aws.item("dingtalk", "healthy") is not None
    status, out, err = run(capsys, "connections", "delete", "dingtalk", "healthy")
    assert (status, err) == (0, "")
    assert out == (
        "deleted secret tokenvend/dingtalk/healthy; deleted the cached token of dingtalk/healthy\n"
    )
    assert "tokenvend/dingtalk/healthy" not in aws.secret_names()
    assert aws.item("dingtalk", "healthy") is None
    # the others are untouched
    assert aws.item("azure", "failing") is not None
    assert "tokenvend/azure/failing" in aws.secret_names()
    # and the name can be put again at once
    path = write(Path(os.environ["AWS_CONFIG_FILE"]).parent, SECRETS["dingtalk"])
    assert run(capsys, "connections", "put", "dingtalk", "healthy", "--file", path)[0] == 0


def test_delete_with_a_recovery_window(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    aws.put_secret("aspose", "cells")
    status, out, _ = run(capsys, "connections", "delete", "aspose", "cells", "--recovery-days", "7")
    assert status == 0 and out.startswith("scheduled secret tokenvend/aspose/cells for deletion")
    assert "DeletedDate" in aws.sm.describe_secret(SecretId="tokenvend/aspose/cells")


def test_delete_of_a_token_without_a_secret(
    aws: Aws, fleet: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "connections", "delete", "dingtalk", "orphan")
    assert status == 0 and out.startswith("no secret tokenvend/dingtalk/orphan;")
    assert aws.item("dingtalk", "orphan") is None


def test_delete_of_a_connection_that_does_not_exist(
    aws: Aws, fleet: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given neither a secret nor a cached token for dingtalk/nosuch
    secrets, items = aws.secret_names(), aws.ddb.scan(TableName=TABLE)["Count"]
    # When
    status, out, err = run(capsys, "connections", "delete", "dingtalk", "nosuch")
    # Then: exit 1, one line that says so, and nothing else deleted
    assert (status, out) == (1, "")
    assert err == (
        "error: no connection dingtalk/nosuch: no secret tokenvend/dingtalk/nosuch and no "
        "cached token (see tokenvend connections list)\n"
    )
    assert aws.secret_names() == secrets
    assert aws.ddb.scan(TableName=TABLE)["Count"] == items


# -- names from the stack's outputs ---------------------------------------------------------


def test_names_come_from_the_stack_outputs(
    aws: Aws,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a CloudFormation stack with the template's table and outputs, and no overrides
    template = {
        "Resources": {
            "TokenTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": table_definition(load_template()),
            }
        },
        "Outputs": {
            "TableName": {"Value": {"Ref": "TokenTable"}},
            "SecretsPrefix": {"Value": "stack-prefix/"},
            "ApiUrl": {"Value": recorder.url + "/v1"},
            "Wps365FunctionName": {"Value": "custom-wps365-function"},
        },
    }
    aws.cfn.create_stack(StackName="tv", TemplateBody=json.dumps(template))
    outputs = aws.cfn.describe_stacks(StackName="tv")["Stacks"][0]["Outputs"]
    table = next(out["OutputValue"] for out in outputs if out["OutputKey"] == "TableName")
    monkeypatch.setenv("TOKENVEND_STACK", "tv")
    monkeypatch.delenv("TOKENVEND_TABLE")
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", recorder.url)
    TokenStore(aws.ddb, table).try_lease("dingtalk", "x", "o", time.time(), seconds=9, cool_down=0)
    # When / Then: the secret goes under the stack's prefix
    path = write(tmp_path, SECRETS["dingtalk"])
    assert run(capsys, "connections", "put", "dingtalk", "x", "--file", path)[0] == 0
    assert aws.secret_names() == ["stack-prefix/dingtalk/x"]
    # the list reads the stack's table
    status, out, _ = run(capsys, "connections", "list", "--json")
    [row] = json.loads(out)
    assert (status, row["connection"], row["status"]) == (0, "x", "refreshing")
    # the API is the stack's
    recorder.reply = (200, {"access_token": "tok-stack", "expires_in": 60}, {})
    assert run(capsys, "token", "dingtalk", "x") == (0, "tok-stack\n", "")
    assert recorder.requests[-1][1] == "/v1/tokens/dingtalk/x?min_ttl=300"
    # and so is the provider function
    recorder.reply = (200, {"ok": True, "connection": "alice"}, {})
    assert run(capsys, "authorize", "wps365", "alice", "--code", "c")[0] == 0
    assert recorder.requests[-1][1] == "/2015-03-31/functions/custom-wps365-function/invocations"


# -- authorize ------------------------------------------------------------------------------


@pytest.fixture
def lambda_api(recorder: Recorder, monkeypatch: pytest.MonkeyPatch, aws: Aws) -> Recorder:
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", recorder.url)
    return recorder


def test_authorize_invokes_the_provider_function(
    lambda_api: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    lambda_api.reply = (
        200,
        {
            "ok": True,
            "connection": "alice",
            "expires_at": "2026-11-22T20:00:00Z",
            "refresh_expires_at": "2027-01-01T00:00:00Z",
        },
        {},
    )
    status, out, err = run(
        capsys,
        "authorize", "wps365", "alice", "--code", "the-code",
        "--redirect-uri", "https://app.example.com/cb",
    )  # fmt: skip
    assert (status, err) == (0, "")
    assert out == (
        "authorized wps365/alice: access token until 2026-11-22T20:00:00Z, "
        "refresh token until 2027-01-01T00:00:00Z\n"
    )
    [(method, path, headers, body)] = lambda_api.requests
    assert (method, unquote(path)) == ("POST", "/2015-03-31/functions/tokenvend-wps365/invocations")
    assert headers.get("X-Amz-Invocation-Type") in (None, "RequestResponse")
    assert json.loads(body) == {
        "action": "authorize",
        "connection": "alice",
        "code": "the-code",
        "redirect_uri": "https://app.example.com/cb",
    }


@pytest.mark.parametrize(
    ("code", "exit_status"), [("invalid_request", 2), ("provider_rejected", 1)]
)
def test_authorize_tells_the_function_error(
    code: str, exit_status: int, lambda_api: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    lambda_api.reply = (200, {"ok": False, "error": {"code": code, "message": "code used"}}, {})
    status, out, err = run(capsys, "authorize", "wps365", "alice", "--code", "c0de-value")
    assert (status, out) == (exit_status, "")
    assert err == f"error: {code}: code used\n"
    assert "redirect_uri" not in json.loads(lambda_api.requests[0][3])
    assert len(lambda_api.requests) == 1  # a code is never sent twice


def test_authorize_when_the_function_crashes(
    lambda_api: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    lambda_api.reply = (200, {"errorMessage": "boom"}, {"X-Amz-Function-Error": "Unhandled"})
    status, out, err = run(capsys, "authorize", "wps365", "alice", "--code", "c")
    assert (status, out) == (1, "")
    assert err == "error: tokenvend-wps365 failed (Unhandled); see its logs\n"


def test_authorize_when_lambda_refuses(
    lambda_api: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    lambda_api.reply = (
        404,
        {"Type": "User", "message": "Function not found: tokenvend-wps365"},
        {"X-Amzn-ErrorType": "ResourceNotFoundException"},
    )
    status, _, err = run(capsys, "authorize", "wps365", "alice", "--code", "c")
    assert status == 1
    assert err.startswith("error: cannot invoke tokenvend-wps365: Invoke: ResourceNotFound")
    assert err.count("\n") == 1
    assert len(lambda_api.requests) == 1


# -- token and refresh through the API ------------------------------------------------------


@pytest.fixture
def api(recorder: Recorder, monkeypatch: pytest.MonkeyPatch, aws: Aws) -> Recorder:
    monkeypatch.setenv("TOKENVEND_API_URL", recorder.url)
    recorder.reply = (
        200,
        {
            "provider": "dingtalk",
            "connection": "corp-a",
            "access_token": "tok-1",
            "token_type": "Bearer",
            "expires_at": "2026-11-22T20:00:00Z",
            "expires_in": 3600,
        },
        {},
    )
    return recorder


def test_token_prints_the_token_alone(api: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "token", "dingtalk", "corp-a", "--min-ttl", "0") == (0, "tok-1\n", "")
    [(method, path, headers, _)] = api.requests
    assert (method, urlsplit(path).path) == ("GET", "/tokens/dingtalk/corp-a")
    assert parse_qs(urlsplit(path).query) == {"min_ttl": ["0"]}
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert f"/{REGION}/execute-api/aws4_request" in headers["Authorization"]


def test_token_json_prints_the_whole_answer(
    api: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "token", "dingtalk", "corp-a", "--json")
    assert status == 0 and json.loads(out) == api.reply[1]


def test_a_stale_token_is_printed_with_a_warning(
    api: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = {"stale": True, "refresh_error": {"code": "provider_unavailable", "message": "down"}}
    api.reply = (200, {**api.reply[1], **stale}, {})
    status, out, err = run(capsys, "token", "dingtalk", "corp-a")
    assert (status, out) == (0, "tok-1\n")
    assert err == "warning: stale token: the refresh failed (provider_unavailable: down)\n"


def test_refresh_reports_the_rejected_token(
    api: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(
        capsys, "refresh", "dingtalk", "corp-a", "--rejected-token", "tok-0", "--json"
    )
    assert status == 0 and json.loads(out)["access_token"] == "tok-1"
    [(method, path, _, body)] = api.requests
    assert (method, path) == ("POST", "/tokens/dingtalk/corp-a/refresh")
    assert json.loads(body) == {"rejected_token_sha256": sha256_hex("tok-0")}


class RefreshingApi(Recorder):
    """The tokenvend API at its refresh route, with the token table behind it: answers
    with the token the table holds after `on_refresh` (the provider function's part) ran."""

    def __init__(self, aws: Aws) -> None:
        self.aws = aws
        self.on_refresh: Any = None
        super().__init__()

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        if self.on_refresh is not None:
            self.on_refresh()
        state = self.aws.tokens.get("dingtalk", "corp-a", consistent=True)
        assert state is not None and state.access_token
        self.reply = (
            200,
            {
                "provider": "dingtalk",
                "connection": "corp-a",
                "access_token": state.access_token,
                "token_type": "Bearer",
                "expires_at": "2026-11-22T20:00:00Z",
                "expires_in": int(state.expires_at - time.time()),
            },
            {},
        )
        super().handle(http)


@pytest.fixture
def refreshing(monkeypatch: pytest.MonkeyPatch, aws: Aws) -> Iterator[RefreshingApi]:
    server = RefreshingApi(aws)
    monkeypatch.setenv("TOKENVEND_API_URL", server.url)
    yield server
    server.close()


def test_refresh_inside_the_cool_down_says_the_token_was_not_refreshed(
    aws: Aws, refreshing: RefreshingApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a token refreshed moments ago, which the API serves again (the cool-down)
    token = aws.healthy("dingtalk", "corp-a", now=time.time() - 5, left=3600)
    # When
    status, out, err = run(capsys, "refresh", "dingtalk", "corp-a")
    # Then the token is printed, and stderr says in one line that it is not a new one, and why
    assert (status, out) == (0, token + "\n")
    said = re.fullmatch(
        r"not refreshed: the connection was refreshed (\d+)s ago, within its cool-down "
        r"\(CoolDownSeconds\); the API served the current token, which expires in \d+m( \d+s)?\n",
        err,
    )
    assert said is not None, err
    assert int(said.group(1)) >= 5
    assert token not in err


def test_refresh_names_the_stacks_cool_down_when_it_can(
    aws: Aws, refreshing: RefreshingApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the stack's CoolDownSeconds, as CloudFormation tells it
    template = {
        "Parameters": {"CoolDownSeconds": {"Type": "Number", "Default": "45"}},
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
    }
    aws.cfn.create_stack(StackName="tokenvend", TemplateBody=json.dumps(template))
    aws.healthy("dingtalk", "corp-a", now=time.time() - 5, left=3600)
    # When
    status, _, err = run(capsys, "refresh", "dingtalk", "corp-a", "--json")
    # Then
    assert status == 0
    assert re.match(
        r"not refreshed: the connection was refreshed \d+s ago and the cool-down is 45 s; ", err
    ), err


def test_refresh_that_stores_a_new_token_says_nothing_more(
    aws: Aws, refreshing: RefreshingApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a provider that re-issues the very same token (DingTalk does, within its
    # validity): a new version in the table, the same token string
    token = aws.healthy("dingtalk", "corp-a", now=time.time() - 5, left=3600)
    refreshing.on_refresh = lambda: aws.healthy("dingtalk", "corp-a", now=time.time(), left=3600)
    # When / Then: a refresh happened, so nothing is said
    assert run(capsys, "refresh", "dingtalk", "corp-a") == (0, token + "\n", "")


def test_refresh_of_an_already_replaced_token_says_so(
    aws: Aws, refreshing: RefreshingApi, capsys: pytest.CaptureFixture[str]
) -> None:
    token = aws.healthy("dingtalk", "corp-a", now=time.time() - 5, left=3600)
    status, out, err = run(capsys, "refresh", "dingtalk", "corp-a", "--rejected-token", "old")
    assert (status, out) == (0, token + "\n")
    assert err.startswith("not refreshed: the rejected token had already been replaced; ")


def test_refresh_without_the_table_says_nothing_more(
    aws: Aws, refreshing: RefreshingApi, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # Given a caller who may use the API but cannot read the token table
    token = aws.healthy("dingtalk", "corp-a", now=time.time() - 5, left=3600)
    monkeypatch.setenv("TOKENVEND_TABLE", "no-such-table")
    # When / Then: the refresh goes ahead as before
    assert run(capsys, "refresh", "dingtalk", "corp-a") == (0, token + "\n", "")


@pytest.mark.parametrize(
    ("status", "code", "headers", "exit_status", "line"),
    [
        (404, "unknown_connection", {}, 1, "error: unknown_connection: it says so\n"),
        (400, "invalid_request", {}, 2, "error: invalid_request: it says so\n"),
        (409, "authorization_required", {}, 1, "error: authorization_required: it says so\n"),
        (
            503,
            "provider_unavailable",
            {"Retry-After": "7"},
            1,
            "error: provider_unavailable: it says so (retry after 7 s)\n",
        ),
    ],
)
def test_api_errors(
    status: int,
    code: str,
    headers: dict[str, str],
    exit_status: int,
    line: str,
    api: Recorder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api.reply = (status, {"error": {"code": code, "message": "it says so"}}, headers)
    assert run(capsys, "token", "dingtalk", "corp-a") == (exit_status, "", line)
    assert run(capsys, "refresh", "dingtalk", "corp-a") == (exit_status, "", line)


# -- the console script ---------------------------------------------------------------------


def test_the_console_script(aws: Aws, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("tokenvend")
    env = dict(os.environ)
    # When a good secret comes on standard input
    done = subprocess.run(
        [str(script), "connections", "put", "dingtalk", "corp-a"],
        input=json.dumps(SECRETS["dingtalk"]),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert aws.secret_names() == ["tokenvend/dingtalk/corp-a"]
    # When a bad one does
    done = subprocess.run(
        [str(script), "connections", "put", "dingtalk", "corp-b"],
        input='{"client_id": "x"}',
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: dingtalk needs the field(s): client_secret, corp_id\n"
    assert aws.secret_names() == ["tokenvend/dingtalk/corp-a"]


# -- what a new secret version and a restorable deletion do to the cached token --------------


def test_put_with_an_access_list_puts_it_in_force_at_once(
    aws: Aws, fleet: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a cached token any caller may have
    assert "allowed_principals" not in (aws.item("dingtalk", "healthy") or {})
    # When the operator narrows the connection to one role
    role = "arn:aws:iam::123456789012:role/reports"
    path = write(tmp_path, {**SECRETS["dingtalk"], "allowed_principals": [role]})
    status, _, err = run(capsys, "connections", "put", "dingtalk", "healthy", "--file", path)
    # Then the cached token carries the new list before any refresh
    assert (status, err) == (0, "")
    state = aws.tokens.get("dingtalk", "healthy", public=True)
    assert state is not None and state.allowed_principals == (role,)
    assert state.access_token == fleet["healthy"]


def test_delete_with_a_recovery_window_keeps_only_the_fallback_grant(
    aws: Aws, fleet: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a wps365 connection whose rotated refresh token sits in the fallback place
    now = time.time()
    aws.healthy("wps365", "alice", now=now, left=3600)
    assert aws.tokens.try_lease("wps365", "alice", "test", now + 1, seconds=60, cool_down=0)
    assert aws.tokens.save_pending_grant(
        "wps365", "alice", "test", "rt-kept", None, secret_version="v1", base_sha256=None
    )
    assert aws.tokens.release("wps365", "alice", "test")
    # When the operator deletes it with a recovery window
    status, _, _ = run(capsys, "connections", "delete", "wps365", "alice", "--recovery-days", "7")
    # Then its token is gone, and its grant is kept for a restore
    assert status == 0
    state = aws.tokens.get("wps365", "alice", consistent=True)
    assert state is not None and state.access_token is None
    assert state.pending_refresh_token == "rt-kept"


# -- connect, and the link flow's redirect_uri -----------------------------------------------

LINK = {
    "url": "https://openapi.wps.cn/oauth2/auth?client_id=wps&response_type=code&state=s.m",
    "expires_at": "2030-01-01T00:10:00Z",
}


@pytest.fixture
def stack_api(aws: Aws, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """A CloudFormation stack whose ApiUrl output (with its stage) is the recorder: where the
    command finds the API when TOKENVEND_API_URL does not say."""
    template = {
        "Resources": {"Nothing": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "ApiUrl": {"Value": recorder.url + "/v1"},
            "SecretsPrefix": {"Value": "tokenvend/"},
        },
    }
    aws.cfn.create_stack(StackName="tv", TemplateBody=json.dumps(template))
    monkeypatch.setenv("TOKENVEND_STACK", "tv")
    return recorder


def test_connect_asks_the_stacks_api_for_a_link(
    stack_api: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the API answers a link
    stack_api.reply = (200, LINK, {"Cache-Control": "no-store"})

    # When
    status, out, err = run(capsys, "connect", "wps365", "alice")
    as_json = run(capsys, "connect", "wps365", "alice", "--json")

    # Then the link alone, then the whole answer, each from a signed POST to the stage's route
    assert (status, out, err) == (0, LINK["url"] + "\n", "")
    assert as_json[0] == 0 and json.loads(as_json[1]) == LINK
    for method, path, headers, body in stack_api.requests:
        assert (method, path, body) == ("POST", "/v1/connections/wps365/alice/connect", b"")
        assert f"/{REGION}/execute-api/aws4_request" in headers["Authorization"]


@pytest.mark.parametrize(
    ("status", "code", "exit_status"),
    [(404, "unknown_connection", 1), (400, "invalid_request", 2), (500, "internal", 1)],
)
def test_connect_tells_the_apis_error(
    stack_api: Recorder,
    capsys: pytest.CaptureFixture[str],
    status: int,
    code: str,
    exit_status: int,
) -> None:
    stack_api.reply = (status, {"error": {"code": code, "message": "it says so"}}, {})

    assert run(capsys, "connect", "wps365", "alice") == (
        exit_status,
        "",
        f"error: {code}: it says so\n",
    )


def test_put_names_the_stacks_callback_when_redirect_uri_differs(
    stack_api: Recorder, aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the stack's API at <recorder>/v1, so its callback is <recorder>/v1/connect/callback
    callback = f"{stack_api.url}/v1/connect/callback"
    elsewhere = write(tmp_path, SECRETS["wps365"], "elsewhere.json")
    linked = write(tmp_path, {**SECRETS["wps365"], "redirect_uri": callback}, "linked.json")

    # When
    first = run(capsys, "connections", "put", "wps365", "alice", "--file", elsewhere)
    second = run(capsys, "connections", "put", "wps365", "alice", "--file", linked)

    # Then both are stored; the first says what to register, the second says nothing
    assert first[0] == second[0] == 0
    assert first[2].count("\n") == 1
    assert f"set redirect_uri to {callback} and register that URL" in first[2]
    assert second[2] == ""
    assert aws.secret("tokenvend/wps365/alice")["redirect_uri"] == callback
    assert stack_api.requests == []  # the note needs the API's URL, never a call to it


def test_connect_through_the_console_script(aws: Aws, recorder: Recorder) -> None:
    script = Path(sys.executable).with_name("tokenvend")
    recorder.reply = (200, LINK, {})
    env = {**os.environ, "TOKENVEND_API_URL": recorder.url}

    done = subprocess.run(
        [str(script), "connect", "wps365", "alice"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )

    assert (done.returncode, done.stdout, done.stderr) == (0, LINK["url"] + "\n", "")
