"""The schedules of template.yaml, firing every second (`--refresh-every 1`): tokens are
refreshed before they expire with no caller involved, and a failing scheduled run is retried
and then recorded in the template's failure queue. Last, SIGTERM stops the stack cleanly."""

from __future__ import annotations

import json
import secrets
import signal
import time
from typing import Any

from e2e.harness import LocalProcess, put_secret, token_item, wait_for

LIFETIME = 20  # seconds: far less than the schedule's horizon, so every run refreshes it


def test_the_schedule_refreshes_a_short_lived_token_before_it_expires(
    ticking: LocalProcess,
) -> None:
    # Given an oauth2 client whose tokens live 20 s, and a connection to it
    client_secret = secrets.token_urlsafe(16)
    ticking.sandbox(
        "POST",
        "register/oauth2",
        {"client_id": "short-lived", "client_secret": client_secret, "lifetime": LIFETIME},
    )
    mark = ticking.mark()
    put_secret(
        ticking,
        "oauth2",
        "short-lived",
        {
            "token_url": f"{ticking.sandbox_url}/oauth2/token",
            "client_id": "short-lived",
            "client_secret": client_secret,
        },
    )

    # When the schedule runs (nobody asks the API for anything)
    first = wait_for(
        lambda: token_item(ticking, "oauth2", "short-lived"), 15, "the first scheduled fetch"
    )

    # Then a newer token replaces it while the first is still valid
    def newer() -> dict[str, Any] | None:
        item = token_item(ticking, "oauth2", "short-lived")
        assert time.time() < first["expires_at"], "the first token expired before a refresh"
        if item and item["version"] > first["version"] and item["expires_at"] > first["expires_at"]:
            return item
        return None

    later = wait_for(newer, 15, "a scheduled refresh")
    assert later["access_token"] != first["access_token"]
    assert ticking.invocations("tokenvend-oauth2", since=mark)  # the schedule's runs
    assert ticking.invocations("tokenvend-vend", since=mark) == []
    assert not [r for r in ticking.log_records(mark) if r.get("message") == "api request"]


def test_a_failing_scheduled_run_is_retried_then_sent_to_the_failure_queue(
    ticking: LocalProcess,
) -> None:
    # Given the token table is gone: every provider function fails
    mark = ticking.mark()
    ticking.client("dynamodb").delete_table(TableName=ticking.env["TOKENVEND_TABLE"])

    # When a scheduled event is invoked directly
    event = {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}
    answer = ticking.client("lambda").invoke(
        FunctionName="tokenvend-dingtalk", Payload=json.dumps(event)
    )

    # Then Lambda's unhandled-error answer comes back
    assert answer["FunctionError"] == "Unhandled"
    error = json.loads(answer["Payload"].read())
    assert error["errorType"] and error["errorMessage"]

    # And the schedule's own failing runs end up in the template's failure queue, retried once
    sqs = ticking.client("sqs")
    urls = [url for url in sqs.list_queues().get("QueueUrls", []) if "RefreshFailure" in url]
    assert len(urls) == 1

    def record() -> dict[str, Any] | None:
        got = sqs.receive_message(QueueUrl=urls[0], WaitTimeSeconds=0, MaxNumberOfMessages=1)
        messages = got.get("Messages") or []
        return json.loads(messages[0]["Body"]) if messages else None

    failure = wait_for(record, 15, "a failure record")
    assert failure["requestContext"]["condition"] == "RetriesExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 2  # MaximumRetryAttempts: 1
    assert failure["requestPayload"]["detail-type"] == "Scheduled Event"
    assert failure["responseContext"]["functionError"] == "Unhandled"
    unhandled = [r for r in ticking.log_records(mark) if r.get("function_error") == "Unhandled"]
    assert unhandled


def test_sigterm_stops_it_cleanly(ticking: LocalProcess) -> None:
    # When
    status = ticking.stop(signal.SIGTERM)

    # Then
    assert status == 0
    assert ticking.stdout[0].startswith("ready")
    assert all(line.startswith(("ready", "export ", "#")) for line in ticking.stdout)
    not_json = []
    for line in ticking.stderr:  # the functions' and the stack's logs: JSON lines only
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not_json == []
