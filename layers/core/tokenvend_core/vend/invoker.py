"""The vend function's way to a provider function: a synchronous Lambda invoke, made once
(a second invocation would be a second refresh attempt)."""

from __future__ import annotations

import json
from typing import Any

from tokenvend_core.aws.clients import aws_call
from tokenvend_core.aws.store import ConnectionState
from tokenvend_core.errors import ProviderUnavailable, error_from_dict
from tokenvend_core.tokens import rfc3339


def outcome_to_wire(state: ConnectionState) -> dict[str, Any]:
    """What a provider function answers a refresh with: which token version now meets the
    need, and when it expires. Never the token: whoever invokes a provider function directly
    learns nothing it could use, and only the vend function, which reads the token from the
    table with the connection's access list beside it, decides who gets it."""
    return {"version": state.version, "expires_at": rfc3339(state.expires_at)}


def version_from_wire(data: Any) -> int:
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ProviderUnavailable("the provider function gave an unreadable answer")
    return version


class LambdaInvoker:
    def __init__(self, client: Any, function_prefix: str) -> None:
        self._client = client
        self._prefix = function_prefix

    def refresh(
        self,
        provider: str,
        connection: str,
        *,
        min_ttl: int,
        rejected_sha256: str | None = None,
        newer_than: int | None = None,
        caller_arn: str | None = None,
    ) -> int:
        """Asks the provider function for a token that meets the need; returns the version
        of the connection's item that holds it."""
        event: dict[str, Any] = {"action": "refresh", "connection": connection, "min_ttl": min_ttl}
        if rejected_sha256:
            event["rejected_token_sha256"] = rejected_sha256
        if newer_than is not None:
            event["newer_than"] = newer_than
        if caller_arn:
            event["caller_arn"] = caller_arn
        function_error, payload = self._invoke(f"{self._prefix}{provider}", json.dumps(event))
        if function_error:
            raise ProviderUnavailable(
                f"the {provider} function failed ({function_error}); try again shortly",
                retry_after=5,
            )
        try:
            data = json.loads(payload)
        except ValueError:
            raise ProviderUnavailable("the provider function gave an unreadable answer") from None
        if not isinstance(data, dict):
            raise ProviderUnavailable("the provider function gave an unreadable answer")
        if not data.get("ok"):
            raise error_from_dict(data.get("error"))
        return version_from_wire(data)

    def _invoke(self, function_name: str, payload: str) -> tuple[str | None, bytes]:
        """One synchronous invocation: (the FunctionError, if any; the payload)."""
        with aws_call(f"the function {function_name}"):
            answer = self._client.invoke(
                FunctionName=function_name,
                InvocationType="RequestResponse",
                Payload=payload.encode(),
            )
            return answer.get("FunctionError"), answer["Payload"].read()
