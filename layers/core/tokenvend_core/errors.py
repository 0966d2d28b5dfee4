"""Domain errors: a small hierarchy that maps, here and only here, to the contract's HTTP codes.

Messages are written for the caller. They never hold a secret, an access token or a refresh
token: a provider's answer contributes only its own error code and a scrubbed description.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TokenVendError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        """The wire form passed from a provider function back to the vend function."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


class InvalidRequest(TokenVendError):
    status = 400
    code = "invalid_request"


class Forbidden(TokenVendError):
    status = 403
    code = "forbidden"


class UnknownProvider(TokenVendError):
    status = 404
    code = "unknown_provider"


class UnknownConnection(TokenVendError):
    status = 404
    code = "unknown_connection"


class RefreshFailed(TokenVendError):
    """A refresh did not produce a token: the cached one may still be served, marked stale."""


class AuthorizationRequired(RefreshFailed):
    status = 409
    code = "authorization_required"


class ProviderRejected(RefreshFailed):
    """PERMANENT: the provider refused the connection's configuration."""

    status = 502
    code = "provider_rejected"


class ProviderUnavailable(RefreshFailed):
    """TRANSIENT: the provider (or AWS) failed, timed out or throttled."""

    status = 503
    code = "provider_unavailable"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message, retry_after=retry_after if retry_after is not None else 5)


class Internal(RefreshFailed):
    status = 500
    code = "internal"


ERRORS_BY_CODE: dict[str, type[TokenVendError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Forbidden,
        UnknownProvider,
        UnknownConnection,
        AuthorizationRequired,
        ProviderRejected,
        ProviderUnavailable,
        Internal,
    )
}


def error_from_dict(data: Any) -> TokenVendError:
    """Rebuild an error from its wire form; anything unexpected becomes `internal`."""
    if not isinstance(data, dict):
        return Internal("the provider function gave an unreadable answer")
    cls = ERRORS_BY_CODE.get(str(data.get("code")), Internal)
    retry_after = data.get("retry_after")
    return cls(
        str(data.get("message") or cls.code),
        retry_after=retry_after if isinstance(retry_after, int) else None,
    )
