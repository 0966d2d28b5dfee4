"""The audit trail's writer: the record's shape, who is asking across threads, the audit log
group on moto (one stream a process, events in time order), and standard output when the
group cannot be written, so that no record is lost."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from support import AuditRecords
from tokenvend_core import audit
from tokenvend_core.audit import FIELDS, LogGroup, Trail

GROUP = "/tokenvend/test/audit"


def test_the_fingerprint_is_the_first_16_hex_of_the_sha256() -> None:
    token = "tok-\u00e9-123"
    assert audit.fingerprint(token) == hashlib.sha256(token.encode()).hexdigest()[:16]
    assert len(audit.fingerprint("x")) == 16


def test_a_record_has_every_field_in_order_and_says_nothing_of_the_token() -> None:
    records = AuditRecords()
    trail = Trail(records, function="fn", clock=lambda: 1_800_000_000.5)
    with audit.bind(request_id="r-1", trigger="api", caller="arn:aws:iam::1:user/a"):
        trail.record(
            "vend",
            "table",
            provider="oauth2",
            connection="c",
            secret_version="v1",
            expires_at=1_800_000_600,
            token="the-token",
        )
    trail.flush()
    (record,) = records.records
    assert tuple(record) == FIELDS
    assert record == {
        "audit": 1,
        "time": "2027-01-15T08:00:00.500Z",
        "request_id": "r-1",
        "function": "fn",
        "action": "vend",
        "trigger": "api",
        "caller": "arn:aws:iam::1:user/a",
        "source_ip": None,
        "provider": "oauth2",
        "connection": "c",
        "outcome": "table",
        "error_code": None,
        "secret_version": "v1",
        "expires_at": "2027-01-15T08:10:00Z",
        "fingerprint": audit.fingerprint("the-token"),
        "detail": None,
    }
    assert "the-token" not in json.dumps(record)


def test_nothing_is_written_until_the_invocation_ends_and_then_everything_once() -> None:
    records = AuditRecords()
    trail = Trail(records, function="fn")
    with trail.invocation():
        trail.record("schedule", "ok", provider="oauth2", detail={"due": 2})
        trail.record("schedule", "ok", provider="oauth2", detail={"due": 3})
        assert records.records == []
    assert [r["detail"]["due"] for r in records.records] == [2, 3]
    trail.flush()  # nothing left to write
    assert len(records.records) == 2


def test_the_origin_nests_and_the_inner_one_wins() -> None:
    records = AuditRecords()
    trail = Trail(records, function="fn")
    with audit.bind(request_id="lambda-id"), audit.bind(request_id="api-id", source_ip="1.2.3.4"):
        trail.record("refresh_attempt", "ok")
        assert audit.forwarded() == {"request_id": "api-id", "source_ip": "1.2.3.4"}
    trail.record("refresh_attempt", "ok")  # outside any: nobody
    trail.flush()
    assert [(r["request_id"], r["source_ip"]) for r in records.records] == [
        ("api-id", "1.2.3.4"),
        (None, None),
    ]
    assert audit.forwarded() == {}


def test_worker_threads_carry_the_origin_of_the_thread_that_started_them() -> None:
    records = AuditRecords()
    trail = Trail(records, function="fn")
    with audit.bind(request_id="run-1", trigger="schedule"):
        plain = threading.Thread(target=lambda: trail.record("refresh_attempt", "ok"))
        carried = threading.Thread(
            target=audit.carry(lambda: trail.record("refresh_attempt", "failed"))
        )
        for thread in (plain, carried):
            thread.start()
            thread.join()
    trail.flush()
    by_outcome = {r["outcome"]: r for r in records.records}
    assert by_outcome["failed"]["request_id"] == "run-1"
    assert by_outcome["failed"]["trigger"] == "schedule"
    assert by_outcome["ok"]["request_id"] is None  # a new thread starts with no origin


@pytest.fixture
def logs() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("logs", region_name="us-east-1")
        client.create_log_group(logGroupName=GROUP)
        yield client


def events(client: Any, stream: str) -> list[dict[str, Any]]:
    found = client.get_log_events(logGroupName=GROUP, logStreamName=stream, startFromHead=True)
    return [json.loads(event["message"]) for event in found["events"]]


def test_the_log_group_gets_one_stream_a_process_and_events_in_time_order(logs: Any) -> None:
    now = time.time()
    ticks = iter([now + 2, now + 1, now + 3])
    sink = LogGroup(GROUP, "tokenvend-vend", logs)
    trail = Trail(sink, function="tokenvend-vend", clock=lambda: next(ticks))
    for outcome in ("a", "b"):
        trail.record("vend", outcome)
    trail.flush()
    trail.record("vend", "c")
    trail.flush()
    streams = logs.describe_log_streams(logGroupName=GROUP)["logStreams"]
    assert [s["logStreamName"] for s in streams] == [sink.stream]
    assert sink.stream.startswith("tokenvend-vend/")
    assert [e["outcome"] for e in events(logs, sink.stream)] == ["b", "a", "c"]
    assert all(tuple(e) == FIELDS for e in events(logs, sink.stream))


def test_a_stream_deleted_under_the_writer_is_made_again(logs: Any) -> None:
    sink = LogGroup(GROUP, "fn", logs)
    trail = Trail(sink, function="fn")
    trail.record("vend", "memory")
    trail.flush()
    logs.delete_log_stream(logGroupName=GROUP, logStreamName=sink.stream)
    trail.record("vend", "table")
    trail.flush()
    assert [e["outcome"] for e in events(logs, sink.stream)] == ["table"]


def test_records_the_group_refuses_go_to_standard_output_in_the_same_shape(
    logs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = LogGroup("/no/such/group", "fn", logs)
    trail = Trail(sink, function="fn")
    trail.record("vend", "refused", error_code="forbidden")
    trail.record("vend", "memory", token="tok")
    trail.flush()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    records = [line for line in lines if line.get("audit") == 1]
    assert [r["outcome"] for r in records] == ["refused", "memory"]
    assert all(tuple(r) == FIELDS for r in records)
    assert "tok" not in json.dumps(records)


def test_without_an_audit_log_group_the_records_go_to_standard_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AUDIT_LOG_GROUP", raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "tokenvend-oauth2")
    trail = Trail.from_env()
    trail.record("schedule", "ok", provider="oauth2", detail={"due": 0})
    trail.flush()
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert (record["function"], record["action"]) == ("tokenvend-oauth2", "schedule")


def test_from_the_environment_the_trail_writes_to_the_named_group(
    logs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_LOG_GROUP", GROUP)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "tokenvend-vend")
    trail = Trail.from_env()
    assert isinstance(trail.sink, LogGroup) and trail.sink.group == GROUP
    trail.record("vend", "memory")
    trail.flush()
    (stream,) = logs.describe_log_streams(logGroupName=GROUP)["logStreams"]
    assert stream["logStreamName"].startswith("tokenvend-vend/")


def test_events_the_service_will_not_take_are_kept_on_standard_output(
    logs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # A clock hours ahead: CloudWatch Logs refuses events more than two hours in the future
    now = time.time()
    ticks = iter([now, now + 6 * 3600])
    sink = LogGroup(GROUP, "fn", logs)
    trail = Trail(sink, function="fn", clock=lambda: next(ticks))
    trail.record("vend", "memory")
    trail.record("vend", "table")
    trail.flush()
    assert [e["outcome"] for e in events(logs, sink.stream)] == ["memory"]
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["outcome"] == "table"
