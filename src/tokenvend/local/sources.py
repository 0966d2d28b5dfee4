"""Event source mappings from SQS queues, as Lambda's pollers run them: the template's
AWS::Lambda::EventSourceMapping resources (and SAM `SQS` events) poll their queue at the
local SQS and invoke their function with SQS's event; messages are deleted when the function
succeeds, except those it reports in `batchItemFailures` (ReportBatchItemFailures). A failed
batch becomes visible again after the queue's visibility timeout, and the queue's redrive
policy applies, as in AWS.

moto's server answers one request at a time, so the queues are polled without long polling
(WaitTimeSeconds=0), once a second."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..template import Stack
from .functions import LocalFunction
from .log import log

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class SqsSource:
    function: LocalFunction
    queue_arn: str
    batch_size: int
    report_failures: bool

    @property
    def queue_name(self) -> str:
        return self.queue_arn.rsplit(":", 1)[-1]


def sources_of(stack: Stack, functions: Mapping[str, LocalFunction]) -> list[SqsSource]:
    by_arn = {function.arn: function for function in functions.values()}
    found: list[SqsSource] = []
    for logical_id, resource in stack.resources.items():
        if not isinstance(resource, dict) or resource.get("Type") != (
            "AWS::Lambda::EventSourceMapping"
        ):
            continue
        props = stack.resolve(resource.get("Properties") or {})
        name = str(props.get("FunctionName", ""))
        function = functions.get(name) or by_arn.get(name)
        arn = str(props.get("EventSourceArn", ""))
        if function is None or ":sqs:" not in arn:
            log("event source not served locally", level="WARNING", mapping=logical_id)
            continue
        if props.get("Enabled", True) in (False, "false"):
            continue
        found.append(_source(function, arn, props))
    for function in functions.values():  # SAM's own SQS events
        for _, props in stack.function_events(function.logical_id, "SQS"):
            if props.get("Enabled", True) not in (False, "false"):
                found.append(_source(function, str(props["Queue"]), props))
    return found


def _source(function: LocalFunction, arn: str, props: dict[str, Any]) -> SqsSource:
    return SqsSource(
        function=function,
        queue_arn=arn,
        batch_size=max(1, min(10, int(props.get("BatchSize", 10)))),
        report_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
    )


class SqsPollers:
    def __init__(self, sources: list[SqsSource], *, region: str) -> None:
        self._sources = sources
        self._region = region
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._poll, args=(source,), name=f"sqs-{source.queue_name}", daemon=True
            )
            for source in sources
        ]

    def start(self) -> SqsPollers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, wait: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=wait)

    def _poll(self, source: SqsSource) -> None:
        import boto3

        sqs = boto3.session.Session().client("sqs")
        queue_url = sqs.get_queue_url(QueueName=source.queue_name)["QueueUrl"]
        while not self._stop.wait(POLL_SECONDS):
            try:
                answer = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=source.batch_size,
                    WaitTimeSeconds=0,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
                messages = answer.get("Messages") or []
                if messages:
                    self._deliver(sqs, queue_url, source, messages)
            except Exception as exc:  # keep polling, as Lambda's pollers do
                log("polling failed", level="ERROR", queue=source.queue_name, error=repr(exc))

    def _deliver(
        self, sqs: Any, queue_url: str, source: SqsSource, messages: list[dict[str, Any]]
    ) -> None:
        event = {"Records": [self._record(source, message) for message in messages]}
        invocation = source.function.invoke(event)
        if invocation.error:
            return  # the whole batch becomes visible again after the visibility timeout
        failed: set[str] = set()
        if source.report_failures:
            result = json.loads(invocation.payload or b"null")
            items = (result or {}).get("batchItemFailures") if isinstance(result, dict) else None
            failed = {str(item.get("itemIdentifier")) for item in items or []}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )

    def _record(self, source: SqsSource, message: dict[str, Any]) -> dict[str, Any]:
        attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value.get("DataType"),
            }
            for name, value in (message.get("MessageAttributes") or {}).items()
        }
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes") or {},
            "messageAttributes": attributes,
            "md5OfBody": message.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": source.queue_arn,
            "awsRegion": self._region,
        }
