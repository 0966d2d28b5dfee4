"""The local API's access log (tokenvend.local.access_log, and the API that fills it): the
format is template.yaml's own (TokenApi's AccessLogSetting), its $context variables are filled
as API Gateway fills them, one line per request, refused ones too, into the log group the
setting names; and the template reader names log groups as CloudFormation does.

The API runs in this process through werkzeug's test client, with the real SigV4 verifier
(keys from a dictionary) and a function that records the event it gets; the writer writes to
moto's logs (`mock_aws`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto import mock_aws
from werkzeug.test import Client

from tokenvend.awslocal import Principal
from tokenvend.local.access_log import (
    AccessLogWriter,
    fill,
    log_group_of,
    request_time,
)
from tokenvend.local.functions import Invocation
from tokenvend.local.http_api import HttpApi, Route, _pattern, rest_api
from tokenvend.local.iam import Decision
from tokenvend.local.sigv4 import Verifier
from tokenvend.template import ACCOUNT_ID, Stack, TemplateError, load_template

REGION = "us-east-1"
ALICE = Principal(
    access_key_id="AKIAALICE0000000000",
    secret_access_key="alice-secret-key",  # a test key, not a credential
    arn=f"arn:aws:iam::{ACCOUNT_ID}:user/alice",
    user_id="AIDAALICE",
    account_id=ACCOUNT_ID,
)
MALLORY = Principal(
    access_key_id="AKIAMALLORY00000000",
    secret_access_key="mallory-secret-key",  # a test key, not a credential
    arn=f"arn:aws:iam::{ACCOUNT_ID}:user/mallory",
    user_id="AIDAMALLORY",
    account_id=ACCOUNT_ID,
)
CONTEXT_KEYS = [
    "requestId", "time", "caller", "sourceIp", "method", "path", "resource", "status",
    "latencyMs", "protocol",
]  # fmt: skip


def stack(name: str = "tokenvend") -> Stack:
    return Stack(load_template(), name=name, region=REGION)


# -- the template ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tokenvend", "other-stack"])
def test_log_groups_are_named_and_referenced_as_cloudformation_does(name: str) -> None:
    template = stack(name)

    assert template.physical_id("AuditLog") == f"/tokenvend/{name}/audit"
    assert template.ref("AuditLog") == f"/tokenvend/{name}/audit"
    assert template.arn("ApiAccessLog") == (
        f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/tokenvend/{name}/access:*"
    )
    assert template.output("AuditLogGroup") == f"/tokenvend/{name}/audit"
    for function in template.function_ids():
        environment = template.function_environment(function)
        assert environment["AUDIT_LOG_GROUP"] == f"/tokenvend/{name}/audit", function


def test_the_api_writes_its_access_log_in_the_templates_format_to_its_group() -> None:
    template = stack()
    raw = template.template["Resources"]["TokenApi"]["Properties"]["AccessLogSetting"]

    setting = rest_api(template, "TokenApi").access_log

    assert setting is not None
    assert setting.format == raw["Format"]
    assert setting.log_group == "/tokenvend/tokenvend/access"


@pytest.mark.parametrize(
    ("arn", "group"),
    [
        (
            "arn:aws:logs:us-east-1:123456789012:log-group:/tokenvend/x/access:*",
            "/tokenvend/x/access",
        ),
        ("arn:aws-cn:logs:cn-north-1:123456789012:log-group:/a/b", "/a/b"),
    ],
)
def test_a_log_groups_name_is_read_from_its_arn(arn: str, group: str) -> None:
    assert log_group_of(arn) == group


def test_a_destination_that_is_no_log_group_is_refused() -> None:
    with pytest.raises(TemplateError, match="not a log group"):
        log_group_of("arn:aws:firehose:us-east-1:123456789012:deliverystream/x")


# -- filling --------------------------------------------------------------------------------


def test_the_request_time_is_api_gateways() -> None:
    assert request_time(datetime(2026, 11, 30, 10, 20, 1, 999000, tzinfo=UTC)) == (
        "30/Nov/2026:10:20:01 +0000"
    )
    assert request_time(datetime(2027, 1, 5, 0, 0, 0, tzinfo=UTC)) == "05/Jan/2027:00:00:00 +0000"


def test_every_variable_of_the_format_is_filled() -> None:
    setting = rest_api(stack(), "TokenApi").access_log
    assert setting is not None
    context = {
        "requestId": "r-1",
        "requestTime": "30/Nov/2026:10:20:01 +0000",
        "identity.userArn": ALICE.arn,
        "identity.sourceIp": "203.0.113.9",
        "httpMethod": "GET",
        "path": "/v1/tokens/dingtalk/demo",
        "resourcePath": "/tokens/{provider}/{connection}",
        "status": 200,
        "responseLatency": 12,
        "protocol": "HTTP/1.1",
    }

    line = json.loads(fill(setting.format, context))

    assert line == {
        "requestId": "r-1",
        "time": "30/Nov/2026:10:20:01 +0000",
        "caller": ALICE.arn,
        "sourceIp": "203.0.113.9",
        "method": "GET",
        "path": "/v1/tokens/dingtalk/demo",
        "resource": "/tokens/{provider}/{connection}",
        "status": "200",
        "latencyMs": "12",
        "protocol": "HTTP/1.1",
    }


def test_a_variable_without_a_value_is_a_dash_and_values_stay_inside_their_quotes() -> None:
    text = fill(
        '{"caller":"$context.identity.userArn","path":"$context.path","x":"$context.unknown"}',
        {"identity.userArn": None, "path": '/v1/a"b\\c\n'},
    )

    assert json.loads(text) == {"caller": "-", "path": '/v1/a"b\\c\n', "x": "-"}


# -- the API's lines ------------------------------------------------------------------------


class Keys:
    def lookup(self, access_key_id: str) -> Principal | None:
        return {p.access_key_id: p for p in (ALICE, MALLORY)}.get(access_key_id)


class OnlyAlice:
    """An authorizer that lets Alice in and no one else."""

    def authorize(self, principal: Principal, method: str, path: str, *, source_ip: str) -> Any:
        if principal.arn == ALICE.arn:
            return Decision(True)
        return Decision(False, "User is not authorized to access this resource")

    def authorize_anonymous(self, method: str, path: str, *, source_ip: str) -> Any:
        return Decision(True)


class Recorder:
    """A function that answers 200 and keeps the events it got."""

    name = "tokenvend-vend"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def invoke(self, event: dict[str, Any]) -> Invocation:
        self.events.append(event)
        answer = {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}
        return Invocation(json.dumps(answer).encode(), None, "lambda-request", 1.0)


class Lines:
    """A writer that keeps what it is given."""

    def __init__(self) -> None:
        self.written: list[tuple[int, dict[str, Any]]] = []

    def write(self, timestamp_ms: int, line: str) -> None:
        self.written.append((timestamp_ms, json.loads(line)))


@pytest.fixture
def api() -> tuple[Client, Recorder, Lines]:
    function = Recorder()
    routes = [
        Route("GET", "/tokens/{provider}/{connection}", function, True, _pattern("/tokens/{provider}/{connection}")),  # type: ignore[arg-type]
        Route("GET", "/connect/callback", function, False, _pattern("/connect/callback")),  # type: ignore[arg-type]
    ]  # fmt: skip
    lines = Lines()
    app = HttpApi(
        routes,
        rest_api(stack(), "TokenApi"),
        Verifier(Keys(), region=REGION),
        OnlyAlice(),  # type: ignore[arg-type]
        account_id=ACCOUNT_ID,
        access_log=lines,  # type: ignore[arg-type]
    )
    return Client(app), function, lines


def signed(principal: Principal, path: str) -> dict[str, str]:
    request = AWSRequest(method="GET", url=f"http://localhost{path}")
    credentials = Credentials(principal.access_key_id, principal.secret_access_key)
    SigV4Auth(credentials, "execute-api", REGION).add_auth(request)
    return dict(request.headers.items())


def test_a_signed_request_leaves_a_line_with_its_caller_and_the_events_request_id(
    api: tuple[Client, Recorder, Lines],
) -> None:
    client, function, lines = api
    before = datetime.now(UTC)

    answer = client.get("/tokens/dingtalk/demo", headers=signed(ALICE, "/tokens/dingtalk/demo"))

    assert answer.status_code == 200
    [(stamp, line)] = lines.written
    assert list(line) == CONTEXT_KEYS
    context = function.events[0]["requestContext"]
    assert line["requestId"] == context["requestId"]
    assert line["time"] == context["requestTime"]
    assert line["caller"] == ALICE.arn == context["identity"]["userArn"]
    assert line["sourceIp"] == context["identity"]["sourceIp"]
    assert line["method"] == "GET"
    assert line["path"] == "/v1/tokens/dingtalk/demo" == context["path"]
    assert line["resource"] == "/tokens/{provider}/{connection}"
    assert line["status"] == "200"
    assert line["latencyMs"].isdigit()
    assert line["protocol"] == "HTTP/1.1"
    assert stamp == context["requestTimeEpoch"]
    assert before.timestamp() * 1000 - 1000 <= stamp <= datetime.now(UTC).timestamp() * 1000


def test_refused_requests_leave_lines_too(api: tuple[Client, Recorder, Lines]) -> None:
    client, function, lines = api
    path = "/tokens/dingtalk/demo"

    denied = client.get(path, headers=signed(MALLORY, path))  # signed, but not allowed
    unsigned = client.get(path)
    unknown = client.get("/nothing/here")

    assert [r.status_code for r in (denied, unsigned, unknown)] == [403, 403, 403]
    assert function.events == []
    got = [line for _, line in lines.written]
    assert [(line["caller"], line["status"], line["resource"]) for line in got] == [
        (MALLORY.arn, "403", "/tokens/{provider}/{connection}"),
        ("-", "403", "/tokens/{provider}/{connection}"),
        ("-", "403", "-"),
    ]
    assert got[2]["path"] == "/v1/nothing/here"
    assert len({line["requestId"] for line in got}) == 3


def test_the_callbacks_line_holds_no_query_string(api: tuple[Client, Recorder, Lines]) -> None:
    client, _, lines = api

    client.get("/connect/callback?code=CODE-do-not-log&state=STATE-do-not-log")

    [(_, line)] = lines.written
    assert line["path"] == "/v1/connect/callback"
    assert line["caller"] == "-"
    assert "do-not-log" not in json.dumps(lines.written)


def test_an_api_without_an_access_log_writes_none() -> None:
    function, lines = Recorder(), Lines()
    quiet = rest_api(stack(), "TokenApi")
    object.__setattr__(quiet, "access_log", None)
    app = HttpApi(
        [Route("GET", "/connect/callback", function, False, _pattern("/connect/callback"))],  # type: ignore[arg-type]
        quiet,
        Verifier(Keys(), region=REGION),
        OnlyAlice(),  # type: ignore[arg-type]
        account_id=ACCOUNT_ID,
        access_log=lines,  # type: ignore[arg-type]
    )

    assert Client(app).get("/connect/callback").status_code == 200
    assert lines.written == []


# -- the writer -----------------------------------------------------------------------------


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("logs", region_name=REGION)
        client.create_log_group(logGroupName="/tokenvend/tokenvend/access")
        yield client


def test_the_writer_puts_every_line_in_time_order(logs: Any) -> None:
    writer = AccessLogWriter("/tokenvend/tokenvend/access", "local/v1/test").start()

    for stamp, n in ((1_796_000_000_300, 3), (1_796_000_000_100, 1), (1_796_000_000_200, 2)):
        writer.write(stamp, json.dumps({"n": n}))
    writer.stop()

    events = logs.filter_log_events(logGroupName="/tokenvend/tokenvend/access")["events"]
    assert [json.loads(e["message"])["n"] for e in events] == [1, 2, 3]
    assert [e["logStreamName"] for e in events] == ["local/v1/test"] * 3
    assert writer.written == 3


def test_a_writer_whose_group_is_missing_says_so_once_and_goes_on(
    logs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = AccessLogWriter("/tokenvend/nowhere/access").start()
    writer.write(1_796_000_000_000, "{}")
    writer.stop()
    writer.start()
    writer.write(1_796_000_000_001, "{}")
    writer.stop()

    warnings = [line for line in capsys.readouterr().err.splitlines() if "access log" in line]
    assert len(warnings) == 1
    assert json.loads(warnings[0])["log_group"] == "/tokenvend/nowhere/access"
    assert writer.written == 0
