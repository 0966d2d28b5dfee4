"""Fan-out: a scheduled run with more due connections than the threshold keeps the nearest
expiries and queues the rest to its provider's queue, whose batches the same function then
refreshes."""

from __future__ import annotations

import json
from dataclasses import replace

import boto3

from support import LambdaContext, Stack
from tokenvend_core.refresh.fanout import SqsFanout


def queue_for(stack: Stack, provider: str, threshold: int, batch: int) -> str:
    sqs = boto3.client("sqs")
    url = str(sqs.create_queue(QueueName=f"{provider}-refresh")["QueueUrl"])
    refresher = stack.refreshers[provider]
    refresher.fanout = SqsFanout(sqs, url)
    refresher.settings = replace(refresher.settings, fanout_threshold=threshold, fanout_batch=batch)
    return url


def drain(url: str) -> list[dict[str, object]]:
    sqs = boto3.client("sqs")
    records = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return records
        for message in got:
            records.append({"messageId": message["MessageId"], "body": message["Body"]})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_the_overflow_is_queued_in_batches_and_refreshed_from_the_queue(stack: Stack) -> None:
    url = queue_for(stack, "oauth2", threshold=3, batch=2)
    names = [f"c{i}" for i in range(8)]
    for name in names:
        stack.connect("oauth2", name)
    report = stack.call_provider("oauth2", {"action": "schedule"})["schedule"]
    assert report["due"] == 8 and report["refreshed"] == 3 and report["fanned_out"] == 5
    assert report["deferred"] == 0
    records = drain(url)
    assert len(records) == 3  # 5 connections in batches of 2
    queued = [
        entry["connection"] for r in records for entry in json.loads(str(r["body"]))["connections"]
    ]
    refreshed_here = {n for n in names if stack.tokens.get("oauth2", n) is not None}
    assert len(refreshed_here) == 3 and set(queued) == set(names) - refreshed_here
    for record in records:
        answer = stack.provider_functions["oauth2"].lambda_handler(
            {"Records": [record]}, LambdaContext("tokenvend-test-oauth2")
        )
        assert answer == {"batchItemFailures": []}
    assert all(stack.tokens.get("oauth2", name) is not None for name in names)
    assert stack.sandbox.calls("oauth2") == 8


def test_a_batch_that_does_not_fit_is_handed_back_and_bad_ones_dropped(stack: Stack) -> None:
    stack.connect("oauth2", "late")
    body = json.dumps(
        {"action": "refresh_batch", "connections": [{"connection": "late", "min_ttl": 1200}]}
    )
    records = [{"messageId": "m-1", "body": body}, {"messageId": "m-2", "body": "{not json"}]
    answer = stack.provider_functions["oauth2"].lambda_handler(
        {"Records": records}, LambdaContext("tokenvend-test-oauth2", timeout_ms=5_000)
    )
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}  # no time left for it
    assert stack.sandbox.calls("oauth2") == 0
    answer = stack.provider_functions["oauth2"].lambda_handler(
        {"Records": records[:1]}, LambdaContext("tokenvend-test-oauth2")
    )
    assert answer == {"batchItemFailures": []} and stack.sandbox.calls("oauth2") == 1


def test_below_the_threshold_nothing_is_queued(stack: Stack) -> None:
    url = queue_for(stack, "azure", threshold=10, batch=5)
    for i in range(4):
        stack.connect("azure", f"c{i}")
    report = stack.call_provider("azure", {"action": "schedule"})["schedule"]
    assert report["refreshed"] == 4 and report["fanned_out"] == 0
    assert drain(url) == []
