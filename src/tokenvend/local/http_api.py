"""The REST API as API Gateway serves it to the vend function, like `sam local start-api`
(no stage in the path) plus what sam local leaves out: `AWS_IAM` authorization.

Routes come from the template: every `Api` event of every function. A request on a route
whose authorizer is AWS_IAM (the API's DefaultAuthorizer unless the event says otherwise)
must carry a valid SigV4 signature for `execute-api` made with an access key issued by the
local IAM, and the caller's IAM policies and the API's resource policy must allow it to
invoke the route (iam.py); otherwise it is refused before any function runs, with the API's
own GatewayResponses from the template (so the body is the service's `{"error": ...}`). A
route without authorization (`Auth: Authorizer: NONE`: the link flow's callback) needs no
signature, and is judged by the resource policy alone, as API Gateway does when the API has
one: a statement naming anyone must allow it and none deny it. The function gets API
Gateway's REST proxy event (version 1.0), with the caller's identity in
`requestContext.identity` (empty but for the source address on an unsigned route), and its
answer becomes the HTTP response, whatever its content type (the callback answers HTML).

Every request, refused ones too, leaves one line in the stage's access log, in the format
template.yaml gives it (access_log.py), with the request id the function's event carries.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from ..awslocal import Principal
from ..template import Stack, Tag, TemplateError
from .access_log import AccessLogSetting, AccessLogWriter, access_log_setting, fill, request_time
from .functions import LocalFunction
from .iam import Authorizer
from .log import log
from .sigv4 import MISSING, Refused, Verifier

MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
API_ID = "local"  # the API's id, in requestContext.apiId and in its methods' ARNs

# API Gateway's default status per gateway response type (those this emulation produces).
_STATUS = {
    # A gateway response type, not a credential.
    "MISSING_AUTHENTICATION_TOKEN": 403,  # nosec B105
    "INVALID_SIGNATURE": 403,
    # A gateway response type, not a credential.
    "EXPIRED_TOKEN": 403,  # nosec B105
    "ACCESS_DENIED": 403,
    "REQUEST_TOO_LARGE": 413,
    "DEFAULT_4XX": 400,
    "DEFAULT_5XX": 500,
    "INTEGRATION_FAILURE": 502,
}


@dataclass(frozen=True)
class Route:
    method: str  # GET, POST, ..., or ANY
    path: str  # as in the template: /tokens/{provider}/{connection}
    function: LocalFunction
    iam: bool  # the route needs a SigV4 signature
    pattern: re.Pattern[str] = field(compare=False)

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method):
            return None
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None

    @property
    def specificity(self) -> tuple[int, int]:
        """Literal segments first, greedy {proxy+} last, as API Gateway picks."""
        segments = self.path.strip("/").split("/")
        greedy = sum(segment.endswith("+}") for segment in segments)
        literal = sum(not segment.startswith("{") for segment in segments)
        return (greedy, -literal)


def _pattern(path: str) -> re.Pattern[str]:
    parts = []
    for segment in path.strip("/").split("/"):
        if segment.startswith("{") and segment.endswith("+}"):
            parts.append(f"(?P<{segment[1:-2]}>.+)")
        elif segment.startswith("{") and segment.endswith("}"):
            parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("/" + "/".join(parts))


@dataclass(frozen=True)
class RestApi:
    """What the template says of one AWS::Serverless::Api (or of SAM's implicit one)."""

    logical_id: str
    stage: str
    default_iam: bool
    gateway_responses: dict[str, Any]
    # The resource policy's statements (SAM's Auth.ResourcePolicy.CustomStatements).
    resource_policy: list[dict[str, Any]] = field(default_factory=list)
    # The stage's access log (AccessLogSetting), if it writes one.
    access_log: AccessLogSetting | None = None
    # AWS::Serverless::HttpApi: the function gets payload format 2.0, refusals are the HTTP
    # API's own ({"message": ...}), and there is no resource policy.
    http: bool = False


def rest_api(stack: Stack, logical_id: str | None) -> RestApi:
    if logical_id is None:  # SAM's implicit API, configured by Globals.Api
        props = (stack.template.get("Globals") or {}).get("Api") or {}
        logical_id = "ServerlessRestApi"
        stage = "Prod"
    else:
        props = stack.template["Resources"][logical_id].get("Properties") or {}
        stage = str(stack.resolve(props.get("StageName", "Prod")))
    auth = stack.resolve(props.get("Auth") or {})
    default = auth.get("DefaultAuthorizer")
    if default not in (None, "AWS_IAM", "NONE"):
        raise TemplateError(f"{logical_id}: only the AWS_IAM authorizer is served locally")
    responses = stack.resolve(props.get("GatewayResponses") or {})
    policy = auth.get("ResourcePolicy") or {}
    unserved = sorted(set(policy) - {"CustomStatements"})
    if unserved:
        raise TemplateError(
            f"{logical_id}: Auth.ResourcePolicy.{unserved[0]} is not served locally "
            "(write it as CustomStatements)"
        )
    custom = policy.get("CustomStatements") or []
    statements = [custom] if isinstance(custom, dict) else list(custom)
    access_log = access_log_setting(stack, props)
    return RestApi(logical_id, stage, default == "AWS_IAM", responses, statements, access_log)


def http_api(stack: Stack, logical_id: str | None) -> RestApi:
    """What the template says of one AWS::Serverless::HttpApi: its stage, whether IAM
    authorizes its routes by default, its access log."""
    if logical_id is None:
        raise TemplateError("an HttpApi event must name its API (ApiId: !Ref ...)")
    props = stack.template["Resources"][logical_id].get("Properties") or {}
    stage = str(stack.resolve(props.get("StageName", "$default")))
    auth = stack.resolve(props.get("Auth") or {})
    default = auth.get("DefaultAuthorizer")
    if default not in (None, "AWS_IAM", "NONE"):
        raise TemplateError(f"{logical_id}: only the AWS_IAM authorizer is served locally")
    iam = default == "AWS_IAM" and bool(auth.get("EnableIamAuthorizer"))
    access_log = access_log_setting(stack, props)
    return RestApi(logical_id, stage, iam, {}, [], access_log, http=True)


def routes_of(stack: Stack, functions: Mapping[str, LocalFunction]) -> tuple[list[Route], RestApi]:
    """Every Api and HttpApi event of every function (of those whose condition holds: one
    API, as ApiType chooses)."""
    routes: list[Route] = []
    apis: dict[str | None, RestApi] = {}
    for function in functions.values():
        raw_events = (
            stack.template["Resources"][function.logical_id].get("Properties", {}).get("Events")
        ) or {}
        found = [
            (kind, name, props)
            for kind in ("Api", "HttpApi")
            for name, props in stack.function_events(function.logical_id, kind)
        ]
        for kind, event_name, props in found:
            key = "RestApiId" if kind == "Api" else "ApiId"
            raw_api = (raw_events[event_name].get("Properties") or {}).get(key)
            api_id = _logical_id(raw_api)
            if api_id not in apis:
                apis[api_id] = rest_api(stack, api_id) if kind == "Api" else http_api(stack, api_id)
            api = apis[api_id]
            authorizer = (props.get("Auth") or {}).get("Authorizer")
            if authorizer not in (None, "AWS_IAM", "NONE"):
                raise TemplateError(f"{function.logical_id}.{event_name}: only AWS_IAM is served")
            iam = authorizer == "AWS_IAM" or (authorizer is None and api.default_iam)
            path, method = str(props["Path"]), str(props["Method"]).upper()
            routes.append(Route(method, path, function, iam, _pattern(path)))
    if len(apis) > 1:
        raise TemplateError("the local stack serves one API; the template has several")
    routes.sort(key=lambda route: route.specificity)
    api = next(iter(apis.values()), RestApi("ServerlessRestApi", "Prod", False, {}))
    return routes, api


def _logical_id(value: Any) -> str | None:
    if isinstance(value, Tag) and value.name == "Ref":
        return str(value.value)
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if value is None:
        return None
    raise TemplateError(f"RestApiId must be a !Ref to the API, got {value!r}")


@dataclass
class Exchange:
    """What one request's access log line needs from its way through the API: its id (the
    event's requestContext.requestId), when it came, the route's path, the verified caller."""

    request_id: str
    received: datetime
    resource_path: str | None = None
    principal: Principal | None = None


class HttpApi:
    """A WSGI application: API Gateway in front of the template's functions."""

    def __init__(
        self,
        routes: list[Route],
        api: RestApi,
        verifier: Verifier,
        authorizer: Authorizer,
        *,
        account_id: str,
        api_id: str = API_ID,
        access_log: AccessLogWriter | None = None,
    ) -> None:
        self._routes = routes
        self._api = api
        self._verifier = verifier
        self._authorizer = authorizer
        self._account_id = account_id
        self._api_id = api_id
        self._access_log = access_log if api.access_log is not None else None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        started = time.monotonic()
        received = datetime.now(UTC)
        request = Request(environ)
        request.max_content_length = MAX_BODY
        exchange = Exchange(request_id=str(uuid.uuid4()), received=received)
        response, fields = self._answer(request, environ, exchange)
        latency_ms = (time.monotonic() - started) * 1000
        log(
            "api request",
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round(latency_ms, 2),
            **fields,
        )
        if self._access_log is not None and self._api.access_log is not None:
            context = self.access_context(request, exchange, response.status_code, latency_ms)
            line = fill(self._api.access_log.format, context)
            self._access_log.write(int(received.timestamp() * 1000), line)
        return response(environ, start_response)

    def access_context(
        self, request: Request, exchange: Exchange, status: int, latency_ms: float
    ) -> dict[str, Any]:
        """The $context variables of one request, as API Gateway fills its access log."""
        principal = exchange.principal
        return {
            "requestId": exchange.request_id,
            "extendedRequestId": exchange.request_id,
            "requestTime": request_time(exchange.received),
            "requestTimeEpoch": int(exchange.received.timestamp() * 1000),
            "httpMethod": request.method,
            "path": f"/{self._api.stage}{request.path}",  # no query string
            "resourcePath": exchange.resource_path,
            "routeKey": (
                f"{request.method} {exchange.resource_path}" if exchange.resource_path else None
            ),
            "status": status,
            "responseLatency": int(latency_ms),
            "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            "stage": self._api.stage,
            "apiId": self._api_id,
            "accountId": self._account_id,
            "domainName": request.headers.get("Host"),
            "identity.sourceIp": _source_ip(request),
            "identity.userArn": principal.arn if principal else None,
            "identity.caller": principal.user_id if principal else None,
            "identity.user": principal.user_id if principal else None,
            "identity.accountId": principal.account_id if principal else None,
            "identity.accessKey": principal.access_key_id if principal else None,
            "identity.userAgent": request.headers.get("User-Agent"),
        }

    def _answer(
        self, request: Request, environ: dict[str, Any], exchange: Exchange
    ) -> tuple[Response, dict[str, Any]]:
        found = self._route(request.method, request.path)
        if found is None:
            if self._api.http:  # an HTTP API has no route there
                return self._gateway("NOT_FOUND", "Not Found", 404), {"refused": "NOT_FOUND"}
            # API Gateway answers an unknown path on an IAM API like an unsigned request.
            return self._gateway(MISSING, "Missing Authentication Token"), {"refused": MISSING}
        route, params = found
        exchange.resource_path = route.path
        try:
            body = request.get_data(cache=True)
        except RequestEntityTooLarge:
            return self._gateway("REQUEST_TOO_LARGE", "Request Too Long"), {}
        principal = None
        if route.iam:
            raw_uri = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path)
            if raw_uri.startswith(("http://", "https://")):
                raw_uri = "/" + raw_uri.split("/", 3)[3] if raw_uri.count("/") >= 3 else "/"
            raw_path, _, raw_query = raw_uri.partition("?")
            try:
                principal = self._verifier.verify(
                    method=request.method,
                    host=request.headers.get("Host", ""),
                    raw_path=raw_path,
                    raw_query=raw_query,
                    headers={name.lower(): value for name, value in request.headers.items()},
                    body=body,
                )
            except Refused as refused:
                fields: dict[str, Any] = {"refused": refused.kind, "reason": refused.message}
                return self._gateway(refused.kind, refused.message), fields
            exchange.principal = principal
            decision = self._authorizer.authorize(
                principal, request.method, request.path, source_ip=request.remote_addr or ""
            )
            if not decision.allowed:
                fields = {
                    "refused": "ACCESS_DENIED",
                    "reason": decision.message,
                    "caller": principal.arn,
                }
                return self._gateway("ACCESS_DENIED", decision.message), fields
        elif self._api.resource_policy:
            decision = self._authorizer.authorize_anonymous(
                request.method, request.path, source_ip=request.remote_addr or ""
            )
            if not decision.allowed:
                fields = {"refused": "ACCESS_DENIED", "reason": decision.message}
                return self._gateway("ACCESS_DENIED", decision.message), fields
        event = self._event(request, route, params, principal, body, exchange)
        if self._api.http:
            event = http_event(event, route)
        invocation = route.function.invoke(event)
        fields = {"function_name": route.function.name, "caller": principal and principal.arn}

        if invocation.error:
            if self._api.http:
                return self._gateway("DEFAULT_5XX", "Internal Server Error", 500), fields
            return self._gateway("DEFAULT_5XX", "Internal server error", 502), fields
        try:
            return _response(json.loads(invocation.payload)), fields
        except (ValueError, TypeError, KeyError, binascii.Error):
            log("malformed Lambda proxy response", level="ERROR", **fields)
            return self._gateway("DEFAULT_5XX", "Internal server error", 502), fields

    def _route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self._routes:
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None

    def _event(
        self,
        request: Request,
        route: Route,
        params: dict[str, str],
        principal: Principal | None,
        body: bytes,
        exchange: Exchange,
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers[name] = value
            multi_headers.setdefault(name, []).append(value)
        query = {name: values[-1] for name, values in request.args.lists()}
        multi_query = {name: list(values) for name, values in request.args.lists()}
        now = exchange.received
        text: str | None
        try:
            text, encoded = (body.decode("utf-8") if body else None), False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
        source_ip = _source_ip(request)
        identity = {
            "cognitoIdentityPoolId": None,
            "accountId": principal.account_id if principal else None,
            "cognitoIdentityId": None,
            "caller": principal.user_id if principal else None,
            "sourceIp": source_ip,
            "principalOrgId": None,
            "accessKey": principal.access_key_id if principal else None,
            "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None,
            "userArn": principal.arn if principal else None,
            "userAgent": request.headers.get("User-Agent"),
            "user": principal.user_id if principal else None,
        }
        host = request.headers.get("Host", "127.0.0.1")
        return {
            "resource": route.path,
            "path": request.path,
            "httpMethod": request.method,
            "headers": headers or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": query or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": route.path,
                "resourcePath": route.path,
                "httpMethod": request.method,
                "extendedRequestId": uuid.uuid4().hex[:16],
                "requestTime": request_time(now),
                "path": f"/{self._api.stage}{request.path}",
                "accountId": self._account_id,
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "stage": self._api.stage,
                "domainPrefix": host.split(".")[0].split(":")[0],
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": exchange.request_id,
                "identity": identity,
                "domainName": host,
                "apiId": self._api_id,
            },
            "body": text,
            "isBase64Encoded": encoded,
        }

    def _gateway(self, kind: str, message: str, status: int | None = None) -> Response:
        """A refusal made by API Gateway itself, rendered with the template's
        GatewayResponses (falling back on DEFAULT_4XX/5XX, then on API Gateway's default)."""
        status = status or _STATUS.get(kind, 400)
        if self._api.http:
            # An HTTP API's own refusals: {"message": ...}, no customization; IAM's say only
            # "Forbidden".
            said = "Forbidden" if status == 403 else message
            return Response(
                json.dumps({"message": said}),
                status=status,
                headers=Headers({"Content-Type": "application/json"}),
            )
        responses = self._api.gateway_responses
        spec = responses.get(kind) or responses.get(
            "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        )
        headers = Headers({"Content-Type": "application/json"})
        body = json.dumps({"message": message})
        if isinstance(spec, dict):
            template = (spec.get("ResponseTemplates") or {}).get("application/json")
            if isinstance(template, str):
                body = _render(template, message)
            if spec.get("StatusCode"):
                status = int(spec["StatusCode"])
            for name, value in (
                (spec.get("ResponseParameters") or {}).get("Headers") or {}
            ).items():
                if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == "'":
                    headers[name] = value[1:-1]
        headers["X-Amzn-ErrorType"] = _error_type(kind)
        return Response(body, status=status, headers=headers)


def http_event(rest: dict[str, Any], route: Route) -> dict[str, Any]:
    """The HTTP API's event (payload format 2.0) for the request `rest` describes as the REST
    API's: header names in lower case, repeated query names joined with commas (the raw query
    keeps them apart), the caller in requestContext.authorizer.iam."""
    context, identity = rest["requestContext"], rest["requestContext"]["identity"]
    route_key = f"{rest['httpMethod']} {route.path}"
    multi = rest.get("multiValueQueryStringParameters") or {}
    headers: dict[str, str] = {}
    for name, values in (rest.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = ",".join(values)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": context["path"],
        "rawQueryString": urlencode([(k, v) for k, vs in multi.items() for v in vs]),
        "headers": headers,
    }
    if multi:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in multi.items()}
    if rest.get("pathParameters"):
        event["pathParameters"] = rest["pathParameters"]
    request_context: dict[str, Any] = {
        "accountId": context["accountId"],
        "apiId": context["apiId"],
        "domainName": context["domainName"],
        "domainPrefix": context["domainPrefix"],
        "http": {
            "method": rest["httpMethod"],
            "path": context["path"],
            "protocol": context["protocol"],
            "sourceIp": identity["sourceIp"],
            "userAgent": identity["userAgent"],
        },
        "requestId": context["requestId"],
        "routeKey": route_key,
        "stage": context["stage"],
        "time": context["requestTime"],
        "timeEpoch": context["requestTimeEpoch"],
    }
    if identity.get("userArn"):
        request_context["authorizer"] = {
            "iam": {
                "accessKey": identity["accessKey"],
                "accountId": identity["accountId"],
                "callerId": identity["caller"],
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": identity["userArn"],
                "userId": identity["user"],
            }
        }
    event["requestContext"] = request_context
    if rest.get("body") is not None:
        event["body"] = rest["body"]
    event["isBase64Encoded"] = bool(rest.get("isBase64Encoded"))
    return event


def _source_ip(request: Request) -> str:
    """$context.identity.sourceIp: the address the request came from."""
    return request.remote_addr or "127.0.0.1"


def _render(template: str, message: str) -> str:
    """The few $context variables a gateway response template uses here."""
    return template.replace("$context.error.messageString", json.dumps(message)).replace(
        "$context.error.message", message
    )


def _error_type(kind: str) -> str:
    return {
        # An error type, not a credential.
        "MISSING_AUTHENTICATION_TOKEN": "MissingAuthenticationTokenException",  # nosec B105
        "INVALID_SIGNATURE": "InvalidSignatureException",
        # An error type, not a credential.
        "EXPIRED_TOKEN": "ExpiredTokenException",  # nosec B105
        "ACCESS_DENIED": "AccessDeniedException",
    }.get(kind, "ApiGatewayException")


def _response(result: Any) -> Response:
    """A Lambda proxy integration's answer as an HTTP response (KeyError/ValueError if it
    is not one: API Gateway then answers 502)."""
    if not isinstance(result, dict):
        raise ValueError("not an object")
    status = int(result["statusCode"])
    headers = Headers()
    for name, value in (result.get("headers") or {}).items():
        headers[name] = str(value)
    for name, values in (result.get("multiValueHeaders") or {}).items():
        if name not in (result.get("headers") or {}):
            for value in values:
                headers.add(name, str(value))
    body = result.get("body") or ""
    if not isinstance(body, str):
        raise ValueError("body must be a string")
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    return Response(payload, status=status, headers=headers)
