"""The HTTP API as API Gateway's REST proxy events: parse, vend, shape the answer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tokenvend_core.errors import InvalidRequest, TokenVendError
from tokenvend_core.names import check_connection, check_provider, parse_min_ttl, parse_refresh_body
from tokenvend_core.observability import MetricUnit, dimension, emit, logger
from tokenvend_core.vend.vendor import Vendor

GET_ROUTE = "/tokens/{provider}/{connection}"
REFRESH_ROUTE = "/tokens/{provider}/{connection}/refresh"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def respond(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **NO_STORE, **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def error_response(error: TokenVendError) -> dict[str, Any]:
    headers = {}
    if error.status == 503:
        headers["Retry-After"] = str(error.retry_after or 5)
    return respond(error.status, {"error": {"code": error.code, "message": error.message}}, headers)


def caller_of(event: dict[str, Any]) -> str | None:
    identity = (event.get("requestContext") or {}).get("identity") or {}
    arn = identity.get("userArn") if isinstance(identity, dict) else None
    return arn if isinstance(arn, str) and arn else None


def handle(
    event: Any,
    vendor: Vendor,
    clock: Callable[[], float] = time.time,
    remaining: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Every outcome is an API Gateway response; nothing raises past here. `remaining` says
    how many seconds the invocation has left (the Lambda context's)."""
    where: dict[str, str] = {}
    try:
        if not isinstance(event, dict):
            raise InvalidRequest("not an API Gateway request")
        resource = event.get("resource")
        method = event.get("httpMethod")
        params = event.get("pathParameters") or {}
        if not isinstance(params, dict):
            raise InvalidRequest("malformed path")
        if (resource, method) not in ((GET_ROUTE, "GET"), (REFRESH_ROUTE, "POST")):
            raise InvalidRequest(f"no route {method} {resource}")
        provider = check_provider(params.get("provider"))
        dimension("provider", provider)
        connection = check_connection(params.get("connection"))
        where = {"provider": provider, "connection": connection}
        caller = caller_of(event)
        if method == "GET":
            query = event.get("queryStringParameters") or {}
            if not isinstance(query, dict):
                raise InvalidRequest("malformed query string")
            min_ttl = parse_min_ttl(query.get("min_ttl"))
            vended = vendor.get(provider, connection, min_ttl, caller, remaining)
        else:
            body = event.get("body")
            if body is not None and not isinstance(body, str):
                raise InvalidRequest("malformed body")
            rejected = parse_refresh_body(body, bool(event.get("isBase64Encoded")))
            vended = vendor.refresh(provider, connection, rejected, caller, remaining)
        if vended.stale_error is not None:
            logger.warning(
                "served a stale token",
                extra={
                    "provider": provider,
                    "connection": connection,
                    "error_code": vended.stale_error.code,
                },
            )
        body = vended.body(clock())
        emit("ServedTokenRemaining", body["expires_in"], MetricUnit.Seconds)
        return respond(200, body)
    except TokenVendError as error:
        if error.status >= 500:
            logger.warning(
                "vend failed",
                extra={**where, "error_code": error.code, "error_message": error.message},
            )
        return error_response(error)
    except Exception:
        logger.exception("vend crashed", extra=where)
        return error_response(TokenVendError("internal error; see the vend function's logs"))
