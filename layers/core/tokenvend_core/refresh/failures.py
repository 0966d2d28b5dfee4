"""A failed attempt: how it is classified inside the attempt, and how it is remembered in
the token table (with its backoff, and against the secret version it failed with, so that
only a new version retries a permanent failure)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenvend_core.aws.secrets import ConnectionSecret
from tokenvend_core.aws.store import ConnectionState
from tokenvend_core.catalogue.answer import Failure
from tokenvend_core.errors import AuthorizationRequired
from tokenvend_core.observability import emit, logger

if TYPE_CHECKING:
    from tokenvend_core.refresh.refresher import Refresher


class Failed(Exception):
    """A classified failure inside an attempt."""

    def __init__(self, failure: Failure, dead_tokens: frozenset[str] = frozenset()) -> None:
        super().__init__(failure.error.message)
        self.failure = failure
        self.dead_tokens = dead_tokens  # SHA-256s of tokens the provider declared dead


def lost_rotation(failure: Failure) -> Failure:
    error = AuthorizationRequired(
        "the refresh grant was refused after an earlier refresh ended between the provider's "
        "answer and storing its new refresh token; authorize the connection again with "
        "`tokenvend authorize PROVIDER CONNECTION --code CODE`"
    )
    return Failure(error, permanent=True, retry=False)


def record(
    refresher: Refresher,
    connection: str,
    owner: str,
    failure: Failure,
    secret: ConnectionSecret,
    previous: ConnectionState | None,
) -> None:
    now = refresher._clock()
    failures = (previous.failures if previous is not None else 0) + 1
    backoff = min(
        refresher.settings.backoff_cap, refresher.settings.schedule_interval * 2 ** (failures - 1)
    )
    if failure.retry_after:
        backoff = max(backoff, failure.retry_after)
    kind = "permanent" if failure.permanent else "transient"
    emit("RefreshPermanentFailure" if failure.permanent else "RefreshTransientFailure")
    logger.warning(
        "refresh failed",
        extra={
            **refresher.ids(connection),
            "error_code": failure.error.code,
            "error_message": failure.error.message,
            "kind": kind,
            "failures": failures,
        },
    )
    refresher.tokens.save_failure(
        refresher.provider,
        connection,
        owner,
        failure.error,
        now=now,
        permanent=failure.permanent,
        secret_version=secret.version,
        next_attempt_at=now + backoff,
    )
