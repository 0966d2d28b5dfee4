"""Redeeming an authorization code (providers whose grant is a refresh token, as wps365):
the operator's code, or the one a connect link brought back (`link`), for the connection's
own redirect URI, exchanged under the lease without the cool-down. What the exchange
answers is kept as any rotation is (`rotation`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenvend_core.aws.store import ConnectionState
from tokenvend_core.errors import InvalidRequest, TokenVendError
from tokenvend_core.refresh import attempt, lease

if TYPE_CHECKING:
    from tokenvend_core.refresh.refresher import Refresher


def authorize(
    refresher: Refresher,
    connection: str,
    code: str,
    redirect_uri: str | None = None,
    *,
    code_verifier: str | None = None,
) -> ConnectionState:
    """Redeem `code` for the connection; with PKCE, `code_verifier` goes with it (the link
    flow recomputes it, `link.redeem`). Leaves one audit record, redeemed or refused."""
    try:
        state = _redeem(refresher, connection, code, redirect_uri, code_verifier)
    except TokenVendError as error:
        refresher.audit.record(
            "authorize",
            "refused",
            provider=refresher.provider,
            connection=connection,
            error_code=error.code,
        )
        raise
    refresher.audit.record(
        "authorize",
        "ok",
        provider=refresher.provider,
        connection=connection,
        secret_version=state.secret_version,
        expires_at=state.expires_at,
        token=state.access_token,
    )
    return state


def _redeem(
    refresher: Refresher,
    connection: str,
    code: str,
    redirect_uri: str | None,
    code_verifier: str | None,
) -> ConnectionState:
    if not refresher.spec.uses_refresh_token:
        raise InvalidRequest(f"{refresher.provider} does not take authorization codes")
    if not isinstance(code, str) or not code.strip() or len(code) > 4096:
        raise InvalidRequest("code must be the authorization code from the redirect")
    if redirect_uri is not None and not isinstance(redirect_uri, str):
        raise InvalidRequest("redirect_uri must be a string")
    secret, config = refresher.read_secret(connection)
    if redirect_uri is not None and redirect_uri != config.get("redirect_uri"):
        # A code redeemed for another redirect URI would bind the connection to whoever
        # controls that URI: only the operator, through the secret, chooses it.
        raise InvalidRequest(
            "redirect_uri must be the connection's own (its secret's redirect_uri); "
            "put a new secret version to change it"
        )
    owner = refresher.new_owner()
    state = lease.take_for_code(refresher, connection, owner)
    return attempt.run(
        refresher,
        connection,
        owner,
        secret,
        config,
        state,
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=code_verifier,
    )
