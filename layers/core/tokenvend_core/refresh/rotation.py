"""Refresh-token rotation: a provider that answers a refresh with a new refresh token may
already have retired the old one, so the new one is kept before anything else is done.

It goes into the connection's secret, written over the secret as it is now; when Secrets
Manager does not take it, into the token table as a fallback copy, which the next attempt
settles against the secret (`grant_to_spend`) before spending a grant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenvend_core.aws.secrets import ConnectionSecret
from tokenvend_core.aws.store import ConnectionState
from tokenvend_core.catalogue.answer import Failure
from tokenvend_core.errors import Internal, ProviderRejected, ProviderUnavailable, TokenVendError
from tokenvend_core.observability import emit, logger
from tokenvend_core.refresh.failures import Failed
from tokenvend_core.tokens import Token, sha256_hex

if TYPE_CHECKING:
    from tokenvend_core.refresh.refresher import Refresher


def grant_to_spend(
    refresher: Refresher, connection: str, owner: str
) -> tuple[ConnectionSecret, dict[str, Any], bool]:
    """Holding the lease, before a refresh-token grant: the newest refresh token (the
    secret's, or a fallback copy the secret did not take), noted as in flight. Also says
    whether an earlier attempt died while spending this very grant."""
    secret, config = refresher.read_secret(connection)  # it may have rotated since it was read
    current = refresher.tokens.get(refresher.provider, connection, consistent=True)
    pending = current.pending_refresh_token if current is not None else None
    if current is not None and pending:
        secret, config, settled = _settle_fallback(refresher, connection, current, secret, config)
        if not settled:
            return secret, config, False
        refresher.tokens.clear_pending_grant(refresher.provider, connection, owner, pending)
    grant = config.get("refresh_token")
    if not grant:
        return secret, config, False
    digest = sha256_hex(grant)
    suspect = current is not None and current.grant_in_flight == digest
    refresher.tokens.mark_grant_in_flight(
        refresher.provider, connection, owner, digest, refresher._clock()
    )
    return secret, config, suspect


def keep_refresh_token(
    refresher: Refresher,
    connection: str,
    owner: str,
    config: dict[str, Any],
    token: Token,
    secret: ConnectionSecret,
    code: str | None,
) -> ConnectionSecret:
    """A new refresh token goes into the secret before the access token is used or
    stored: the old one may already be dead at the provider."""
    if token.refresh_token is None or token.refresh_token == config.get("refresh_token"):
        if code is not None:
            raise Failed(
                Failure(
                    ProviderRejected(
                        "the provider answered the code exchange without a refresh token"
                    ),
                    permanent=False,
                    retry=False,
                )
            )
        return secret
    # The grants this attempt may replace in the secret: the one it spent, and the one
    # the secret held when the attempt spent a fallback copy instead.
    replaceable = {config.get("refresh_token"), secret.value.get("refresh_token")}
    last: Exception | None = None
    superseded = False
    for attempt in range(4):
        try:
            # Written over the secret as it is now, not as it was when the attempt began:
            # an operator's edit (an access list, a rotated client secret) made meanwhile
            # stays, and a grant put there meanwhile (a new authorization) is not
            # overwritten with this older chain's token.
            latest = refresher.secrets.get(refresher.provider, connection)
            base = dict(latest.value) if latest is not None else dict(config)
            held = base.get("refresh_token")
            if code is None and held not in replaceable and held != token.refresh_token:
                superseded = True
                break
            value = {**base, "refresh_token": token.refresh_token}
            if token.refresh_expires_at is not None:
                value["refresh_expires_at"] = token.refresh_expires_at
            version = refresher.secrets.put(refresher.provider, connection, value)
            return ConnectionSecret(value, version)
        except Exception as error:  # whatever failed, the grant must go somewhere
            last = error
            logger.warning(
                "could not store the rotated refresh token; retrying",
                extra={
                    **refresher.ids(connection),
                    "attempt": attempt + 1,
                    "error": getattr(error, "message", type(error).__name__),
                },
            )
            refresher._sleep(min(2.0, 0.2 * 2**attempt))
    if superseded:
        emit("RefreshTokenFallbackSuperseded")
        logger.warning(
            "the connection's grant was replaced while this refresh ran; its token is not kept",
            extra=refresher.ids(connection),
        )
        raise ProviderUnavailable(
            "the connection's grant was replaced while this refresh ran; try again",
            retry_after=1,
        )
    # The fallback place: the token table, under the lease. The next attempt moves it
    # into the secret; until then an alarm watches RefreshTokenInFallback.
    try:
        held = secret.value.get("refresh_token")
        kept = refresher.tokens.save_pending_grant(
            refresher.provider,
            connection,
            owner,
            token.refresh_token,
            token.refresh_expires_at,
            secret_version=secret.version,
            base_sha256=sha256_hex(held) if isinstance(held, str) and held else None,
        )
    except TokenVendError:
        kept = False
    if kept:
        emit("RefreshTokenInFallback")
        logger.error(
            "Secrets Manager did not take the rotated refresh token; it is kept in the "
            "token table until it does",
            extra=refresher.ids(connection),
        )
        return secret
    emit("RefreshTokenLost")
    logger.critical(
        "the rotated refresh token could not be stored", extra=refresher.ids(connection)
    )
    raise Internal("the provider's new refresh token could not be stored") from last


def _settle_fallback(
    refresher: Refresher,
    connection: str,
    current: ConnectionState,
    secret: ConnectionSecret,
    config: dict[str, Any],
) -> tuple[ConnectionSecret, dict[str, Any], bool]:
    """The fallback copy against the secret: the copy goes into the secret when it is
    ahead of the secret's grant; it is dropped when the secret already holds it or holds
    a grant that superseded it (a new authorization, an operator's new refresh token).
    Returns the secret and config to use, and whether the fallback may now be cleared."""
    pending = current.pending_refresh_token
    assert pending
    held = config.get("refresh_token")
    if pending == held:
        return secret, config, True
    base = current.pending_base_sha256
    held_sha = sha256_hex(held) if isinstance(held, str) and held else None
    ahead = (
        current.pending_secret_version is None  # kept before tokenvend recorded this
        or secret.version == current.pending_secret_version
        or held_sha == base  # a new version with the same grant (an operator's edit)
    )
    if not ahead:
        emit("RefreshTokenFallbackSuperseded")
        logger.warning(
            "the fallback refresh token was superseded by a newer grant in the secret; dropped it",
            extra=refresher.ids(connection),
        )
        return secret, config, True
    config = {**config, "refresh_token": pending}
    if current.pending_refresh_expires_at is not None:
        config["refresh_expires_at"] = current.pending_refresh_expires_at
    try:
        secret = ConnectionSecret(
            config, refresher.secrets.put(refresher.provider, connection, config)
        )
    except TokenVendError:
        logger.warning(
            "the fallback refresh token is not in the secret yet; using it",
            extra=refresher.ids(connection),
        )
        return secret, config, False
    logger.info("moved the fallback refresh token into the secret", extra=refresher.ids(connection))
    return secret, config, True
