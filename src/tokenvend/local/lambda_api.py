"""The Lambda Invoke API, as `sam local start-lambda` serves it: enough of it for boto3's
`lambda` client (and so the vend function's invoker, and `tokenvend authorize`) to work
unchanged once AWS_ENDPOINT_URL_LAMBDA points here.

`POST /2015-03-31/functions/{FunctionName}/invocations`, where FunctionName is the
function's name, its ARN (optionally with the `$LATEST` qualifier) or its logical id in the
template. InvocationType RequestResponse (default) answers the handler's result;
`X-Amz-Function-Error: Unhandled` with Lambda's error payload when the handler raised.
Event runs it in the background (202); DryRun only checks (204). Like sam local, requests
are not signature-checked: the endpoint listens on loopback only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from .functions import LocalFunction

_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
_ARN = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:)?(?:\d{12}:)?(?:function:)?"
    r"(?P<name>[a-zA-Z0-9_-]+)(?::(?P<qualifier>[a-zA-Z0-9$_-]+))?$"
)
MAX_PAYLOAD = 6 * 1024 * 1024  # Lambda's synchronous payload limit


class LambdaApi:
    """A WSGI application serving the functions' Invoke API."""

    def __init__(self, functions: Mapping[str, LocalFunction], *, region: str, account_id: str):
        self._functions = functions
        self._region = region
        self._account_id = account_id

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = MAX_PAYLOAD
        response = self._answer(request)
        return response(environ, start_response)

    def find(self, function_name: str, qualifier: str | None = None) -> LocalFunction | None:
        match = _ARN.match(function_name)
        if match is None:
            return None
        name = match.group("name")
        qualifier = match.group("qualifier") or qualifier
        if qualifier not in (None, "", "$LATEST"):
            return None  # no versions or aliases locally
        function = self._functions.get(name)
        if function is None:  # a logical id, as sam local start-lambda accepts
            function = next((f for f in self._functions.values() if f.logical_id == name), None)
        return function

    def _answer(self, request: Request) -> Response:
        route = _INVOKE.match(request.path)
        if route is None or request.method != "POST":
            return _error(
                404,
                "UnknownOperationException",
                f"tokenvend local serves only the Lambda Invoke API, not {request.method} "
                f"{request.path}",
            )
        name = unquote(route.group("name"))
        qualifier = request.args.get("Qualifier")
        function = self.find(name, qualifier)
        if function is None:
            arn = (
                name
                if name.startswith("arn:")
                else f"arn:aws:lambda:{self._region}:{self._account_id}:function:{name}"
            )
            return _error(404, "ResourceNotFoundException", f"Function not found: {arn}")
        try:
            raw = request.get_data(cache=False)
        except RequestEntityTooLarge:
            return _error(
                413, "RequestTooLargeException", "Request must be smaller than 6291456 bytes"
            )
        try:
            event = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            return _error(
                400,
                "InvalidRequestContentException",
                f"Could not parse request body into json: {exc}",
            )
        kind = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if kind == "DryRun":
            return Response(status=204)
        if kind == "Event":
            function.invoke_async(event)
            return Response(status=202)
        if kind != "RequestResponse":
            return _error(
                400,
                "InvalidParameterValueException",
                "InvocationType must be RequestResponse, Event or DryRun",
            )
        invocation = function.invoke(event)
        headers = {
            "Content-Type": "application/json",
            "X-Amz-Executed-Version": "$LATEST",
            "X-Amzn-RequestId": invocation.request_id,
        }
        if invocation.error:
            headers["X-Amz-Function-Error"] = invocation.error
        return Response(invocation.payload, status=200, headers=headers)


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"Type": "User", "message": message, "__type": code})
    return Response(
        body,
        status=status,
        headers={"Content-Type": "application/json", "X-Amzn-ErrorType": code},
    )
