"""The three kinds of event a provider function accepts: the schedule, `refresh` from the
vend function, and `authorize` (for providers that redeem authorization codes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tokenvend_core.errors import InvalidRequest, TokenVendError
from tokenvend_core.names import SHA256_RE, check_connection, parse_min_ttl
from tokenvend_core.need import Need
from tokenvend_core.observability import logger
from tokenvend_core.refresh.refresher import Refresher
from tokenvend_core.tokens import rfc3339
from tokenvend_core.vend.invoker import outcome_to_wire


def is_scheduled(event: Any) -> bool:
    return isinstance(event, dict) and (
        event.get("detail-type") == "Scheduled Event" or event.get("action") == "schedule"
    )


def is_queued(event: Any) -> bool:
    return isinstance(event, dict) and isinstance(event.get("Records"), list)


def handle_queued(
    event: dict[str, Any], refresher: Refresher, remaining_ms: Callable[[], int]
) -> dict[str, Any]:
    """Batches from the fan-out queue. A batch not finished in this invocation is reported as
    failed so that SQS delivers it again; an unreadable one is dropped with an error log."""
    failures = []
    for record in event["Records"]:
        try:
            body = json.loads(record["body"])
            items = [
                (
                    check_connection(entry["connection"]),
                    Need(
                        min_ttl=float(entry.get("min_ttl") or 0),
                        newer_than=entry.get("newer_than"),
                        skew=refresher.settings.clock_skew,
                    ),
                )
                for entry in body["connections"]
            ]
        except (KeyError, TypeError, ValueError, InvalidRequest):
            logger.error("dropped an unreadable fan-out message")
            continue
        report = refresher.refresh_batch(items, remaining_ms)
        if report.deferred:
            failures.append({"itemIdentifier": record.get("messageId", "")})
    return {"batchItemFailures": failures}


def handle(event: Any, refresher: Refresher, remaining_ms: Callable[[], int]) -> dict[str, Any]:
    if is_queued(event):
        return handle_queued(event, refresher, remaining_ms)
    if is_scheduled(event):
        # Failures here raise: the invocation fails and Lambda's asynchronous retries and
        # failure destination take over.
        return {"ok": True, "schedule": refresher.run_schedule(remaining_ms).as_dict()}
    try:
        if not isinstance(event, dict):
            raise InvalidRequest("the event must be a JSON object")
        action = event.get("action")
        connection = check_connection(event.get("connection"))
        if action == "refresh":
            rejected = event.get("rejected_token_sha256")
            if rejected is not None and (
                not isinstance(rejected, str) or not SHA256_RE.fullmatch(rejected)
            ):
                raise InvalidRequest("rejected_token_sha256 must be 64 hexadecimal characters")
            newer_than = event.get("newer_than")
            if newer_than is not None and (
                isinstance(newer_than, bool) or not isinstance(newer_than, int)
            ):
                raise InvalidRequest("newer_than must be an integer")
            caller = event.get("caller_arn")
            if caller is not None and not isinstance(caller, str):
                raise InvalidRequest("caller_arn must be a string")
            need = Need(
                min_ttl=parse_min_ttl(event.get("min_ttl", 0)),
                rejected_sha256=rejected.lower() if rejected else None,
                newer_than=newer_than,
                skew=refresher.settings.clock_skew,
            )
            state = refresher.refresh(connection, need, caller_arn=caller)
            return {"ok": True, **outcome_to_wire(state)}
        if action == "authorize":
            state = refresher.authorize(connection, event.get("code"), event.get("redirect_uri"))  # type: ignore[arg-type]
            answer: dict[str, Any] = {
                "ok": True,
                "connection": connection,
                "expires_at": rfc3339(state.expires_at),
            }
            if state.refresh_expires_at:
                answer["refresh_expires_at"] = rfc3339(state.refresh_expires_at)
            return answer
        raise InvalidRequest("action must be 'refresh' or 'authorize', or a scheduled event")
    except TokenVendError as error:
        return {"ok": False, "error": error.to_dict()}
    except Exception:
        logger.exception("provider event crashed")
        return {
            "ok": False,
            "error": {"code": "internal", "message": "internal error; see the logs"},
        }
