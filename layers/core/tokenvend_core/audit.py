"""The audit trail: one record per decision, in one fixed shape, in a log group of its own.

A decision is a vend answer (from memory, from the table, after a refresh, stale, or
refused), a link made, a refresh attempt against the token endpoint, a code redemption, or
a scheduled run. Every record has the keys of `FIELDS`, null where a decision has no value,
and never a token, a refresh token, a code, a state, a secret or an error message: a token
is told by its fingerprint (the first 16 hexadecimal characters of its SHA-256), an error by
its code.

Who is asking (the request id, the trigger, the caller and their address) is bound once per
invocation (`bind`) and read by every record made under it, threads included (`carry`).
Each function's objects hold its `Trail` (`Trail.from_env`, built with them). Records are
kept in memory and written together when the invocation ends (`flush`): one PutLogEvents
call to the group `AUDIT_LOG_GROUP` names, on a stream of this process's own.
When there is no such group, or the write fails, the records go to standard output, the
function's own log, in the same shape. (An invocation that Lambda ends before it does, out
of memory, loses the records it had not written.)
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tokenvend_core.aws.clients import client, error_code
from tokenvend_core.tokens import rfc3339, sha256_hex

VERSION = 1
FIELDS = (
    "audit", "time", "request_id", "function", "action", "trigger", "caller", "source_ip",
    "provider", "connection", "outcome", "error_code", "secret_version", "expires_at",
    "fingerprint", "detail",
)  # fmt: skip
ACTIONS = frozenset({"vend", "refresh", "connect", "refresh_attempt", "authorize", "schedule"})
TRIGGERS = frozenset({"api", "vend", "direct", "schedule", "fanout", "operator", "link"})


def fingerprint(token: str) -> str:
    """What the trail says of a token: the first 16 hex characters of its SHA-256."""
    return sha256_hex(token)[:16]


@dataclass(frozen=True, slots=True)
class Origin:
    """Who is asking, for every record made while it is bound."""

    request_id: str | None = None
    trigger: str | None = None
    caller: str | None = None
    source_ip: str | None = None


_NOBODY = Origin()
_origin: contextvars.ContextVar[Origin] = contextvars.ContextVar("audit_origin", default=_NOBODY)


@contextmanager
def bind(
    *,
    request_id: str | None = None,
    trigger: str | None = None,
    caller: str | None = None,
    source_ip: str | None = None,
) -> Iterator[Origin]:
    """Binds the origin of this invocation's records; what is not given is kept from the
    origin bound around it."""
    around = _origin.get()
    origin = Origin(
        request_id=request_id or around.request_id,
        trigger=trigger or around.trigger,
        caller=caller or around.caller,
        source_ip=source_ip or around.source_ip,
    )
    token = _origin.set(origin)
    try:
        yield origin
    finally:
        _origin.reset(token)


def current() -> Origin:
    """The origin bound now."""
    return _origin.get()


def forwarded() -> dict[str, str]:
    """What an invocation of another function carries of this origin, so that its records
    name the same request and address (the caller travels as `caller_arn` already)."""
    origin = _origin.get()
    pairs = (("request_id", origin.request_id), ("source_ip", origin.source_ip))
    return {name: value for name, value in pairs if value}


def carry(target: Callable[[], None]) -> Callable[[], None]:
    """`target` to run on another thread under this thread's origin (a new thread starts
    with none)."""
    context = contextvars.copy_context()
    return lambda: context.run(target)


class Sink(Protocol):
    def write(self, records: list[dict[str, Any]]) -> None: ...


class StandardOutput:
    """The function's own log: a JSON line a record."""

    def write(self, records: list[dict[str, Any]]) -> None:
        sys.stdout.write("".join(_line(record) + "\n" for record in records))
        sys.stdout.flush()


class LogGroup:
    """The audit log group: one stream for this process, created on the first write."""

    def __init__(self, group: str, function: str, client: Any) -> None:
        self.group = group
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        self.stream = f"{function}/{day}/{uuid.uuid4().hex}"
        self._client = client  # a CloudWatch Logs client
        self._created = False
        self._lock = threading.Lock()

    def write(self, records: list[dict[str, Any]]) -> None:
        events = sorted(
            ({"timestamp": record.pop("_ms"), "message": _line(record)} for record in records),
            key=lambda event: event["timestamp"],
        )  # one call's events must be in time order
        with self._lock:
            if not self._created:
                self._create_stream()
            try:
                self._put(events)
            except Exception as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                self._create_stream()  # the stream was deleted under us: once more
                self._put(events)

    def _create_stream(self) -> None:
        try:
            self._client.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
        except Exception as exc:
            if error_code(exc) != "ResourceAlreadyExistsException":
                raise
        self._created = True

    def _put(self, events: list[dict[str, Any]]) -> None:
        refused: list[dict[str, Any]] = []
        for start in range(0, len(events), 1000):  # far below the service's limits per call
            batch = events[start : start + 1000]
            answer = self._client.put_log_events(
                logGroupName=self.group, logStreamName=self.stream, logEvents=batch
            )
            refused += _rejected(batch, answer.get("rejectedLogEventsInfo") or {})
        if refused:
            # Dated too far from now for CloudWatch Logs (a clock gone wrong): kept anyway.
            sys.stdout.write("".join(event["message"] + "\n" for event in refused))
            sys.stdout.flush()


def _rejected(batch: list[dict[str, Any]], info: dict[str, int]) -> list[dict[str, Any]]:
    """The events of `batch` that PutLogEvents says it did not take (too new from an index
    on; too old or expired up to an index)."""
    out = set()
    if "tooNewLogEventStartIndex" in info:
        out |= set(range(info["tooNewLogEventStartIndex"], len(batch)))
    for key in ("tooOldLogEventEndIndex", "expiredLogEventEndIndex"):
        if key in info:
            out |= set(range(0, info[key] + 1))
    return [batch[index] for index in sorted(out)]


class Trail:
    """This process's records, kept until the invocation ends (`flush`)."""

    def __init__(
        self,
        sink: Sink | None = None,
        *,
        function: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self.function = function
        self._clock = clock
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Trail:
        """The trail of the function whose environment this is: its name, and the group
        AUDIT_LOG_GROUP names (standard output without one). Read now, when the function's
        objects are built."""
        function = _function_name()
        return cls(_default_sink(function), function=function)

    @property
    def sink(self) -> Sink:
        if self._sink is None:
            self._sink = _default_sink(self.function or _function_name())
        return self._sink

    @sink.setter
    def sink(self, sink: Sink | None) -> None:
        self._sink = sink

    def record(
        self,
        action: str,
        outcome: str,
        *,
        provider: str | None = None,
        connection: str | None = None,
        error_code: str | None = None,
        secret_version: str | None = None,
        expires_at: float | None = None,
        token: str | None = None,
        detail: dict[str, int] | None = None,
        caller: str | None = None,
        trigger: str | None = None,
    ) -> dict[str, Any]:
        """Keeps one record for the next `flush`, and returns it (without the time kept for
        ordering)."""
        assert action in ACTIONS, action
        origin = _origin.get()
        now = self._clock()
        record: dict[str, Any] = {
            "audit": VERSION,
            "time": _time(now),
            "request_id": origin.request_id,
            "function": self.function or _function_name(),
            "action": action,
            "trigger": trigger or origin.trigger,
            "caller": caller or origin.caller,
            "source_ip": origin.source_ip,
            "provider": provider,
            "connection": connection,
            "outcome": outcome,
            "error_code": error_code,
            "secret_version": secret_version,
            "expires_at": rfc3339(expires_at) if expires_at else None,
            "fingerprint": fingerprint(token) if token else None,
            "detail": dict(detail) if detail is not None else None,
        }
        with self._lock:
            self._pending.append({**record, "_ms": int(now * 1000)})
        return record

    def flush(self) -> None:
        """Writes what is kept; on any failure, to standard output instead."""
        with self._lock:
            records, self._pending = self._pending, []
        if not records:
            return
        try:
            self.sink.write([dict(record) for record in records])
        except Exception as exc:
            from tokenvend_core.observability import emit, logger

            logger.warning(
                "audit records written to this function's log instead of the audit log group",
                extra={"error_type": type(exc).__name__, "records": len(records)},
            )
            emit("AuditFallback", len(records))
            for record in records:
                record.pop("_ms", None)
            StandardOutput().write(records)

    @contextmanager
    def invocation(self) -> Iterator[None]:
        """Flushes when the invocation ends, however it ends."""
        try:
            yield
        finally:
            self.flush()


def _default_sink(function: str) -> Sink:
    group = os.environ.get("AUDIT_LOG_GROUP") or ""
    if not group:
        return StandardOutput()
    # Short timeouts, two tries: the invocation waits for this write, and when it cannot be
    # made the records go to standard output instead. Built now, with the function's other
    # clients (Lambda's init phase), not in its first invocation.
    logs = client("logs", connect_timeout=1, read_timeout=2, total_max_attempts=2)
    return LogGroup(group, function, logs)


def _function_name() -> str:
    return os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or "local"


def _time(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _line(record: dict[str, Any]) -> str:
    return json.dumps({name: record.get(name) for name in FIELDS}, separators=(",", ":"))


__all__ = ["FIELDS", "Origin", "Trail", "bind", "carry", "current", "fingerprint", "forwarded"]
