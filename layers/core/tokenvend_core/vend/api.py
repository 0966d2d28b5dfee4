"""The HTTP API as API Gateway's REST proxy events: parse, vend, shape the answer.

Four routes: the token and its refresh (JSON), a link for a user to authorize a connection
(JSON), and the link's callback, where a user's browser lands (HTML, vend/pages.py). The
callback is the one route without a signature, so it has no caller and answers only a page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from tokenvend_core import audit
from tokenvend_core.errors import Forbidden, Internal, InvalidRequest, TokenVendError
from tokenvend_core.names import check_connection, check_provider, parse_min_ttl, parse_refresh_body
from tokenvend_core.observability import MetricUnit, dimension, emit, logger
from tokenvend_core.vend import pages
from tokenvend_core.vend.links import LinkInvoker, parse_callback
from tokenvend_core.vend.vendor import Vendor

GET_ROUTE = "/tokens/{provider}/{connection}"
REFRESH_ROUTE = "/tokens/{provider}/{connection}/refresh"
CONNECT_ROUTE = "/connections/{provider}/{connection}/connect"
CALLBACK_ROUTE = "/connect/callback"
JSON_ROUTES = ((GET_ROUTE, "GET"), (REFRESH_ROUTE, "POST"), (CONNECT_ROUTE, "POST"))
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


def origin_of(event: Any) -> dict[str, str | None]:
    """Who is asking, for the audit trail: API Gateway's request id (the access log's too),
    the signed caller, and the address the request came from."""
    if not isinstance(event, dict) or not isinstance(event.get("requestContext"), dict):
        return {"trigger": "api"}
    context = event["requestContext"]
    identity = context.get("identity") if isinstance(context.get("identity"), dict) else {}
    request_id, source_ip = context.get("requestId"), identity.get("sourceIp")
    return {
        "trigger": "api",
        "request_id": request_id if isinstance(request_id, str) else None,
        "caller": caller_of(event),
        "source_ip": source_ip if isinstance(source_ip, str) else None,
    }


def link_invoker(vendor: Vendor, links: LinkInvoker | None) -> LinkInvoker:
    """Who makes links and checks callbacks: the provider functions, through the vendor's
    own invoker unless one is given."""
    if links is not None:
        return links
    invoker = vendor.invoker
    if not isinstance(invoker, LinkInvoker):
        raise Internal("this vend function cannot reach the provider functions' link flow")
    return invoker


def handle(
    event: Any,
    vendor: Vendor,
    clock: Callable[[], float] = time.time,
    remaining: Callable[[], float] | None = None,
    links: LinkInvoker | None = None,
) -> dict[str, Any]:
    """Every outcome is an API Gateway response; nothing raises past here. `remaining` says
    how many seconds the invocation has left (the Lambda context's). Each answer leaves one
    audit record, written before the invocation ends."""
    event = as_rest(event)
    with vendor.audit.invocation(), audit.bind(**origin_of(event)):
        return _answer(event, vendor, clock, remaining, links)


def as_rest(event: Any) -> Any:
    """An HTTP API's event (payload format 2.0) as the REST API's proxy event (1.0) that the
    rest of this module reads: the route, the method, the parameters, the body, and the
    caller (`requestContext.authorizer.iam`). Any other event is returned as it is. The
    answer needs no change: both formats take statusCode, headers, body and
    isBase64Encoded."""
    if not isinstance(event, dict) or event.get("version") != "2.0":
        return event
    context = _object(event.get("requestContext"))
    http = _object(context.get("http"))
    iam = _object(_object(context.get("authorizer")).get("iam"))
    route_key = event.get("routeKey")
    method, _, resource = route_key.partition(" ") if isinstance(route_key, str) else ("", "", "")
    raw_query = event.get("rawQueryString")
    multi: dict[str, list[str]] = {}
    if isinstance(raw_query, str) and raw_query:
        multi = parse_qs(raw_query, keep_blank_values=True)
    return {
        "resource": resource or None,
        "httpMethod": http.get("method") or method or None,
        "pathParameters": event.get("pathParameters"),
        # The HTTP API joins a repeated name's values with commas; the raw query keeps them.
        "queryStringParameters": {name: values[-1] for name, values in multi.items()} or None,
        "multiValueQueryStringParameters": multi or None,
        "body": event.get("body"),
        "isBase64Encoded": bool(event.get("isBase64Encoded")),
        "requestContext": {
            "requestId": context.get("requestId"),
            "identity": {"userArn": iam.get("userArn"), "sourceIp": http.get("sourceIp")},
        },
    }


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _action(event: Any) -> str:
    """The audit trail's name for what a request asks."""
    if isinstance(event, dict) and event.get("resource") == CONNECT_ROUTE:
        return "connect"
    if isinstance(event, dict) and event.get("httpMethod") == "POST":
        return "refresh"
    return "vend"


def _answer(
    event: Any,
    vendor: Vendor,
    clock: Callable[[], float],
    remaining: Callable[[], float] | None,
    links: LinkInvoker | None,
) -> dict[str, Any]:
    if (
        isinstance(event, dict)
        and event.get("resource") == CALLBACK_ROUTE
        and event.get("httpMethod") == "GET"
    ):
        return callback_page(event, vendor, links).response()
    where: dict[str, str] = {}
    try:
        if not isinstance(event, dict):
            raise InvalidRequest("not an API Gateway request")
        resource = event.get("resource")
        method = event.get("httpMethod")
        params = event.get("pathParameters") or {}
        if not isinstance(params, dict):
            raise InvalidRequest("malformed path")
        if (resource, method) not in JSON_ROUTES:
            raise InvalidRequest(f"no route {method} {resource}")
        provider = check_provider(params.get("provider"))
        dimension("provider", provider)
        connection = check_connection(params.get("connection"))
        where = {"provider": provider, "connection": connection}
        caller = caller_of(event)
        if resource == CONNECT_ROUTE:
            return connect(provider, connection, caller, link_invoker(vendor, links), vendor.audit)
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
        served = vended.state
        vendor.audit.record(
            _action(event),
            vended.outcome,
            provider=provider,
            connection=connection,
            error_code=vended.stale_error.code if vended.stale_error is not None else None,
            secret_version=served.secret_version,
            expires_at=served.expires_at,
            token=served.access_token,
        )
        return respond(200, body)
    except Exception as exc:
        if isinstance(exc, TokenVendError):
            error = exc
            if error.status >= 500:
                logger.warning(
                    "vend failed",
                    extra={**where, "error_code": error.code, "error_message": error.message},
                )
        else:
            logger.exception("vend crashed", extra=where)
            error = TokenVendError("internal error; see the vend function's logs")
        vendor.audit.record(
            _action(event),
            "refused",
            error_code=error.code,
            provider=where.get("provider"),
            connection=where.get("connection"),
        )
        return error_response(error)


def connect(
    provider: str, connection: str, caller: str | None, links: LinkInvoker, trail: audit.Trail
) -> dict[str, Any]:
    """POST /connections/{provider}/{connection}/connect: a link for a user (JSON)."""
    if not caller:  # API Gateway's IAM authorization gives every request one
        raise Forbidden(f"the request carries no caller identity for {provider}/{connection}")
    link = links.connect(provider, connection, caller)
    trail.record("connect", "ok", provider=provider, connection=connection,
                 expires_at=_epoch(link.expires_at))  # fmt: skip
    logger.info(
        "link made",
        extra={"provider": provider, "connection": connection, "caller": caller,
               "link_expires_at": link.expires_at},
    )  # fmt: skip
    return respond(200, {"url": link.url, "expires_at": link.expires_at})


def callback_page(event: dict[str, Any], vendor: Vendor, links: LinkInvoker | None) -> pages.Page:
    """GET /connect/callback: the provider function's verdict on the user's return, as a
    page. Nothing of the state or the code is logged or shown."""
    # The provider function records the redemption it judges; here only what it never saw.
    trail = vendor.audit
    query = parse_callback(event)
    if query is None:
        logger.info("link callback refused", extra={"outcome": "link_invalid", "invoked": False})
        trail.record("authorize", "refused", error_code="link_invalid", trigger="link")
        return pages.link_invalid()
    dimension("provider", query.provider)
    try:
        verdict = link_invoker(vendor, links).callback(
            query.provider, state=query.state, code=query.code, error=query.error
        )
    except Exception as exc:
        unavailable = isinstance(exc, TokenVendError) and exc.status == 503
        if isinstance(exc, TokenVendError):
            code = exc.code
            logger.warning(
                "link callback failed",
                extra={"provider": query.provider, "error_code": exc.code,
                       "error_message": exc.message},
            )  # fmt: skip
        else:
            code = "internal"
            logger.exception("link callback crashed", extra={"provider": query.provider})
        trail.record("authorize", "refused", provider=query.provider, error_code=code,
                     trigger="link")  # fmt: skip
        return pages.unavailable() if unavailable else pages.internal()
    if verdict.connection is not None and verdict.connected:
        emit("LinkConnected")
        logger.info(
            "link callback connected",
            extra={"provider": verdict.provider, "connection": verdict.connection},
        )
        return pages.connected(verdict.provider, verdict.connection)
    code = verdict.error or "internal"
    emit("LinkRefused")
    logger.info("link callback refused", extra={"provider": query.provider, "outcome": code[:64]})
    return pages.refused(code)


def _epoch(value: str) -> float | None:
    """An RFC 3339 time the provider function answered, as seconds (None if it is not one)."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None
