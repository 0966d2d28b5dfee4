"""`tokenvend audit`: the question's input checks, the Logs Insights query it builds, and the
records it finds.

- Input (connection, caller, fingerprint, token file, since, limit): bad input exits 2 with
  one line, before any AWS call, and a value that could leave the query's string literal is
  refused twice: when it is read, and again when the query is built.
- The deployed way: the exact query string and StartQuery parameters, with botocore's
  Stubber (moto runs Insights' `fields`, `sort` and `limit`, but no `filter`: the records
  it answers are filtered again here, which a moto round trip shows too).
- The local way: records put into moto's logs (`mock_aws` in this process, and moto's
  server on 127.0.0.1 behind AWS_ENDPOINT_URL, as `tokenvend local` exports it), read with
  FilterLogEvents and filtered here.
- A token given with --token-file never appears in anything printed.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.stub import ANY, Stubber
from moto import mock_aws

from tokenvend import audit
from tokenvend.audit import (
    AuditInputError,
    AuditQueryError,
    Filters,
    insights_query,
    parse_caller,
    parse_connection,
    parse_fingerprint,
    parse_limit,
    parse_since,
    query_insights,
    read_local,
    read_token_fingerprint,
)
from tokenvend.awslocal import MotoServer
from tokenvend.cli import Target, main
from tokenvend_core.audit import FIELDS

GROUP = "/tokenvend/tokenvend/audit"
NOW = datetime(2026, 11, 30, 10, 20, 1, tzinfo=UTC)
ALICE = "arn:aws:iam::123456789012:user/alice"
BOB = "arn:aws:sts::123456789012:assumed-role/reports/job-7"
TOKEN = "tok-LEAKED-3f9a2c"  # recognisable: it must never be printed
FINGERPRINT = hashlib.sha256(TOKEN.encode()).hexdigest()[:16]
OTHER_FINGERPRINT = "0123456789abcdef"


def record(**values: Any) -> dict[str, Any]:
    """An audit record in the design's shape: every key, in order, null unless given."""
    base: dict[str, Any] = dict.fromkeys(FIELDS)
    base.update(audit=1, function="tokenvend-vend", action="vend", trigger="api")
    base.update(values)
    return {name: base[name] for name in FIELDS}


def when(minutes_ago: float) -> str:
    moment = NOW - timedelta(minutes=minutes_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


RECORDS = [
    record(
        time=when(50), caller=ALICE, source_ip="203.0.113.9", provider="dingtalk",
        connection="corp-a", outcome="provider", fingerprint=FINGERPRINT,
        expires_at="2026-11-30T12:00:00Z", request_id="r-1",
    ),
    record(
        time=when(49), function="tokenvend-dingtalk", action="refresh_attempt", trigger="vend",
        caller=ALICE, provider="dingtalk", connection="corp-a", outcome="ok",
        fingerprint=FINGERPRINT, secret_version="v-1", request_id="r-1",
    ),
    record(
        time=when(30), caller=BOB, source_ip="198.51.100.7", provider="oauth2",
        connection="billing", outcome="table", fingerprint=OTHER_FINGERPRINT, request_id="r-2",
    ),
    record(
        time=when(20), caller=BOB, provider="dingtalk", connection="corp-a", outcome="refused",
        error_code="forbidden", request_id="r-3",
    ),
    record(
        time=when(10), caller=ALICE, provider="dingtalk", connection="corp-a", outcome="memory",
        fingerprint=FINGERPRINT, request_id="r-4",
    ),
    record(
        time=when(60 * 30), caller=ALICE, provider="dingtalk", connection="corp-a",
        outcome="table", fingerprint=FINGERPRINT, request_id="r-old",
    ),  # 30 hours ago: outside the default day
]  # fmt: skip


def filters(**values: Any) -> Filters:
    values.setdefault("since", NOW - timedelta(days=1))
    return Filters(until=NOW, **values)


def request_ids(found: list[dict[str, Any]]) -> list[str]:
    return [str(r["request_id"]) for r in found]


# -- input --------------------------------------------------------------------------------


def test_a_connection_is_provider_slash_connection() -> None:
    assert parse_connection("dingtalk/corp-a") == ("dingtalk", "corp-a")
    assert parse_connection("oauth2/billing.v2_x") == ("oauth2", "billing.v2_x")


@pytest.mark.parametrize(
    "bad",
    [
        "dingtalk",
        "dingtalk/",
        "/corp-a",
        "Dingtalk/corp-a",
        "dingtalk/corp/a",
        'dingtalk/corp-a" or 1=1',
        "dingtalk/corp-a | stats count(*)",
        "dingtalk/corp-a\nfilter 1=1",
        'ding"talk/corp-a',
        "dingtalk/" + "x" * 65,
    ],
)
def test_a_malformed_connection_is_refused(bad: str) -> None:
    with pytest.raises(AuditInputError, match="PROVIDER/CONNECTION"):
        parse_connection(bad)


@pytest.mark.parametrize(
    "arn",
    [
        ALICE,
        BOB,
        "arn:aws:iam::123456789012:root",
        "arn:aws-cn:iam::123456789012:user/path/to/app+x=y,z.w@q_r-s",
        "arn:aws:iam::123456789012:role/service-role/worker",
        "arn:aws:sts::123456789012:federated-user/bob",
    ],
)
def test_a_callers_arn_is_taken_as_it_is(arn: str) -> None:
    assert parse_caller(arn) == arn


@pytest.mark.parametrize(
    "bad",
    [
        "alice",
        "arn:aws:iam::1234:user/alice",
        "arn:aws:s3:::bucket",
        'arn:aws:iam::123456789012:user/alice"',
        'arn:aws:iam::123456789012:user/alice" or caller like /./ or "',
        "arn:aws:iam::123456789012:user/alice | stats count(*)",
        "arn:aws:iam::123456789012:user/al ice",
        "arn:aws:iam::123456789012:user/alice\\",
        "arn:aws:iam::123456789012:user/alice\n| limit 1",
        "arn:aws:iam::123456789012:user/*",
        "arn:aws:iam::123456789012:user/",
    ],
)
def test_a_malformed_caller_is_refused(bad: str) -> None:
    with pytest.raises(AuditInputError, match="IAM principal's ARN"):
        parse_caller(bad)


def test_a_fingerprint_is_16_hex_and_a_whole_sha256_is_cut_to_it() -> None:
    whole = hashlib.sha256(TOKEN.encode()).hexdigest()
    assert parse_fingerprint(FINGERPRINT) == FINGERPRINT
    assert parse_fingerprint(whole) == FINGERPRINT
    assert parse_fingerprint(whole.upper()) == FINGERPRINT
    assert parse_fingerprint(f"  {FINGERPRINT}\n") == FINGERPRINT


@pytest.mark.parametrize(
    "bad", ["", "abc", "0123456789abcdeg", "0123456789abcdef0", '0123456789abcde"', "x" * 64]
)
def test_a_malformed_fingerprint_is_refused(bad: str) -> None:
    with pytest.raises(AuditInputError, match="16 hex"):
        parse_fingerprint(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("1h", NOW - timedelta(hours=1)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("45s", NOW - timedelta(seconds=45)),
        ("2026-11-30T08:00:00Z", datetime(2026, 11, 30, 8, tzinfo=UTC)),
        ("2026-11-30T09:00:00+01:00", datetime(2026, 11, 30, 8, tzinfo=UTC)),
        ("2026-11-30T08:00:00", datetime(2026, 11, 30, 8, tzinfo=UTC)),  # UTC unless it says
        ("2026-11-29", datetime(2026, 11, 29, tzinfo=UTC)),
    ],
)
def test_since_is_a_duration_or_an_iso_time(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize(
    "bad", ["", "1y", "0h", "-1h", "1.5h", "h", "yesterday", "2026-12-01T00:00:00Z", "1900-01-01"]
)
def test_a_malformed_or_future_since_is_refused(bad: str) -> None:
    with pytest.raises(AuditInputError, match="--since"):
        parse_since(bad, NOW)


@pytest.mark.parametrize("bad", ["0", "-3", "10001", "ten", ""])
def test_a_limit_is_from_1_to_10000(bad: str) -> None:
    assert parse_limit("1") == 1
    assert parse_limit("10000") == 10000
    with pytest.raises(AuditInputError, match="--limit"):
        parse_limit(bad)


# -- the token file -------------------------------------------------------------------------


@pytest.mark.parametrize("content", [TOKEN, f"{TOKEN}\n", f"  \n{TOKEN}\r\n\n", f"\t{TOKEN} "])
def test_the_fingerprint_of_a_token_file_is_its_stripped_contents(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "leaked.txt"
    path.write_text(content)

    assert read_token_fingerprint(str(path), io.BytesIO()) == FINGERPRINT
    assert read_token_fingerprint("-", io.BytesIO(content.encode())) == FINGERPRINT


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "holds no token"),
        (b" \n\t\n", "holds no token"),
        (b"\xff\xfe" + TOKEN.encode(), "not UTF-8"),
        (b"x" * 70000, "larger than 64 KiB"),
    ],
)
def test_a_token_file_that_holds_no_token_is_refused_without_its_content(
    tmp_path: Path, content: bytes, said: str
) -> None:
    path = tmp_path / "leaked.txt"
    path.write_bytes(content)

    with pytest.raises(AuditInputError, match=said) as refused:
        read_token_fingerprint(str(path), io.BytesIO())

    assert TOKEN not in str(refused.value)
    assert "xxxx" not in str(refused.value)


def test_a_missing_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match="cannot read"):
        read_token_fingerprint(str(tmp_path / "nowhere"), io.BytesIO())


# -- the query ------------------------------------------------------------------------------


def test_the_query_without_filters_asks_for_every_audit_record() -> None:
    assert insights_query(filters()) == (
        "fields @timestamp, @message\n| filter audit = 1\n| sort @timestamp desc\n| limit 1000"
    )


def test_the_query_with_every_filter() -> None:
    query = insights_query(
        filters(
            provider="dingtalk",
            connection="corp-a",
            caller=BOB,
            fingerprint=FINGERPRINT,
            limit=20,
        )
    )

    assert query == (
        "fields @timestamp, @message\n"
        "| filter audit = 1\n"
        '| filter provider = "dingtalk"\n'
        '| filter connection = "corp-a"\n'
        f'| filter caller = "{BOB}"\n'
        f'| filter fingerprint = "{FINGERPRINT}"\n'
        "| sort @timestamp desc\n"
        "| limit 20"
    )


@pytest.mark.parametrize(
    "hostile",
    [
        {"connection": 'corp-a" or audit = 1 or "'},
        {"provider": 'x" | stats count(*) by caller | filter "1'},
        {"caller": f'{ALICE}"'},
        {"caller": ALICE + "\\"},
        {"caller": ALICE + "\n| limit 1"},
        {"fingerprint": "0123456789abcde'"},
        {"connection": "corp a"},
        {"connection": ""},
        {"limit": 0},
        {"limit": 10001},
    ],
)
def test_the_query_builder_refuses_values_that_could_leave_their_quotes(
    hostile: dict[str, Any],
) -> None:
    # Whatever built the filters (the command line checks first), the builder checks again
    with pytest.raises(AuditInputError):
        insights_query(filters(**hostile))


# -- filtering ------------------------------------------------------------------------------


def test_the_filters_match_every_given_field_exactly() -> None:
    assert filters().matches(RECORDS[0])
    assert filters(caller=ALICE, fingerprint=FINGERPRINT).matches(RECORDS[0])
    assert not filters(caller=BOB).matches(RECORDS[0])
    assert not filters(provider="dingtalk", connection="corp-b").matches(RECORDS[0])
    assert not filters(caller="arn:aws:iam::123456789012:user/ali").matches(RECORDS[0])
    assert not filters().matches({**RECORDS[0], "audit": 2})
    assert not filters().matches({"message": "a function's own log line"})


def put_events(logs: Any, events: list[tuple[str, dict[str, Any] | str]]) -> None:
    """(stream, record or raw line) into GROUP, each at its record's time."""
    existing = {
        s["logStreamName"] for s in logs.describe_log_streams(logGroupName=GROUP)["logStreams"]
    }
    for stream, item in events:
        if stream not in existing:
            logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
            existing.add(stream)
        message = item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))
        stamp = ms(item["time"]) if isinstance(item, dict) else ms(when(5))
        logs.put_log_events(
            logGroupName=GROUP,
            logStreamName=stream,
            logEvents=[{"timestamp": stamp, "message": message}],
        )


def fill(logs: Any) -> None:
    logs.create_log_group(logGroupName=GROUP)
    streams = ["tokenvend-vend/2026/11/30/a", "tokenvend-dingtalk/2026/11/30/b"]
    put_events(
        logs,
        [(streams[i % 2], item) for i, item in enumerate(RECORDS)]
        + [(streams[0], '{"level":"INFO","message":"not an audit record"}'), (streams[1], "{")],
    )


@pytest.fixture
def moto_logs() -> Iterator[Any]:
    with mock_aws():
        logs = boto3.client("logs", region_name="us-east-1")
        fill(logs)
        yield logs


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ({}, ["r-4", "r-3", "r-2", "r-1", "r-1"]),
        ({"fingerprint": FINGERPRINT}, ["r-4", "r-1", "r-1"]),
        ({"caller": BOB}, ["r-3", "r-2"]),
        ({"provider": "dingtalk", "connection": "corp-a"}, ["r-4", "r-3", "r-1", "r-1"]),
        ({"provider": "dingtalk", "connection": "corp-a", "caller": BOB}, ["r-3"]),
        ({"provider": "oauth2", "connection": "corp-a"}, []),
        ({"since": NOW - timedelta(minutes=25)}, ["r-4", "r-3"]),
        (
            {"since": NOW - timedelta(days=2), "fingerprint": FINGERPRINT},
            ["r-4", "r-1", "r-1", "r-old"],
        ),
        ({"limit": 2}, ["r-4", "r-3"]),
    ],
)
def test_the_local_records_are_read_and_filtered_newest_first(
    moto_logs: Any, asked: dict[str, Any], expected: list[str]
) -> None:
    found = read_local(moto_logs, GROUP, filters(**asked))

    assert request_ids(found) == expected
    assert all(list(r) == list(FIELDS) for r in found)


def test_the_local_records_are_read_across_pages(
    moto_logs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given pages of one event each
    original = moto_logs.filter_log_events
    calls = []

    def one_by_one(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(**kwargs, limit=1)

    monkeypatch.setattr(moto_logs, "filter_log_events", one_by_one)

    # When
    found = read_local(moto_logs, GROUP, filters(caller=ALICE))

    # Then every page was read
    assert request_ids(found) == ["r-4", "r-1", "r-1"]
    assert len(calls) >= len(RECORDS)


# -- the deployed way: Logs Insights --------------------------------------------------------


def insights_row(item: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"field": "@timestamp", "value": item["time"].replace("T", " ").rstrip("Z")},
        {"field": "@message", "value": json.dumps(item, separators=(",", ":"))},
        {"field": "@ptr", "value": "CmAKJwoj"},
    ]


def test_the_insights_query_and_its_parameters_are_sent_exactly() -> None:
    # Given a Logs Insights that runs the query for a while, then answers
    logs = boto3.client("logs", region_name="us-east-1")
    asked = filters(provider="dingtalk", connection="corp-a", fingerprint=FINGERPRINT)
    with Stubber(logs) as stub:
        stub.add_response(
            "start_query",
            {"queryId": "q-1"},
            {
                "logGroupName": GROUP,
                "startTime": int((NOW - timedelta(days=1)).timestamp()),
                "endTime": int(NOW.timestamp()) + 1,
                "queryString": (
                    "fields @timestamp, @message\n"
                    "| filter audit = 1\n"
                    '| filter provider = "dingtalk"\n'
                    '| filter connection = "corp-a"\n'
                    f'| filter fingerprint = "{FINGERPRINT}"\n'
                    "| sort @timestamp desc\n"
                    "| limit 1000"
                ),
            },
        )
        stub.add_response(
            "get_query_results", {"status": "Scheduled", "results": []}, {"queryId": "q-1"}
        )
        stub.add_response(
            "get_query_results", {"status": "Running", "results": []}, {"queryId": "q-1"}
        )
        stub.add_response(
            "get_query_results",
            {
                "status": "Complete",
                "results": [
                    insights_row(RECORDS[0]),
                    insights_row(RECORDS[1]),
                    insights_row(RECORDS[4]),
                ],
            },
            {"queryId": "q-1"},
        )
        slept: list[float] = []

        # When
        found = query_insights(logs, GROUP, asked, sleep=slept.append, clock=lambda: 0.0)

        # Then
        stub.assert_no_pending_responses()
    assert request_ids(found) == ["r-4", "r-1", "r-1"]
    assert found[0] == RECORDS[4]
    assert len(slept) == 2


class RunningForever:
    """A Logs Insights whose query never finishes; the calls made of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def start_query(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("start_query", kwargs))
        return {"queryId": "q-2"}

    def get_query_results(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("get_query_results", kwargs))
        return {"status": "Running", "results": []}

    def stop_query(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("stop_query", kwargs))
        return {"success": True}


def test_an_insights_query_that_does_not_finish_is_stopped_and_said() -> None:
    logs = RunningForever()
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(AuditQueryError, match="did not finish in 10 s"):
        query_insights(logs, GROUP, filters(), wait=10, sleep=sleep, clock=lambda: now[0])

    assert logs.calls[-1] == ("stop_query", {"queryId": "q-2"})
    assert now[0] <= 10


@pytest.mark.parametrize("status", ["Failed", "Cancelled", "Timeout"])
def test_an_insights_query_that_fails_is_said(status: str) -> None:
    logs = boto3.client("logs", region_name="us-east-1")
    with Stubber(logs) as stub:
        stub.add_response("start_query", {"queryId": "q-3"})
        stub.add_response("get_query_results", {"status": status, "results": []})

        with pytest.raises(AuditQueryError, match=status):
            query_insights(logs, GROUP, filters(), sleep=lambda s: None)


def test_an_insights_round_trip_against_moto(moto_logs: Any) -> None:
    # moto runs the query's fields, sort and limit but not its filters: what it answers is
    # filtered here again, so the answer is the one a real Insights gives
    found = query_insights(
        moto_logs, GROUP, filters(caller=ALICE, fingerprint=FINGERPRINT), sleep=lambda s: None
    )

    assert request_ids(found) == ["r-4", "r-1", "r-1"]


# -- the command ----------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["audit", *args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fails the test on any AWS client the command would make; the services asked for."""
    asked: list[str] = []

    def refuse(self: Target, service: str, **kwargs: Any) -> Any:
        asked.append(service)
        raise AssertionError(f"an AWS call ({service}) for bad input")

    monkeypatch.setattr(Target, "client", refuse)
    monkeypatch.setattr(Target, "session", lambda self: refuse(self, "session"))
    monkeypatch.setenv("TOKENVEND_AUDIT_LOG_GROUP", GROUP)
    return asked


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--connection", "dingtalk"], "PROVIDER/CONNECTION"),
        (["--connection", 'dingtalk/a" or 1=1'], "PROVIDER/CONNECTION"),
        (["--caller", "alice"], "IAM principal's ARN"),
        (["--caller", f'{ALICE}" or "1'], "IAM principal's ARN"),
        (["--fingerprint", "abc"], "16 hex"),
        (["--since", "1y"], "--since"),
        (["--since", "2999-01-01T00:00:00Z"], "not in the past"),
        (["--limit", "0"], "--limit"),
        (["--token-file", "/nonexistent/leaked.txt"], "cannot read"),
        (["--fingerprint", FINGERPRINT, "--token-file", "x"], "not allowed with"),
    ],
)
def test_bad_input_exits_2_in_one_line_before_any_aws_call(
    capsys: pytest.CaptureFixture[str], no_aws: list[str], args: list[str], said: str
) -> None:
    status, out, err = run(capsys, *args)

    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and said in err, err
    assert no_aws == []


def test_an_empty_token_file_says_so_without_its_path_content(
    capsys: pytest.CaptureFixture[str], no_aws: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "leaked.txt"
    path.write_text("\n\n")

    status, _, err = run(capsys, "--token-file", str(path))

    assert status == 2
    assert "holds no token" in err
    assert no_aws == []


@pytest.fixture
def local_moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """moto's server on 127.0.0.1 behind AWS_ENDPOINT_URL and TOKENVEND_AUDIT_LOG_GROUP, as a
    second shell of `tokenvend local` has them; the audit group filled."""
    with MotoServer() as server:
        requests.post(f"{server.url}/moto-api/reset", timeout=10).raise_for_status()
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("TOKENVEND_AUDIT_LOG_GROUP", GROUP)
        logs = boto3.client("logs", endpoint_url=server.url, region_name="us-east-1")
        fill_recent(logs)
        yield logs


def fill_recent(logs: Any) -> None:
    """RECORDS, moved to end a minute ago: the command asks up to the real now."""
    shift = datetime.now(UTC) - NOW - timedelta(minutes=1)
    logs.create_log_group(logGroupName=GROUP)
    logs.create_log_stream(logGroupName=GROUP, logStreamName="s")
    moved = []
    for item in RECORDS:
        at = datetime.fromisoformat(item["time"].replace("Z", "+00:00")) + shift
        moved.append({**item, "time": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"})
    moved.sort(key=lambda r: r["time"])
    logs.put_log_events(
        logGroupName=GROUP,
        logStreamName="s",
        logEvents=[{"timestamp": ms(r["time"]), "message": json.dumps(r)} for r in moved],
    )


def test_the_local_stack_is_read_without_logs_insights(
    capsys: pytest.CaptureFixture[str], local_moto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Logs Insights that must not be asked (the local stack runs none)
    def no_insights(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Logs Insights asked of the local stack")

    monkeypatch.setattr(audit, "query_insights", no_insights)

    # When
    status, out, err = run(capsys, "--connection", "dingtalk/corp-a", "--json", "--verbose")

    # Then
    assert status == 0, err
    found = json.loads(out)
    assert request_ids(found) == ["r-4", "r-3", "r-1", "r-1"]
    assert "FilterLogEvents" in err
    assert '| filter connection = "corp-a"' in err


def test_the_table_shows_who_got_a_leaked_token_and_never_the_token(
    capsys: pytest.CaptureFixture[str], local_moto: Any, tmp_path: Path
) -> None:
    # Given the leaked token in a file
    path = tmp_path / "leaked.txt"
    path.write_text(TOKEN + "\n")

    # When
    status, out, err = run(capsys, "--token-file", str(path), "--verbose")

    # Then Alice's records, newest first, in a table with the design's columns
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "TIME", "ACTION", "TRIGGER", "OUTCOME", "CALLER", "SOURCE", "IP", "CONNECTION",
        "FINGERPRINT", "EXPIRES", "AT",
    ]  # fmt: skip
    assert len(lines) == 4
    assert all(ALICE in line and FINGERPRINT in line for line in lines[1:])
    assert "memory" in lines[1]
    assert "refresh_attempt  vend" in lines[2]
    assert "vend             api      provider" in lines[3]
    assert "203.0.113.9" in lines[3] and "2026-11-30T12:00:00Z" in lines[3]
    assert BOB not in out
    assert f"fingerprint of the token in --token-file: {FINGERPRINT}" in err
    assert TOKEN not in out + err


def test_the_token_is_read_from_standard_input(
    capsys: pytest.CaptureFixture[str], local_moto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(TOKEN.encode())))

    status, out, err = run(capsys, "--token-file", "-", "--json")

    assert status == 0, err
    assert request_ids(json.loads(out)) == ["r-4", "r-1", "r-1"]
    assert TOKEN not in out + err


def test_a_refusal_shows_its_error_code(
    capsys: pytest.CaptureFixture[str], local_moto: Any
) -> None:
    status, out, _ = run(capsys, "--caller", BOB)

    assert status == 0
    assert "refused (forbidden)" in out
    assert "oauth2/billing" in out


def test_nothing_found_says_so(capsys: pytest.CaptureFixture[str], local_moto: Any) -> None:
    status, out, _ = run(capsys, "--caller", "arn:aws:iam::123456789012:user/nobody")
    assert status == 0
    assert out.startswith(f"no audit records in {GROUP} from ")

    status, out, _ = run(capsys, "--caller", "arn:aws:iam::123456789012:user/nobody", "--json")
    assert status == 0
    assert json.loads(out) == []


def test_a_missing_log_group_is_one_line(
    capsys: pytest.CaptureFixture[str], local_moto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENVEND_AUDIT_LOG_GROUP", "/tokenvend/other/audit")

    status, out, err = run(capsys)

    assert status == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "cannot read the audit log group /tokenvend/other/audit" in err


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A deployed stack in moto (mock_aws, no endpoint override): its audit log group named
    by its AuditLogGroup output, filled."""
    monkeypatch.delenv("TOKENVEND_AUDIT_LOG_GROUP", raising=False)
    monkeypatch.setenv("TOKENVEND_STACK", "tokenvend")
    with mock_aws():
        template = {
            "Resources": {
                "AuditLog": {
                    "Type": "AWS::Logs::LogGroup",
                    "Properties": {"LogGroupName": GROUP},
                }
            },
            "Outputs": {"AuditLogGroup": {"Value": {"Ref": "AuditLog"}}},
        }
        cloudformation = boto3.client("cloudformation", region_name="us-east-1")
        cloudformation.create_stack(StackName="tokenvend", TemplateBody=json.dumps(template))
        logs = boto3.client("logs", region_name="us-east-1")
        logs.create_log_stream(logGroupName=GROUP, logStreamName="s")
        yield logs


def test_a_deployed_stack_is_asked_with_logs_insights_on_its_audit_log_group(
    capsys: pytest.CaptureFixture[str], deployed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the stack's logs client, stubbed to see exactly what is asked
    stub = Stubber(deployed)
    stub.add_response(
        "start_query",
        {"queryId": "q-9"},
        {
            "logGroupName": GROUP,
            "startTime": ANY,
            "endTime": ANY,
            "queryString": (
                "fields @timestamp, @message\n"
                "| filter audit = 1\n"
                f'| filter caller = "{BOB}"\n'
                "| sort @timestamp desc\n"
                "| limit 5"
            ),
        },
    )
    stub.add_response(
        "get_query_results",
        {"status": "Complete", "results": [insights_row(RECORDS[2]), insights_row(RECORDS[3])]},
        {"queryId": "q-9"},
    )
    original = Target.client

    def client(self: Target, service: str, **kwargs: Any) -> Any:
        return deployed if service == "logs" else original(self, service, **kwargs)

    monkeypatch.setattr(Target, "client", client)

    # When
    with stub:
        status, out, err = run(
            capsys, "--caller", BOB, "--limit", "5", "--since", "2h", "--json", "--verbose"
        )
        stub.assert_no_pending_responses()

    # Then the group came from the stack's output, the query was shown, and the records printed
    assert status == 0, err
    assert f"Logs Insights query on {GROUP} from " in err
    assert f'| filter caller = "{BOB}"' in err
    assert request_ids(json.loads(out)) == ["r-3", "r-2"]


def test_without_a_group_or_a_stack_it_says_what_to_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENVEND_AUDIT_LOG_GROUP", raising=False)
    with mock_aws():
        status, _, err = run(capsys)

    assert status == 1
    assert "set TOKENVEND_AUDIT_LOG_GROUP" in err
    assert err.count("\n") == 1


# -- what a review found ----------------------------------------------------------------------


def test_a_roles_arn_finds_its_sessions_and_no_other_roles() -> None:
    role = "arn:aws:iam::123456789012:role/service/reports"  # a path is not in a session's ARN
    asked = filters(caller=role)
    assert asked.matches(record(caller="arn:aws:sts::123456789012:assumed-role/reports/job-7"))
    assert asked.matches(record(caller=role))
    for other in (
        "arn:aws:sts::123456789012:assumed-role/reports-two/job-7",
        "arn:aws:sts::999999999999:assumed-role/reports/job-7",
        "arn:aws:iam::123456789012:role/reports",
        None,
    ):
        assert not asked.matches(record(caller=other)), other
    assert insights_query(asked).splitlines()[2] == (
        f'| filter caller = "{role}" or '
        'strcontains(caller, "arn:aws:sts::123456789012:assumed-role/reports/")'
    )
    # a user's ARN is matched exactly, as before
    assert "strcontains" not in insights_query(filters(caller=ALICE))


@pytest.mark.parametrize("since", ["999999w", "999999d", "30000d", "1999-12-31T23:00:00Z"])
def test_a_since_before_any_record_could_be_is_refused_not_a_crash(since: str) -> None:
    with pytest.raises(AuditInputError, match="before any record"):
        parse_since(since, NOW)


@pytest.mark.parametrize("since", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_a_since_beyond_what_a_date_holds_is_refused(since: str) -> None:
    with pytest.raises(AuditInputError, match="--since"):
        parse_since(since, NOW)


@pytest.mark.parametrize(
    "content",
    [
        f"Bearer {TOKEN}",
        f"Authorization: Bearer {TOKEN}\n",
        f"  bearer {TOKEN}  ",
        json.dumps({"provider": "dingtalk", "access_token": TOKEN, "expires_in": 10}, indent=2),
    ],
)
def test_a_token_file_may_hold_a_header_or_the_apis_answer(tmp_path: Path, content: str) -> None:
    path = tmp_path / "leaked.txt"
    path.write_text(content)
    assert read_token_fingerprint(str(path), io.BytesIO()) == FINGERPRINT


def test_the_time_range_ends_once_the_token_is_read() -> None:
    """`tokenvend token … | tokenvend audit --token-file -`: the end of the range is taken
    after standard input is read, so the vend that produced the token is in it."""
    from tokenvend.cli import audit_filters, build_parser

    read: list[str] = []

    class Pipe(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            read.append("token")
            return super().read(size)

    def clock() -> float:
        assert read == ["token"], "the clock was read before the token"
        return NOW.timestamp()

    args = build_parser().parse_args(["audit", "--token-file", "-"])
    asked = audit_filters(args, clock, Pipe(TOKEN.encode()))
    assert asked.until == NOW and asked.fingerprint == FINGERPRINT


def test_a_deployed_query_reads_the_functions_log_groups_too() -> None:
    """Records that could not be written to the audit log group are in the function's own
    log: the query names both."""
    logs = boto3.client("logs", region_name="us-east-1")
    groups = [GROUP, "/aws/lambda/tokenvend-dingtalk", "/aws/lambda/tokenvend-vend"]
    with Stubber(logs) as stub:
        stub.add_response(
            "start_query",
            {"queryId": "q-2"},
            {"logGroupNames": groups, "startTime": ANY, "endTime": ANY, "queryString": ANY},
        )
        stub.add_response(
            "get_query_results",
            {"status": "Complete", "results": [insights_row(RECORDS[0])]},
            {"queryId": "q-2"},
        )
        found = query_insights(logs, groups, filters(), sleep=lambda s: None)
    assert request_ids(found) == [RECORDS[0]["request_id"]]


def test_a_missing_function_log_group_leaves_the_audit_log_group_queried(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tokenvend.cli import _query_insights

    logs = boto3.client("logs", region_name="us-east-1")
    functions = ["/aws/lambda/tokenvend-vend"]
    with Stubber(logs) as stub:
        stub.add_client_error(
            "start_query", "ResourceNotFoundException", "Log group does not exist"
        )
        stub.add_response(
            "start_query",
            {"queryId": "q-3"},
            {"logGroupName": GROUP, "startTime": ANY, "endTime": ANY, "queryString": ANY},
        )
        stub.add_response(
            "get_query_results",
            {"status": "Complete", "results": [insights_row(RECORDS[0])]},
            {"queryId": "q-3"},
        )
        found = _query_insights(logs, GROUP, functions, filters())
    assert request_ids(found) == [RECORDS[0]["request_id"]]
    assert "querying the audit log group alone" in capsys.readouterr().err
