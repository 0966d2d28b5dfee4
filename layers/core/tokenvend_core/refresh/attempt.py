"""One attempt against the provider's token endpoint, made by whoever holds the lease: spend
the grant (`rotation`), fetch, keep a rotated refresh token, store the token; or remember
the failure (`failures`). The lease is released when nothing was stored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenvend_core.aws.secrets import ConnectionSecret
from tokenvend_core.aws.store import ConnectionState
from tokenvend_core.catalogue.answer import Failure
from tokenvend_core.catalogue.request import build_request
from tokenvend_core.errors import AuthorizationRequired, ProviderUnavailable, TokenVendError
from tokenvend_core.need import Need
from tokenvend_core.observability import MetricUnit, emit, logger
from tokenvend_core.refresh import failures, rotation
from tokenvend_core.refresh.failures import Failed, lost_rotation
from tokenvend_core.tokens import Token

if TYPE_CHECKING:
    from tokenvend_core.refresh.refresher import Refresher


def run(
    refresher: Refresher,
    connection: str,
    owner: str,
    secret: ConnectionSecret,
    config: dict[str, Any],
    previous: ConnectionState | None,
    *,
    code: str | None = None,
    redirect_uri: str | None = None,
    code_verifier: str | None = None,
    need: Need | None = None,
) -> ConnectionState:
    """Holding the lease: fetch, store the rotated refresh token, store the token."""
    stored = False
    try:
        suspect = False
        if refresher.spec.uses_refresh_token and code is None:
            secret, config, suspect = rotation.grant_to_spend(refresher, connection, owner)
        try:
            token = _fetch(
                refresher,
                connection,
                config,
                code=code,
                redirect_uri=redirect_uri,
                code_verifier=code_verifier,
            )
        except Failed as failed:
            if suspect and isinstance(failed.failure.error, AuthorizationRequired):
                raise Failed(lost_rotation(failed.failure)) from None
            rotated = failed.failure.refresh_token
            if rotated and refresher.spec.uses_refresh_token:
                # No usable access token, but the provider did rotate the grant: the new
                # refresh token is kept like any other before the failure is told.
                unusable = Token(
                    "",
                    "Bearer",
                    0,
                    refresh_token=rotated,
                    refresh_expires_at=failed.failure.refresh_expires_at,
                )
                secret = rotation.keep_refresh_token(
                    refresher, connection, owner, config, unusable, secret, None
                )
            raise
        if refresher.spec.uses_refresh_token:
            secret = rotation.keep_refresh_token(
                refresher, connection, owner, config, token, secret, code
            )
        now = refresher._clock()
        state = refresher.tokens.save_token(
            refresher.provider,
            connection,
            owner,
            token,
            now=now,
            secret_version=secret.version,
            allowed_principals=config.get("allowed_principals"),
        )
        stored = True
        emit("RefreshSuccess")
        if code is None:
            refresher.audit.record(
                "refresh_attempt",
                "ok" if state is not None else "superseded",
                provider=refresher.provider,
                connection=connection,
                secret_version=secret.version,
                expires_at=token.expires_at,
                token=token.access_token,
            )
        if state is None:
            # Our lease ran out and another holder took over: theirs is the newer token.
            logger.warning(
                "lease lost before the token was stored", extra=refresher.ids(connection)
            )
            current = refresher.tokens.get(refresher.provider, connection, consistent=True)
            good_enough = (
                need.met_by(current, now)
                if need is not None
                else current is not None and current.valid(now + refresher.settings.clock_skew)
            )
            if current is not None and good_enough:
                return current
            # The token is not in the table, so nobody may be handed it: only what the
            # table holds carries the connection's access list.
            raise ProviderUnavailable(
                "another refresh of this connection took over; try again", retry_after=1
            )
        logger.info(
            "token refreshed",
            extra={**refresher.ids(connection), "expires_in": int(token.expires_at - now)},
        )
        return state
    except Failed as failed:
        if code is None:  # a bad code says nothing about the connection's own grant
            _failed(refresher, connection, failed.failure.error.code, secret)
            stored = True
            failures.record(refresher, connection, owner, failed.failure, secret, previous)
        dead = failed.dead_tokens
        held = previous.access_token if previous is not None else None
        if held and previous is not None and previous.token_sha256() in dead:
            # The provider re-issued the very token it now says is dead.
            refresher.tokens.expire_token(refresher.provider, connection, held, refresher._clock())
        raise failed.failure.error from None
    except TokenVendError as error:
        if code is None:
            if not stored:  # a stored token's attempt is recorded (superseded), not failed
                _failed(refresher, connection, error.code, secret)
            stored = True
            failure = Failure(error, permanent=False, retry=False)
            failures.record(refresher, connection, owner, failure, secret, previous)
        raise
    finally:
        if not stored:
            refresher.tokens.release(refresher.provider, connection, owner)


def _failed(refresher: Refresher, connection: str, code: str, secret: ConnectionSecret) -> None:
    refresher.audit.record(
        "refresh_attempt",
        "failed",
        provider=refresher.provider,
        connection=connection,
        error_code=code,
        secret_version=secret.version,
    )


def _fetch(
    refresher: Refresher,
    connection: str,
    config: dict[str, Any],
    *,
    code: str | None,
    redirect_uri: str | None,
    code_verifier: str | None = None,
) -> Token:
    try:
        request = build_request(
            refresher.spec,
            config,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            allow_http_loopback=refresher.settings.allow_http_loopback,
            plain_http_hosts=refresher.settings.plain_http_hosts,
        )
    except AuthorizationRequired as error:
        raise Failed(Failure(error, permanent=True, retry=False)) from None
    deadline = refresher._monotonic() + refresher.settings.attempt_deadline
    dead: set[str] = set()  # tokens any try of this attempt was told are already dead

    def on_try(outcome: Token | Failure, seconds: float) -> None:
        _on_try(outcome, seconds)
        if isinstance(outcome, Failure) and outcome.dead_token_sha256:
            dead.add(outcome.dead_token_sha256)

    outcome = refresher.endpoint.fetch(
        refresher.spec,
        request,
        deadline=deadline,
        default_lifetime=int(config.get("default_lifetime") or refresher.settings.default_lifetime),
        scope=config.get("scope"),
        on_try=on_try,
    )
    if isinstance(outcome, Failure):
        raise Failed(outcome, dead_tokens=frozenset(dead))
    return outcome


def _on_try(outcome: Token | Failure, seconds: float) -> None:
    emit("TokenEndpointLatency", seconds * 1000, MetricUnit.Milliseconds)
    if isinstance(outcome, Failure) and outcome.retry:
        emit("TokenEndpointRetry")
