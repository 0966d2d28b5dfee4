"""API Gateway's access log, as the local API writes it: one line per request, in the format
of the API stage's `AccessLogSetting` in template.yaml, with its `$context` variables filled
here, written to the log group its `DestinationArn` names, in the local AWS (moto's logs).

    setting = access_log_setting(stack, props)     # the template's format and group
    writer = AccessLogWriter(setting.log_group, stream).start()
    writer.write(epoch_ms, fill(setting.format, {"requestId": ..., "status": 200, ...}))
    writer.stop()                                   # writes what is left

A variable with no value (the unsigned callback's `identity.userArn`, the resource of a path
no route serves) is written `-`, as API Gateway writes it. Values are escaped as JSON string
content, so that the line stays one JSON document whatever a path holds; a path is written
without its query string, so the link callback's code and state never are.

The lines are written from a thread of their own, as API Gateway writes them after the
answer: a request never waits for its log line. Never put a header, a body or a query
string into a line.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..template import Stack, TemplateError
from .log import log

_VARIABLE = re.compile(r"\$context\.([A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)*)")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_LOG_GROUP_ARN = re.compile(r"arn:[a-z-]+:logs:[a-z0-9-]+:\d{12}:log-group:([^:]+)(?::\*)?")
BATCH = 500  # lines per PutLogEvents, at most
_STOP = object()


def request_time(moment: datetime) -> str:
    """$context.requestTime: `30/Nov/2026:10:20:01 +0000` (CLF, in English whatever the
    locale)."""
    moment = moment.astimezone(UTC)
    return (
        f"{moment.day:02d}/{_MONTHS[moment.month - 1]}/{moment.year:04d}:"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} +0000"
    )


def fill(template: str, context: Mapping[str, Any]) -> str:
    """`template` with every `$context.<name>` replaced by `context[<name>]` (`-` when it has
    none), escaped as JSON string content."""

    def value(match: re.Match[str]) -> str:
        found = context.get(match.group(1))
        if found is None or found == "":
            return "-"
        return json.dumps(str(found), ensure_ascii=False)[1:-1]

    return _VARIABLE.sub(value, template)


@dataclass(frozen=True)
class AccessLogSetting:
    """A stage's AccessLogSetting: its format, and the log group it writes to."""

    format: str
    log_group: str


def log_group_of(arn: str) -> str:
    """The name in a log group's ARN (CloudFormation's, ending in `:*`, or without)."""
    found = _LOG_GROUP_ARN.fullmatch(arn)
    if not found:
        raise TemplateError(f"AccessLogSetting.DestinationArn is not a log group's ARN: {arn}")
    return found.group(1)


def access_log_setting(stack: Stack, props: Mapping[str, Any]) -> AccessLogSetting | None:
    """The AccessLogSetting of an AWS::Serverless::Api's properties, resolved; None when the
    API writes no access log."""
    # AWS::Serverless::Api says AccessLogSetting; AWS::Serverless::HttpApi, AccessLogSettings.
    raw = props.get("AccessLogSetting", props.get("AccessLogSettings"))
    if raw is None:
        return None
    setting = stack.resolve(raw) or {}
    text, destination = setting.get("Format"), setting.get("DestinationArn")
    if not isinstance(text, str) or not isinstance(destination, str):
        raise TemplateError("AccessLogSetting needs a Format and a DestinationArn")
    return AccessLogSetting(text, log_group_of(destination))


class AccessLogWriter:
    """Writes access log lines to one stream of `log_group` in the local AWS (boto3 at the
    process's AWS_ENDPOINT_URL), in batches, from a thread of its own."""

    def __init__(self, log_group: str, stream: str | None = None) -> None:
        self.log_group = log_group
        self.stream = stream or (
            f"local/{datetime.now(UTC).strftime('%Y/%m/%d')}/{uuid.uuid4().hex}"
        )
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._stream_made = False
        self._last_error: str | None = None
        self.written = 0  # lines written, for the curious and the tests

    def start(self) -> AccessLogWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._thread.start()
        return self

    def write(self, timestamp_ms: int, line: str) -> None:
        """Queue one line (never blocks the request)."""
        self._queue.put((int(timestamp_ms), line))

    def stop(self, timeout: float = 10) -> None:
        """Write what is queued, then stop."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch: list[tuple[int, str]] = []
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
                if stopping or len(batch) >= BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._put(batch)

    def _put(self, batch: list[tuple[int, str]]) -> None:
        batch.sort(key=lambda event: event[0])  # PutLogEvents takes them in time order
        try:
            if self._client is None:
                import boto3

                self._client = boto3.session.Session().client("logs")
            if not self._stream_made:
                exists = self._client.exceptions.ResourceAlreadyExistsException
                with contextlib.suppress(exists):
                    self._client.create_log_stream(
                        logGroupName=self.log_group, logStreamName=self.stream
                    )
                self._stream_made = True
            self._client.put_log_events(
                logGroupName=self.log_group,
                logStreamName=self.stream,
                logEvents=[{"timestamp": ts, "message": line} for ts, line in batch],
            )
        except Exception as exc:
            error = repr(exc)
            if error != self._last_error:  # once per kind of failure, not once a request
                log(
                    "could not write the API's access log",
                    level="WARNING",
                    log_group=self.log_group,
                    lines=len(batch),
                    error=error,
                )
            self._last_error = error
            return
        self._last_error = None
        self.written += len(batch)
