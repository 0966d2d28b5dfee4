"""Fan-out for fleets larger than one scheduled run refreshes: the run keeps the nearest
expiries and queues the rest, in batches, to its provider's own SQS queue, which invokes
the same provider function again (with the same permissions, for the same provider)."""

from __future__ import annotations

import json
from typing import Any

from tokenvend_core.aws.clients import aws_call

SQS_BATCH = 10  # SendMessageBatch takes at most ten messages


class SqsFanout:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, bodies: list[dict[str, Any]]) -> int:
        """Queue each body as a message; returns how many were accepted."""
        sent = 0
        for start in range(0, len(bodies), SQS_BATCH):
            chunk = bodies[start : start + SQS_BATCH]
            with aws_call("the refresh queue"):
                answer = self._client.send_message_batch(
                    QueueUrl=self._queue_url,
                    Entries=[
                        {"Id": str(i), "MessageBody": json.dumps(body, separators=(",", ":"))}
                        for i, body in enumerate(chunk)
                    ],
                )
            sent += len(answer.get("Successful", []))
        return sent
