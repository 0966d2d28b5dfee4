"""The `tokenvend` command's input checks: bad input exits 2 with one line and writes nothing.

"Nothing written" is shown against a real (moto) Secrets Manager on 127.0.0.1: the CLI
points at it through AWS_ENDPOINT_URL, and the test lists the secrets afterwards.
"""

from __future__ import annotations

import io
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from servers import LoopbackServer, send_json
from tokenvend.awslocal import MotoServer
from tokenvend.cli import human_seconds, main

CLIENT_SECRET = "very-secret-value-1234"
DINGTALK = {"client_id": "ding-app", "client_secret": CLIENT_SECRET, "corp_id": "corp-1"}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A fresh moto behind AWS_ENDPOINT_URL; returns a Secrets Manager client on it."""
    requests.post(f"{moto.url}/moto-api/reset", timeout=10).raise_for_status()
    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "TOKENVEND_API_URL", "TOKENVEND_TABLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("TOKENVEND_STACK", "tokenvend")
    return boto3.client("secretsmanager", endpoint_url=moto.url, region_name="us-east-1")


def secret_names(sm: Any) -> list[str]:
    return sorted(entry["Name"] for entry in sm.list_secrets()["SecretList"])


def write(tmp_path: Path, value: Any) -> str:
    path = tmp_path / "secret.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text.strip()


# -- bad input: exit 2, one line, nothing written -------------------------------------------


BAD_SECRETS = {
    "invalid JSON": ('{"client_id": "x", "client_secret": "' + CLIENT_SECRET, "not valid JSON"),
    "not an object": ([CLIENT_SECRET], "must be a JSON object"),
    "missing corp_id": (
        {"client_id": "x", "client_secret": CLIENT_SECRET},
        "dingtalk needs the field(s): corp_id",
    ),
    "unknown field": ({**DINGTALK, "colour": "blue"}, "unknown field(s) for dingtalk: colour"),
    "plain http token URL": (
        {**DINGTALK, "token_url": "http://example.com/token"},
        "must be https",
    ),
    "bad client_auth": ({**DINGTALK, "client_auth": "magic"}, "client_auth must be one of"),
    "empty": ("   \n", "is empty: expected the secret's JSON"),
    # A field of the wrong type is named as such, not as missing
    "a number for a string": (
        {**DINGTALK, "client_id": 1},
        "field client_id must be a string, not a number",
    ),
    "a number, and a field missing": (
        {"client_id": 1, "client_secret": CLIENT_SECRET},
        "field client_id must be a string, not a number",
    ),
    "null for a string": (
        {**DINGTALK, "corp_id": None},
        "field corp_id must be a string, not null",
    ),
    # An object that holds a key twice means different things to different JSON parsers
    "a key twice": (
        '{"client_id": "a", "client_secret": "' + CLIENT_SECRET + '", "corp_id": "c", '
        '"client_id": "b"}',
        "the secret's JSON holds the key 'client_id' more than once",
    ),
    "a key twice, same value": (
        '{"client_id": "a", "client_id": "a", "client_secret": "' + CLIENT_SECRET + '", '
        '"corp_id": "c"}',
        "holds the key 'client_id' more than once",
    ),
    "a key twice in extra_params": (
        '{"client_id": "a", "client_secret": "' + CLIENT_SECRET + '", "corp_id": "c", '
        '"extra_params": {"k": "1", "k": "2"}}',
        "holds the key 'k' more than once",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SECRETS))
def test_put_refuses_a_bad_secret(
    case: str, aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value, expected = BAD_SECRETS[case]
    # When
    status = main(["connections", "put", "dingtalk", "corp-a", "--file", write(tmp_path, value)])
    # Then
    out, err = capsys.readouterr()
    assert status == 2
    line = one_line(err)
    assert expected in line
    assert CLIENT_SECRET not in err + out
    assert out == ""
    assert secret_names(aws) == []


@pytest.mark.parametrize(
    ("provider", "connection", "expected"),
    [
        ("Dingtalk", "corp-a", "provider must be a lower-case name"),
        ("nosuch", "corp-a", "no provider 'nosuch'"),
        ("dingtalk", "corp a", "connection must be 1 to 64"),
        ("dingtalk", "x" * 65, "connection must be 1 to 64"),
        ("dingtalk", "a/b", "connection must be 1 to 64"),
    ],
)
def test_put_refuses_bad_names(
    provider: str,
    connection: str,
    expected: str,
    aws: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(tmp_path, DINGTALK)
    status = main(["connections", "put", provider, connection, "--file", path])
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert expected in one_line(err)
    assert secret_names(aws) == []


def test_put_refuses_a_missing_file(
    aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["connections", "put", "dingtalk", "corp-a", "--file", str(tmp_path / "no")])
    assert status == 2
    assert "cannot read" in one_line(capsys.readouterr().err)
    assert secret_names(aws) == []


def test_put_reads_standard_input(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The good case, so that the refusals above are refusals of the input, not of the setup
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(DINGTALK)))
    assert main(["connections", "put", "dingtalk", "corp-a"]) == 0
    out, err = capsys.readouterr()
    assert one_line(out).startswith("created secret tokenvend/dingtalk/corp-a")
    assert (err, CLIENT_SECRET in out) == ("", False)
    assert secret_names(aws) == ["tokenvend/dingtalk/corp-a"]


def test_put_refuses_a_key_twice_on_standard_input(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '{"client_secret": "x", "client_id": "a", "corp_id": "c", "client_secret": "y"}'
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["connections", "put", "dingtalk", "corp-a", "--file", "-"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert one_line(err) == (
        "error: the secret's JSON holds the key 'client_secret' more than once; keep one"
    )
    assert secret_names(aws) == []


def test_put_refuses_empty_standard_input(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["connections", "put", "dingtalk", "corp-a"]) == 2
    assert "standard input is empty" in one_line(capsys.readouterr().err)
    assert secret_names(aws) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["connections", "delete", "dingtalk", "corp a"], "connection must be"),
        (["connections", "delete", "dingtalk", "corp-a", "--recovery-days", "3"], "7 to 30"),
        (["connections", "delete", "nosuch", "corp-a"], "no provider"),
        (["connections", "delete", "dingtalk"], "required: CONNECTION"),
        (["connections", "list", "--jsn"], "unrecognized arguments: --jsn"),
        (["connections"], "a command is needed"),
        (["authorize", "wps365", "alice"], "required: --code"),
        (["authorize", "wps365", "alice", "--code", " "], "--code must be"),
        (["authorize", "dingtalk", "corp-a", "--code", "c"], "does not take authorization codes"),
        (["token", "dingtalk", "corp-a", "--min-ttl", "abc"], "min_ttl must be an integer"),
        (["token", "dingtalk", "corp-a", "--min-ttl", "3601"], "min_ttl must be an integer"),
        (["token", "dingtalk", "corp-a", "--min-ttl", "-1"], "min_ttl must be an integer"),
        (["token", "dingtalk", "bad name"], "connection must be"),
        (["refresh", "nosuch", "corp-a"], "no provider"),
        (["local", "--api-port", "70000"], "not a port number"),
        (["local", "--refresh-every", "0"], "more than 0 seconds"),
        (["frobnicate"], "invalid choice"),
        ([], "a command is needed"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    argv: list[str],
    expected: str,
    aws: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given an existing connection, and an API and a Lambda endpoint that cannot be reached
    # (a command that got past its checks would fail with exit 1, not 2)
    aws.create_secret(Name="tokenvend/dingtalk/corp-a", SecretString=json.dumps(DINGTALK))
    monkeypatch.setenv("TOKENVEND_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", "http://127.0.0.1:9")
    monkeypatch.setenv("TOKENVEND_TABLE", "tokens")
    # When
    status = main(argv)
    # Then
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert expected in one_line(err)
    assert secret_names(aws) == ["tokenvend/dingtalk/corp-a"]
    value = aws.get_secret_value(SecretId="tokenvend/dingtalk/corp-a")["SecretString"]
    assert json.loads(value) == DINGTALK


# -- the check behind the messages: the catalogue's validate_secret ------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [(1, "a number"), (1.5, "a number"), (True, "a boolean"), (None, "null"),
     ({"a": "b"}, "an object"), (["x"], "an array")],
)  # fmt: skip
@pytest.mark.parametrize("provider", ["aspose", "dingtalk", "oauth2"])
def test_validate_secret_names_a_field_of_the_wrong_type(
    provider: str, value: Any, kind: str
) -> None:
    from tokenvend_core.catalogue.spec import spec_for, validate_secret
    from tokenvend_core.errors import InvalidRequest

    # Given a secret whose only fault is client_id's type, and one with nothing else at all
    good = {
        "aspose": {"client_id": "a", "client_secret": CLIENT_SECRET},
        "dingtalk": DINGTALK,
        "oauth2": {
            "token_url": "https://auth.example.com/token",
            "client_id": "a",
            "client_secret": CLIENT_SECRET,
        },
    }[provider]
    for secret in ({**good, "client_id": value}, {"client_id": value}):
        # When / Then: the type is named, not a missing field
        with pytest.raises(InvalidRequest) as caught:
            validate_secret(spec_for(provider), secret)
        assert caught.value.message == f"field client_id must be a string, not {kind}"
        assert CLIENT_SECRET not in caught.value.message


def test_validate_secret_names_every_field_of_the_wrong_type() -> None:
    from tokenvend_core.catalogue.spec import spec_for, validate_secret
    from tokenvend_core.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as caught:
        validate_secret(spec_for("dingtalk"), {"client_id": 7, "corp_id": False})
    assert caught.value.message == (
        "field client_id must be a string, not a number; "
        "field corp_id must be a string, not a boolean"
    )


def test_validate_secret_still_says_what_is_missing() -> None:
    from tokenvend_core.catalogue.spec import spec_for, validate_secret
    from tokenvend_core.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as caught:
        validate_secret(spec_for("dingtalk"), {"client_id": "a", "client_secret": "s"})
    assert caught.value.message == "dingtalk needs the field(s): corp_id"


# -- other failures: exit 1, one line -------------------------------------------------------


def test_an_unreachable_api_exits_1(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENVEND_API_URL", "http://127.0.0.1:9")
    assert main(["token", "dingtalk", "corp-a"]) == 1
    assert "cannot reach the tokenvend API" in one_line(capsys.readouterr().err)


def test_no_stack_and_no_table_exits_1(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["connections", "list"]) == 1
    line = one_line(capsys.readouterr().err)
    assert "set TOKENVEND_TABLE" in line and "does not exist" in line


def test_a_missing_table_exits_1(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENVEND_TABLE", "no-such-table")
    assert main(["connections", "list"]) == 1
    line = one_line(capsys.readouterr().err)
    assert "cannot read the token table no-such-table" in line
    assert "ResourceNotFoundException" in line


def test_no_region_exits_1(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("TOKENVEND_SECRETS_PREFIX", "tokenvend/")
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(DINGTALK)))
    assert main(["connections", "put", "dingtalk", "corp-a"]) == 1
    assert "no AWS region (set AWS_REGION)" in one_line(capsys.readouterr().err)


# -- the rest -------------------------------------------------------------------------------


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("TOKENVEND_STACK", "TOKENVEND_API_URL", "TOKENVEND_TABLE", "AWS_ENDPOINT_URL"):
        assert name in out
    assert main(["connections", "delete", "--help"]) == 0
    assert "ForceDeleteWithoutRecovery" in capsys.readouterr().out


def test_local_passes_its_options_to_the_local_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a stand-in for tokenvend.local (written elsewhere) that records its call
    seen: dict[str, Any] = {}

    def run(**kwargs: Any) -> int:
        seen.update(kwargs)
        return 3

    monkeypatch.setitem(sys.modules, "tokenvend.local", types.SimpleNamespace(run=run))
    monkeypatch.setenv("TOKENVEND_STACK", "from-env")
    monkeypatch.setenv("AWS_REGION", "cn-north-1")
    # When / Then
    assert main(["local", "--api-port", "0", "--no-sandbox", "--refresh-every", "2.5"]) == 3
    assert seen == {
        "stack": "from-env",
        "region": "cn-north-1",
        "api_port": 0,
        "lambda_port": 3001,
        "aws_port": 4566,
        "sandbox_port": 3002,
        "sandbox": False,
        "refresh_every": 2.5,
        "parameters": {},
        "docker_bridge": None,
        "fresh": False,
    }
    assert main(["local", "--fresh"]) == 3
    assert seen["fresh"] is True
    assert main(["local", "--docker-bridge"]) == 3
    assert seen["docker_bridge"] == ""  # docker0's address
    assert main(["local", "--docker-bridge", "172.17.0.1"]) == 3
    assert seen["docker_bridge"] == "172.17.0.1"
    assert main(["local", "--parameter-overrides", "CoolDownSeconds=1", "A=b=c"]) == 3
    assert seen["parameters"] == {"CoolDownSeconds": "1", "A": "b=c"}
    assert main(["local", "--parameter-overrides", "no-equals"]) == 2
    assert main(["local", "--stack", "s", "--region", "eu-west-1"]) == 3
    assert (seen["stack"], seen["region"], seen["sandbox"], seen["refresh_every"]) == (
        "s",
        "eu-west-1",
        True,
        None,
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (60, "1m"), (75, "1m 15s"), (3600, "1h"), (3725, "1h 2m"),
     (86400, "1d"), (90000, "1d 1h")],
)  # fmt: skip
def test_human_seconds(seconds: int, text: str) -> None:
    assert human_seconds(seconds) == text


# -- connect: a link through the signed API -------------------------------------------------

WPS365 = {
    "client_id": "wps-app",
    "client_secret": CLIENT_SECRET,
    "redirect_uri": "http://127.0.0.1:9/connect/callback",
}


class FakeApi(LoopbackServer):
    """The tokenvend API's connect route: records each request, answers what it is told."""

    def __init__(self, status: int = 200, body: Any = None, headers: Any = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.serve()

    def handle(self, http: Any) -> None:
        self.seen.append((http.command, http.path, dict(http.headers.items())))
        send_json(http, self.status, self.body, self.headers)


LINK = {"url": "https://openapi.wps.cn/oauth2/auth?client_id=a&state=s", "expires_at": "2030-01-01T00:10:00Z"}  # fmt: skip


@pytest.fixture
def api(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    with FakeApi(200, LINK) as server:
        monkeypatch.setenv("TOKENVEND_API_URL", server.base_url + "/")
        yield server


def test_connect_prints_the_link_alone(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    # When
    status = main(["connect", "wps365", "alice"])

    # Then the link is the one line printed, from a SigV4-signed POST to the connect route
    out = capsys.readouterr()
    assert status == 0, out.err
    assert out.out == LINK["url"] + "\n"
    assert out.err == ""
    [(method, path, headers)] = api.seen
    assert (method, path) == ("POST", "/connections/wps365/alice/connect")
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/execute-api/aws4_request" in headers["Authorization"]


def test_connect_json_prints_the_whole_answer(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["connect", "wps365", "alice", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == LINK


@pytest.mark.parametrize(
    ("status", "body", "exit_status", "said"),
    [
        (404, {"error": {"code": "unknown_connection", "message": "no secret"}}, 1,
         "unknown_connection: no secret"),
        (400, {"error": {"code": "invalid_request", "message": "no authorize URL"}}, 2,
         "invalid_request: no authorize URL"),
        (403, {"message": "User: x is not authorized"}, 1, "forbidden: User: x is not authorized"),
        (200, {"expires_at": "2030-01-01T00:00:00Z"}, 1, "the API answered without a link"),
    ],
)  # fmt: skip
def test_connect_errors_are_one_line(
    api: FakeApi,
    capsys: pytest.CaptureFixture[str],
    status: int,
    body: Any,
    exit_status: int,
    said: str,
) -> None:
    api.status, api.body = status, body

    assert main(["connect", "wps365", "alice"]) == exit_status
    out = capsys.readouterr()
    assert out.out == ""
    assert said in one_line(out.err)


def test_connect_a_provider_with_no_user_exits_2_without_asking(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["connect", "dingtalk", "corp-a"]) == 2
    assert main(["connect", "wps365", "bad/name"]) == 2
    assert api.seen == []
    assert "dingtalk has no user to connect (only wps365" in capsys.readouterr().err


def test_connect_with_an_unreachable_api_exits_1(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENVEND_API_URL", "http://127.0.0.1:9")
    assert main(["connect", "wps365", "alice"]) == 1
    assert "cannot reach the tokenvend API" in one_line(capsys.readouterr().err)


# -- put: the redirect_uri of the link flow -------------------------------------------------


def put_wps365(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redirect_uri: str
) -> tuple[int, str]:
    status = main(
        ["connections", "put", "wps365", "alice", "--file",
         write(tmp_path, {**WPS365, "redirect_uri": redirect_uri})]
    )  # fmt: skip
    return status, capsys.readouterr().err


def test_put_says_when_redirect_uri_is_not_the_link_callback(
    aws: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the API's URL, as the local stack's exports give it
    monkeypatch.setenv("TOKENVEND_API_URL", "http://127.0.0.1:3000/")
    monkeypatch.setenv("TOKENVEND_SECRETS_PREFIX", "tokenvend/")

    # When a wps365 secret names another redirect_uri, then the callback
    other = put_wps365(tmp_path, capsys, "https://app.example.com/cb")
    same = put_wps365(tmp_path, capsys, "http://127.0.0.1:3000/connect/callback")

    # Then the put succeeds either way; only the first says, in one line, what to register
    assert other[0] == same[0] == 0
    line = one_line(other[1])
    assert "'https://app.example.com/cb'" in line
    assert "register that URL with the provider's app" in line
    assert "set redirect_uri to http://127.0.0.1:3000/connect/callback" in line
    assert CLIENT_SECRET not in line
    assert same[1] == ""
    assert secret_names(aws) == ["tokenvend/wps365/alice"]


def test_put_says_nothing_of_redirects_when_the_api_url_is_unknown(
    aws: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No TOKENVEND_API_URL, and no stack whose outputs say it
    monkeypatch.setenv("TOKENVEND_SECRETS_PREFIX", "tokenvend/")

    assert put_wps365(tmp_path, capsys, "https://app.example.com/cb") == (0, "")


def test_put_of_a_client_credentials_provider_says_nothing_of_redirects(
    aws: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENVEND_API_URL", "http://127.0.0.1:3000")
    monkeypatch.setenv("TOKENVEND_SECRETS_PREFIX", "tokenvend/")

    status = main(["connections", "put", "dingtalk", "corp-a", "--file", write(tmp_path, DINGTALK)])

    assert status == 0
    assert capsys.readouterr().err == ""


def test_local_api_type_sets_the_templates_api_type() -> None:
    from tokenvend.cli import CliError, build_parser, local_parameters

    def parameters(*argv: str) -> dict[str, str]:
        return local_parameters(build_parser().parse_args(["local", *argv]))

    assert parameters() == {}
    assert parameters("--api-type", "http") == {"ApiType": "HTTP"}
    assert parameters("--api-type", "rest", "--parameter-overrides", "CoolDownSeconds=1") == {
        "ApiType": "REST",
        "CoolDownSeconds": "1",
    }
    assert parameters("--parameter-overrides", "ApiType=HTTP") == {"ApiType": "HTTP"}
    with pytest.raises(CliError, match="disagree"):
        parameters("--api-type", "rest", "--parameter-overrides", "ApiType=HTTP")
    with pytest.raises(CliError, match="invalid choice: 'soap'"):
        parameters("--api-type", "soap")


def test_a_refresh_that_gets_the_rejected_token_again_warns(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A provider that re-issues a token until it expires (DingTalk) answers a forced
    refresh with the very token reported: the command says so, since the runbook's
    "a token leaked" relies on the refresh replacing it."""
    answer = {
        "provider": "dingtalk", "connection": "corp-a", "access_token": "tok-leaked",
        "token_type": "Bearer", "expires_at": "2030-01-01T00:00:00Z", "expires_in": 600,
    }  # fmt: skip
    with FakeApi(200, answer) as server:
        monkeypatch.setenv("TOKENVEND_API_URL", server.base_url + "/")
        status = main(["refresh", "dingtalk", "corp-a", "--rejected-token", "tok-leaked"])
        out = capsys.readouterr()
        assert status == 0
        assert out.out == "tok-leaked\n"
        assert out.err.count("\n") == 1
        assert out.err.startswith("warning: the provider issued the rejected token again")
        assert "2030-01-01T00:00:00Z" in out.err and "tok-leaked" not in out.err
        # A new token: no warning
        server.body = {**answer, "access_token": "tok-new"}
        assert main(["refresh", "dingtalk", "corp-a", "--rejected-token", "tok-leaked"]) == 0
        assert "warning" not in capsys.readouterr().err
