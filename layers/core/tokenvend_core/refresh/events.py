"""The events a provider function accepts: the schedule (and its fan-out batches), `refresh`
from the vend function, and, for providers that redeem authorization codes, `authorize`
(an operator's code) and the link flow's `connect` (make a link) and `callback` (the
state and code a user's browser brought back; `link`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tokenvend_core import audit
from tokenvend_core.errors import InvalidRequest, TokenVendError
from tokenvend_core.names import SHA256_RE, check_connection, parse_min_ttl
from tokenvend_core.need import Need
from tokenvend_core.observability import logger
from tokenvend_core.refresh import link, runtime
from tokenvend_core.refresh.link import Connected, LinkKey
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
            refresher.audit.record(
                "schedule", "failed", provider=refresher.provider, error_code="invalid_request"
            )
            continue
        report = refresher.refresh_batch(items, remaining_ms)
        refresher.audit.record(
            "schedule", "ok", provider=refresher.provider, detail=report.as_dict()
        )
        if report.deferred:
            failures.append({"itemIdentifier": record.get("messageId", "")})
    return {"batchItemFailures": failures}


def handle(
    event: Any,
    refresher: Refresher,
    remaining_ms: Callable[[], int],
    *,
    link_key: LinkKey | None = None,
) -> dict[str, Any]:
    """One event's answer. `link_key` signs and checks connect links; by default the one the
    settings name (`runtime.link_key`). Its audit records are written before it returns."""
    with refresher.audit.invocation(), audit.bind(**origin_of(event)):
        return _answer(event, refresher, remaining_ms, link_key)


TRIGGERS = {"refresh": "vend", "connect": "vend", "authorize": "operator", "callback": "link"}


def origin_of(event: Any) -> dict[str, str | None]:
    """Who is asking, for the audit trail: what started the event, and for an invocation by
    the vend function, its request id, caller and address."""
    if is_queued(event):
        return {"trigger": "fanout"}
    if is_scheduled(event):
        return {"trigger": "schedule"}
    if not isinstance(event, dict):
        return {}
    action = event.get("action")
    trigger = TRIGGERS.get(action) if isinstance(action, str) else None
    if trigger == "vend" and not isinstance(event.get("request_id"), str):
        trigger = "direct"  # invoked by someone other than the vend function (an operator)
    origin: dict[str, str | None] = {"trigger": trigger}
    for name, key in (("request_id", "request_id"), ("source_ip", "source_ip"),
                      ("caller", "caller_arn")):  # fmt: skip
        value = event.get(key)
        if isinstance(value, str) and 0 < len(value) <= 2048 and value.isprintable():
            origin[name] = value
    return origin


def _answer(
    event: Any,
    refresher: Refresher,
    remaining_ms: Callable[[], int],
    link_key: LinkKey | None,
) -> dict[str, Any]:
    if is_queued(event):
        return handle_queued(event, refresher, remaining_ms)
    if is_scheduled(event):
        # Failures here raise: the invocation fails and Lambda's asynchronous retries and
        # failure destination take over.
        try:
            report = refresher.run_schedule(remaining_ms)
        except Exception as exc:
            code = exc.code if isinstance(exc, TokenVendError) else "internal"
            refresher.audit.record(
                "schedule", "failed", provider=refresher.provider, error_code=code
            )
            raise
        refresher.audit.record(
            "schedule", "ok", provider=refresher.provider, detail=report.as_dict()
        )
        return {"ok": True, "schedule": report.as_dict()}
    try:
        if not isinstance(event, dict):
            raise InvalidRequest("the event must be a JSON object")
        action = event.get("action")
        if action == "callback":
            return _callback(event, refresher, link_key or runtime.link_key(refresher.settings))
        connection = check_connection(event.get("connection"))
        if action == "connect":
            return _connect(event, refresher, connection, link_key)
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
        raise InvalidRequest(
            "action must be 'refresh', 'authorize', 'connect' or 'callback', or a scheduled event"
        )
    except TokenVendError as error:
        return {"ok": False, "error": error.to_dict()}
    except Exception:
        logger.exception("provider event crashed")
        return {
            "ok": False,
            "error": {"code": "internal", "message": "internal error; see the logs"},
        }


def _connect(
    event: dict[str, Any], refresher: Refresher, connection: str, key: LinkKey | None
) -> dict[str, Any]:
    """A link made. The vend function records the links it asks for; one asked for by
    anyone else, invoking this function directly, is recorded here."""
    direct = audit.current().trigger == "direct"
    try:
        caller = event.get("caller_arn")
        if caller is not None and not isinstance(caller, str):
            raise InvalidRequest("caller_arn must be a string")
        made = link.connect(
            refresher, key or runtime.link_key(refresher.settings), connection, caller_arn=caller
        )
    except TokenVendError as error:
        if direct:
            refresher.audit.record("connect", "refused", provider=refresher.provider,
                                   connection=connection, error_code=error.code)  # fmt: skip
        raise
    if direct:
        refresher.audit.record("connect", "ok", provider=refresher.provider,
                               connection=connection, expires_at=made.expires_at)  # fmt: skip
    return {"ok": True, "url": made.url, "expires_at": rfc3339(made.expires_at)}


def _callback(event: dict[str, Any], refresher: Refresher, key: LinkKey | None) -> dict[str, Any]:
    code, error = event.get("code"), event.get("error")
    for name, value in (("code", code), ("error", error)):
        if value is not None and (not isinstance(value, str) or not value or len(value) > 4096):
            raise InvalidRequest(f"{name} must be a non-empty string or null")
    if code is None and error is None:
        raise InvalidRequest("a callback carries the provider's code or its error")
    outcome = link.callback(refresher, key, event.get("state"), code=code, error=error)
    if not isinstance(outcome, Connected):
        return {"ok": False, "error": outcome.to_dict()}
    return {
        "ok": True,
        "provider": outcome.provider,
        "connection": outcome.connection,
        "expires_at": rfc3339(outcome.state.expires_at),
    }
