"""The vend function's way to a provider function: a synchronous Lambda invoke."""

from __future__ import annotations

import json
from typing import Any

from .aws import aws_call
from .errors import ProviderUnavailable, error_from_dict
from .store import ConnectionState


def state_to_wire(state: ConnectionState) -> dict[str, Any]:
    return {
        "access_token": state.access_token,
        "token_type": state.token_type,
        "scope": state.scope,
        "expires_at": state.expires_at,
        "version": state.version,
        "allowed_principals": (
            list(state.allowed_principals) if state.allowed_principals is not None else None
        ),
    }


def state_from_wire(provider: str, connection: str, data: Any) -> ConnectionState:
    if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
        raise ProviderUnavailable("the provider function gave an unreadable answer")
    principals = data.get("allowed_principals")
    return ConnectionState(
        provider=provider,
        connection=connection,
        access_token=data["access_token"],
        token_type=str(data.get("token_type") or "Bearer"),
        scope=data.get("scope"),
        expires_at=int(data.get("expires_at") or 0),
        version=int(data.get("version") or 0),
        allowed_principals=tuple(principals) if isinstance(principals, list) else None,
    )


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
    ) -> ConnectionState:
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
        return state_from_wire(provider, connection, data.get("token"))

    def _invoke(self, function_name: str, payload: str) -> tuple[str | None, bytes]:
        """One synchronous invocation: (the FunctionError, if any; the payload)."""
        with aws_call(f"the function {function_name}"):
            answer = self._client.invoke(
                FunctionName=function_name,
                InvocationType="RequestResponse",
                Payload=payload.encode(),
            )
            return answer.get("FunctionError"), answer["Payload"].read()
