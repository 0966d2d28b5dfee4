"""The lease: one refresh attempt per connection at a time, across all containers.

The lease is a conditional write to the connection's item in the token table that also
enforces the cool-down. Whoever finds it taken waits briefly and reads the holder's result;
whoever takes it makes the attempt (`attempt.run`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tokenvend_core.aws.secrets import ConnectionSecret
from tokenvend_core.aws.store import ConnectionState
from tokenvend_core.errors import Forbidden, ProviderUnavailable
from tokenvend_core.need import Need
from tokenvend_core.observability import emit, logger
from tokenvend_core.principals import is_allowed
from tokenvend_core.refresh import attempt

if TYPE_CHECKING:
    from tokenvend_core.refresh.refresher import Refresher

POLL = 0.1


def refresh(
    refresher: Refresher,
    connection: str,
    need: Need,
    *,
    caller_arn: str | None = None,
    wait: float | None = None,
) -> ConnectionState:
    """A token that meets `need`: the current one, another caller's fresh one, or a new
    one fetched under the lease. Raises a TokenVendError otherwise."""
    secret, config = refresher.read_secret(connection)
    if caller_arn is not None and not is_allowed(caller_arn, config.get("allowed_principals")):
        raise Forbidden(f"the caller may not use {refresher.provider}/{connection}")
    owner = refresher.new_owner()
    give_up = refresher._monotonic() + (refresher.settings.lease_wait if wait is None else wait)
    contended = False
    first = True
    while True:
        now = refresher._clock()
        state = refresher.tokens.get(refresher.provider, connection, consistent=True)
        if first and state is not None:
            state = _access_in_force(refresher, connection, state, config)
        first = False
        if need.met_by(state, now):
            assert state is not None
            return state
        if state is not None and _fresh_or_remembered(refresher, state, secret, now, need):
            return state
        if (state is None or not state.leased(now)) and refresher.tokens.try_lease(
            refresher.provider,
            connection,
            owner,
            now,
            seconds=refresher.settings.lease_seconds,
            cool_down=cool_down(refresher),
        ):
            return attempt.run(refresher, connection, owner, secret, config, state, need=need)
        if not contended:
            contended = True
            emit("LeaseContention")
        if refresher._monotonic() >= give_up:
            raise ProviderUnavailable(
                f"another refresh of {refresher.provider}/{connection} is under way; "
                "try again shortly",
                retry_after=1,
            )
        refresher._sleep(POLL)


def take_for_code(refresher: Refresher, connection: str, owner: str) -> ConnectionState | None:
    """The lease for redeeming an authorization code, with no cool-down: waits up to the
    lease wait for a holder to finish. Returns the connection's state as it was before."""
    give_up = refresher._monotonic() + refresher.settings.lease_wait
    while True:
        now = refresher._clock()
        state = refresher.tokens.get(refresher.provider, connection, consistent=True)
        if refresher.tokens.try_lease(
            refresher.provider,
            connection,
            owner,
            now,
            seconds=refresher.settings.lease_seconds,
            cool_down=0,
        ):
            return state
        if refresher._monotonic() >= give_up:
            raise ProviderUnavailable(
                "a refresh of this connection is under way; try again", retry_after=2
            )
        refresher._sleep(POLL)


def cool_down(refresher: Refresher) -> int:
    """The cool-down as this container's clock must keep it: the last attempt was dated
    by another container's clock, which may be up to the clock skew ahead of this one."""
    seconds = refresher.settings.cool_down
    return seconds + refresher.settings.clock_skew if seconds > 0 else 0


def _access_in_force(
    refresher: Refresher, connection: str, state: ConnectionState, config: dict[str, Any]
) -> ConnectionState:
    """The cached token carries the access list of the secret version in force: whoever
    reads it next (the vend function, from the table) checks callers against that."""
    wanted = config.get("allowed_principals")
    wanted_tuple = tuple(wanted) if wanted is not None else None
    if state.allowed_principals == wanted_tuple:
        return state
    refresher.tokens.set_access(refresher.provider, connection, wanted)
    logger.info("access list updated from the secret", extra=refresher.ids(connection))
    return replace(state, allowed_principals=wanted_tuple)


def _fresh_or_remembered(
    refresher: Refresher, state: ConnectionState, secret: ConnectionSecret, now: float, need: Need
) -> bool:
    """True when the token was refreshed within the cool-down and is the answer; raises a
    permanent failure of this secret version, or the outcome of an attempt within the
    cool-down; False when a new attempt may be made."""
    error = state.error()
    if error is not None and state.error_permanent:
        if state.error_secret_version == secret.version:
            raise error
        return False  # the secret changed since: try again
    since = now - state.last_attempt_at
    if state.leased(now) or since >= cool_down(refresher):
        return False
    retry_after = max(1, math.ceil(cool_down(refresher) - since))
    if error is not None:
        error.retry_after = retry_after if error.retry_after is None else error.retry_after
        raise error
    if state.valid(now + refresher.settings.clock_skew) and not (
        need.rejected_sha256 and state.token_sha256() == need.rejected_sha256
    ):
        return True  # refreshed within the cool-down: the freshest token there is
    raise ProviderUnavailable(
        "the token was refreshed moments ago and the provider is not asked again "
        "within the cool-down",
        retry_after=retry_after,
    )
