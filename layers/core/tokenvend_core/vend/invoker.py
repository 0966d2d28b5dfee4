"""The vend function's way to a provider function: a synchronous Lambda invoke, made once
(a second invocation would be a second refresh attempt, or a second redemption of a code).

Three actions go this way: `refresh` (a token that meets a need), and the link flow's
`connect` (a link for a user) and `callback` (the user's browser back from the provider).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenvend_core import audit
from tokenvend_core.aws.clients import aws_call
from tokenvend_core.aws.store import ConnectionState
from tokenvend_core.errors import ProviderUnavailable, error_from_dict
from tokenvend_core.names import CONNECTION_RE
from tokenvend_core.tokens import rfc3339

# What a link answer may hold, at most: a URL a browser takes, an RFC 3339 time.
MAX_URL = 8192
MAX_TIME = 64


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


def _unreadable() -> ProviderUnavailable:
    return ProviderUnavailable("the provider function gave an unreadable answer")


@dataclass(frozen=True, slots=True)
class Link:
    """A link for a user to authorize a connection, and when it stops working."""

    url: str
    expires_at: str  # RFC 3339


@dataclass(frozen=True, slots=True)
class Callback:
    """A provider function's verdict on a callback: the connection now authorized, or the
    code of the reason why not (`link_invalid`, `link_expired`, `link_used`,
    `access_denied` or the provider's own `error`, or one of the codes `authorize`
    answers). Expected outcomes, so a result rather than an exception."""

    provider: str
    connection: str | None = None
    error: str | None = None

    @property
    def connected(self) -> bool:
        return self.error is None


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
        data = self._call(provider, event)
        if not data.get("ok"):
            raise error_from_dict(data.get("error"))
        return version_from_wire(data)

    def connect(self, provider: str, connection: str, caller_arn: str | None = None) -> Link:
        """A link for a user to authorize the connection (the provider function makes it,
        for a caller the connection's access list admits)."""
        event = {"action": "connect", "connection": connection}
        if caller_arn is not None:
            event["caller_arn"] = caller_arn
        data = self._call(provider, event)
        if not data.get("ok"):
            raise error_from_dict(data.get("error"))
        url, expires_at = data.get("url"), data.get("expires_at")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise _unreadable()
        if len(url) > MAX_URL or not isinstance(expires_at, str) or len(expires_at) > MAX_TIME:
            raise _unreadable()
        return Link(url, expires_at)

    def callback(
        self, provider: str, *, state: str, code: str | None, error: str | None
    ) -> Callback:
        """The provider function checks the state and redeems the code. Raises only when
        the function cannot be reached or answers nonsense (ProviderUnavailable)."""
        event = {"action": "callback", "state": state, "code": code, "error": error}
        data = self._call(provider, event)
        if data.get("ok"):
            connection = data.get("connection")
            if data.get("provider") != provider or not isinstance(connection, str):
                raise _unreadable()
            if not CONNECTION_RE.fullmatch(connection):
                raise _unreadable()
            return Callback(provider, connection)
        failure = data.get("error")
        reason = failure.get("code") if isinstance(failure, dict) else None
        if not isinstance(reason, str) or not reason:
            raise _unreadable()
        return Callback(provider, error=reason)

    def _call(self, provider: str, event: dict[str, Any]) -> dict[str, Any]:
        """One invocation of the provider's function: its answer, a JSON object."""
        event = {**event, **audit.forwarded()}  # the provider function's records name them
        function_error, payload = self._invoke(f"{self._prefix}{provider}", json.dumps(event))
        if function_error:
            raise ProviderUnavailable(
                f"the {provider} function failed ({function_error}); try again shortly",
                retry_after=5,
            )
        try:
            data = json.loads(payload)
        except ValueError:
            raise _unreadable() from None
        if not isinstance(data, dict):
            raise _unreadable()
        return data

    def _invoke(self, function_name: str, payload: str) -> tuple[str | None, bytes]:
        """One synchronous invocation: (the FunctionError, if any; the payload)."""
        with aws_call(f"the function {function_name}"):
            answer = self._client.invoke(
                FunctionName=function_name,
                InvocationType="RequestResponse",
                Payload=payload.encode(),
            )
            return answer.get("FunctionError"), answer["Payload"].read()
