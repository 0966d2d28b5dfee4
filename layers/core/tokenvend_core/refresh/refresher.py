"""Refreshing a connection's token: what a provider function does.

One refresh attempt per connection at a time, across all containers: the attempt runs under
a lease in the token table, taken with a conditional write that also enforces the cool-down.
Whoever finds the lease taken waits briefly and reads the holder's result. Permanent
failures are remembered against the secret's version, so that only a new version retries.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tokenvend_core.aws.secrets import ConnectionSecret, SecretStore
from tokenvend_core.aws.store import ConnectionState, TokenStore
from tokenvend_core.catalogue.providers import Failure, ProviderSpec, build_request, validate_secret
from tokenvend_core.errors import (
    AuthorizationRequired,
    Forbidden,
    Internal,
    InvalidRequest,
    ProviderRejected,
    ProviderUnavailable,
    TokenVendError,
    UnknownConnection,
)
from tokenvend_core.names import CONNECTION_RE
from tokenvend_core.need import Need
from tokenvend_core.observability import MetricUnit, emit, emit_for_connection, logger
from tokenvend_core.principals import is_allowed
from tokenvend_core.refresh.endpoint import TokenEndpoint
from tokenvend_core.settings import Settings
from tokenvend_core.tokens import Token, sha256_hex

POLL = 0.1


class Fanout(Protocol):
    """Where a scheduled run queues what it does not refresh itself (fanout.SqsFanout)."""

    def send(self, bodies: list[dict[str, Any]]) -> int: ...


@dataclass(slots=True)
class ScheduleReport:
    connections: int = 0
    due: int = 0
    refreshed: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0
    removed: int = 0
    fanned_out: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Refresher:
    def __init__(
        self,
        spec: ProviderSpec,
        settings: Settings,
        secrets: SecretStore,
        tokens: TokenStore,
        endpoint: TokenEndpoint,
        *,
        owner: str = "local",
        fanout: Fanout | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.secrets = secrets
        self.tokens = tokens
        self.endpoint = endpoint
        self.fanout = fanout
        self._owner = owner
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep

    @property
    def provider(self) -> str:
        return self.spec.name

    # -- the connection's secret -------------------------------------------------------

    def _secret(self, connection: str) -> tuple[ConnectionSecret, dict[str, Any]]:
        secret = self.secrets.get(self.provider, connection)
        if secret is None:
            raise UnknownConnection(
                f"no connection {self.provider}/{connection}: put its secret with "
                f"`tokenvend connections put {self.provider} {connection}`"
            )
        try:
            return secret, validate_secret(
                self.spec,
                secret.value,
                allow_http_loopback=self.settings.allow_http_loopback,
                plain_http_hosts=self.settings.plain_http_hosts,
            )
        except InvalidRequest as exc:
            raise Internal(
                f"the secret of {self.provider}/{connection} is invalid: {exc.message}"
            ) from None

    # -- refresh -----------------------------------------------------------------------

    def refresh(
        self,
        connection: str,
        need: Need,
        *,
        caller_arn: str | None = None,
        wait: float | None = None,
    ) -> ConnectionState:
        """A token that meets `need`: the current one, another caller's fresh one, or a new
        one fetched under the lease. Raises a TokenVendError otherwise."""
        secret, config = self._secret(connection)
        if caller_arn is not None and not is_allowed(caller_arn, config.get("allowed_principals")):
            raise Forbidden(f"the caller may not use {self.provider}/{connection}")
        owner = self._new_owner()
        give_up = self._monotonic() + (self.settings.lease_wait if wait is None else wait)
        contended = False
        first = True
        while True:
            now = self._clock()
            state = self.tokens.get(self.provider, connection, consistent=True)
            if first and state is not None:
                state = self._access_in_force(connection, state, config)
            first = False
            if need.met_by(state, now):
                assert state is not None
                return state
            if state is not None and self._fresh_or_remembered(state, secret, now, need):
                return state
            if (state is None or not state.leased(now)) and self.tokens.try_lease(
                self.provider,
                connection,
                owner,
                now,
                seconds=self.settings.lease_seconds,
                cool_down=self._cool_down(),
            ):
                return self._attempt(connection, owner, secret, config, state, need=need)
            if not contended:
                contended = True
                emit("LeaseContention")
            if self._monotonic() >= give_up:
                raise ProviderUnavailable(
                    f"another refresh of {self.provider}/{connection} is under way; "
                    "try again shortly",
                    retry_after=1,
                )
            self._sleep(POLL)

    def _access_in_force(
        self, connection: str, state: ConnectionState, config: dict[str, Any]
    ) -> ConnectionState:
        """The cached token carries the access list of the secret version in force: whoever
        reads it next (the vend function, from the table) checks callers against that."""
        wanted = config.get("allowed_principals")
        wanted_tuple = tuple(wanted) if wanted is not None else None
        if state.allowed_principals == wanted_tuple:
            return state
        self.tokens.set_access(self.provider, connection, wanted)
        logger.info("access list updated from the secret", extra=_ids(self, connection))
        return replace(state, allowed_principals=wanted_tuple)

    def _cool_down(self) -> int:
        """The cool-down as this container's clock must keep it: the last attempt was dated
        by another container's clock, which may be up to the clock skew ahead of this one."""
        cool_down = self.settings.cool_down
        return cool_down + self.settings.clock_skew if cool_down > 0 else 0

    def _fresh_or_remembered(
        self, state: ConnectionState, secret: ConnectionSecret, now: float, need: Need
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
        if state.leased(now) or since >= self._cool_down():
            return False
        retry_after = max(1, math.ceil(self._cool_down() - since))
        if error is not None:
            error.retry_after = retry_after if error.retry_after is None else error.retry_after
            raise error
        if state.valid(now + self.settings.clock_skew) and not (
            need.rejected_sha256 and state.token_sha256() == need.rejected_sha256
        ):
            return True  # refreshed within the cool-down: the freshest token there is
        raise ProviderUnavailable(
            "the token was refreshed moments ago and the provider is not asked again "
            "within the cool-down",
            retry_after=retry_after,
        )

    def _attempt(
        self,
        connection: str,
        owner: str,
        secret: ConnectionSecret,
        config: dict[str, Any],
        previous: ConnectionState | None,
        *,
        code: str | None = None,
        redirect_uri: str | None = None,
        need: Need | None = None,
    ) -> ConnectionState:
        """Holding the lease: fetch, store the rotated refresh token, store the token."""
        stored = False
        try:
            suspect = False
            if self.spec.uses_refresh_token and code is None:
                secret, config, suspect = self._grant_to_spend(connection, owner)
            try:
                token = self._fetch(connection, config, code=code, redirect_uri=redirect_uri)
            except Failed as failed:
                if suspect and isinstance(failed.failure.error, AuthorizationRequired):
                    raise Failed(_lost_rotation(failed.failure)) from None
                rotated = failed.failure.refresh_token
                if rotated and self.spec.uses_refresh_token:
                    # No usable access token, but the provider did rotate the grant: the new
                    # refresh token is kept like any other before the failure is told.
                    unusable = Token(
                        "",
                        "Bearer",
                        0,
                        refresh_token=rotated,
                        refresh_expires_at=failed.failure.refresh_expires_at,
                    )
                    secret = self._keep_refresh_token(
                        connection, owner, config, unusable, secret, None
                    )
                raise
            if self.spec.uses_refresh_token:
                secret = self._keep_refresh_token(connection, owner, config, token, secret, code)
            now = self._clock()
            state = self.tokens.save_token(
                self.provider,
                connection,
                owner,
                token,
                now=now,
                secret_version=secret.version,
                allowed_principals=config.get("allowed_principals"),
            )
            stored = True
            emit("RefreshSuccess")
            if state is None:
                # Our lease ran out and another holder took over: theirs is the newer token.
                logger.warning(
                    "lease lost before the token was stored", extra=_ids(self, connection)
                )
                current = self.tokens.get(self.provider, connection, consistent=True)
                good_enough = (
                    need.met_by(current, now)
                    if need is not None
                    else current is not None and current.valid(now + self.settings.clock_skew)
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
                extra={**_ids(self, connection), "expires_in": int(token.expires_at - now)},
            )
            return state
        except Failed as failed:
            if code is None:  # a bad code says nothing about the connection's own grant
                stored = True
                self._record(connection, owner, failed.failure, secret, previous)
            dead = failed.dead_tokens
            held = previous.access_token if previous is not None else None
            if held and previous is not None and previous.token_sha256() in dead:
                # The provider re-issued the very token it now says is dead.
                self.tokens.expire_token(self.provider, connection, held, self._clock())
            raise failed.failure.error from None
        except TokenVendError as error:
            if code is None:
                stored = True
                failure = Failure(error, permanent=False, retry=False)
                self._record(connection, owner, failure, secret, previous)
            raise
        finally:
            if not stored:
                self.tokens.release(self.provider, connection, owner)

    def _fetch(
        self,
        connection: str,
        config: dict[str, Any],
        *,
        code: str | None,
        redirect_uri: str | None,
    ) -> Token:
        try:
            request = build_request(
                self.spec,
                config,
                code=code,
                redirect_uri=redirect_uri,
                allow_http_loopback=self.settings.allow_http_loopback,
                plain_http_hosts=self.settings.plain_http_hosts,
            )
        except AuthorizationRequired as error:
            raise Failed(Failure(error, permanent=True, retry=False)) from None
        deadline = self._monotonic() + self.settings.attempt_deadline
        dead: set[str] = set()  # tokens any try of this attempt was told are already dead

        def on_try(outcome: Token | Failure, seconds: float) -> None:
            self._on_try(outcome, seconds)
            if isinstance(outcome, Failure) and outcome.dead_token_sha256:
                dead.add(outcome.dead_token_sha256)

        outcome = self.endpoint.fetch(
            self.spec,
            request,
            deadline=deadline,
            default_lifetime=int(config.get("default_lifetime") or self.settings.default_lifetime),
            scope=config.get("scope"),
            on_try=on_try,
        )
        if isinstance(outcome, Failure):
            raise Failed(outcome, dead_tokens=frozenset(dead))
        return outcome

    def _on_try(self, outcome: Token | Failure, seconds: float) -> None:
        emit("TokenEndpointLatency", seconds * 1000, MetricUnit.Milliseconds)
        if isinstance(outcome, Failure) and outcome.retry:
            emit("TokenEndpointRetry")

    def _grant_to_spend(
        self, connection: str, owner: str
    ) -> tuple[ConnectionSecret, dict[str, Any], bool]:
        """Holding the lease, before a refresh-token grant: the newest refresh token (the
        secret's, or a fallback copy the secret did not take), noted as in flight. Also says
        whether an earlier attempt died while spending this very grant."""
        secret, config = self._secret(connection)  # it may have rotated since it was read
        current = self.tokens.get(self.provider, connection, consistent=True)
        pending = current.pending_refresh_token if current is not None else None
        if current is not None and pending:
            secret, config, settled = self._settle_fallback(connection, current, secret, config)
            if not settled:
                return secret, config, False
            self.tokens.clear_pending_grant(self.provider, connection, owner, pending)
        grant = config.get("refresh_token")
        if not grant:
            return secret, config, False
        digest = sha256_hex(grant)
        suspect = current is not None and current.grant_in_flight == digest
        self.tokens.mark_grant_in_flight(self.provider, connection, owner, digest, self._clock())
        return secret, config, suspect

    def _settle_fallback(
        self,
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
                "the fallback refresh token was superseded by a newer grant in the secret; "
                "dropped it",
                extra=_ids(self, connection),
            )
            return secret, config, True
        config = {**config, "refresh_token": pending}
        if current.pending_refresh_expires_at is not None:
            config["refresh_expires_at"] = current.pending_refresh_expires_at
        try:
            secret = ConnectionSecret(config, self.secrets.put(self.provider, connection, config))
        except TokenVendError:
            logger.warning(
                "the fallback refresh token is not in the secret yet; using it",
                extra=_ids(self, connection),
            )
            return secret, config, False
        logger.info(
            "moved the fallback refresh token into the secret", extra=_ids(self, connection)
        )
        return secret, config, True

    def _keep_refresh_token(
        self,
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
                latest = self.secrets.get(self.provider, connection)
                base = dict(latest.value) if latest is not None else dict(config)
                held = base.get("refresh_token")
                if code is None and held not in replaceable and held != token.refresh_token:
                    superseded = True
                    break
                value = {**base, "refresh_token": token.refresh_token}
                if token.refresh_expires_at is not None:
                    value["refresh_expires_at"] = token.refresh_expires_at
                version = self.secrets.put(self.provider, connection, value)
                return ConnectionSecret(value, version)
            except Exception as error:  # whatever failed, the grant must go somewhere
                last = error
                logger.warning(
                    "could not store the rotated refresh token; retrying",
                    extra={
                        **_ids(self, connection),
                        "attempt": attempt + 1,
                        "error": getattr(error, "message", type(error).__name__),
                    },
                )
                self._sleep(min(2.0, 0.2 * 2**attempt))
        if superseded:
            emit("RefreshTokenFallbackSuperseded")
            logger.warning(
                "the connection's grant was replaced while this refresh ran; its token is not kept",
                extra=_ids(self, connection),
            )
            raise ProviderUnavailable(
                "the connection's grant was replaced while this refresh ran; try again",
                retry_after=1,
            )
        # The fallback place: the token table, under the lease. The next attempt moves it
        # into the secret; until then an alarm watches RefreshTokenInFallback.
        try:
            held = secret.value.get("refresh_token")
            kept = self.tokens.save_pending_grant(
                self.provider,
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
                extra=_ids(self, connection),
            )
            return secret
        emit("RefreshTokenLost")
        logger.critical(
            "the rotated refresh token could not be stored", extra=_ids(self, connection)
        )
        raise Internal("the provider's new refresh token could not be stored") from last

    def _record(
        self,
        connection: str,
        owner: str,
        failure: Failure,
        secret: ConnectionSecret,
        previous: ConnectionState | None,
    ) -> None:
        now = self._clock()
        failures = (previous.failures if previous is not None else 0) + 1
        backoff = min(
            self.settings.backoff_cap, self.settings.schedule_interval * 2 ** (failures - 1)
        )
        if failure.retry_after:
            backoff = max(backoff, failure.retry_after)
        kind = "permanent" if failure.permanent else "transient"
        emit("RefreshPermanentFailure" if failure.permanent else "RefreshTransientFailure")
        logger.warning(
            "refresh failed",
            extra={
                **_ids(self, connection),
                "error_code": failure.error.code,
                "error_message": failure.error.message,
                "kind": kind,
                "failures": failures,
            },
        )
        self.tokens.save_failure(
            self.provider,
            connection,
            owner,
            failure.error,
            now=now,
            permanent=failure.permanent,
            secret_version=secret.version,
            next_attempt_at=now + backoff,
        )

    def _new_owner(self) -> str:
        return f"{self._owner}:{uuid.uuid4().hex}"

    # -- authorization (wps365) -----------------------------------------------------------

    def authorize(
        self, connection: str, code: str, redirect_uri: str | None = None
    ) -> ConnectionState:
        if not self.spec.uses_refresh_token:
            raise InvalidRequest(f"{self.provider} does not take authorization codes")
        if not isinstance(code, str) or not code.strip() or len(code) > 4096:
            raise InvalidRequest("code must be the authorization code from the redirect")
        if redirect_uri is not None and not isinstance(redirect_uri, str):
            raise InvalidRequest("redirect_uri must be a string")
        secret, config = self._secret(connection)
        if redirect_uri is not None and redirect_uri != config.get("redirect_uri"):
            # A code redeemed for another redirect URI would bind the connection to whoever
            # controls that URI: only the operator, through the secret, chooses it.
            raise InvalidRequest(
                "redirect_uri must be the connection's own (its secret's redirect_uri); "
                "put a new secret version to change it"
            )
        owner = self._new_owner()
        give_up = self._monotonic() + self.settings.lease_wait
        while True:
            now = self._clock()
            state = self.tokens.get(self.provider, connection, consistent=True)
            if self.tokens.try_lease(
                self.provider,
                connection,
                owner,
                now,
                seconds=self.settings.lease_seconds,
                cool_down=0,
            ):
                break
            if self._monotonic() >= give_up:
                raise ProviderUnavailable(
                    "a refresh of this connection is under way; try again", retry_after=2
                )
            self._sleep(POLL)
        return self._attempt(
            connection, owner, secret, config, state, code=code, redirect_uri=redirect_uri
        )

    # -- the schedule ----------------------------------------------------------------------

    def run_schedule(self, remaining_ms: Callable[[], int]) -> ScheduleReport:
        """Refresh every connection whose token would fall below the refresh lead before the
        next run, nearest expiry first, with bounded concurrency, inside the time budget."""
        report = ScheduleReport()
        now = self._clock()
        versions = self.secrets.list(self.provider)
        states = {state.connection: state for state in self.tokens.connections(self.provider)}
        report.connections = len(versions)
        horizon = self.settings.refresh_lead + self.settings.schedule_interval
        due: list[tuple[float, str, Need]] = []
        for connection, version in versions.items():
            if not CONNECTION_RE.fullmatch(connection):
                report.skipped += 1
                continue
            state = states.get(connection)
            need = Need(min_ttl=horizon)
            changed = False
            if state is not None:
                seen = state.error_secret_version if state.error_code else state.secret_version
                changed = bool(version and seen and version != seen)
                if state.leased(now) or (
                    not changed and (state.error_permanent or state.next_attempt_at > now)
                ):
                    report.skipped += 1  # being refreshed, failing for good, or backing off
                    continue
            # The listing leaves the tokens themselves out: expires_at says whether there is one.
            if state is None or not state.expires_at:
                order = 0.0
            elif changed:
                order, need = float(state.expires_at), Need(newer_than=state.version)
            elif state.expires_at - now < horizon:
                order = float(state.expires_at)
            else:
                continue
            due.append((order, connection, need))
        awaiting_deletion = self.secrets.awaiting_deletion(self.provider)
        for connection, state in states.items():
            if connection in versions or state.leased(now):
                continue
            if connection in awaiting_deletion:
                # Restorable: nothing serves its token any more, but a fallback refresh
                # token stays for the day the secret is restored.
                if state.expires_at or state.error_code:
                    self.tokens.retire(self.provider, connection)
                    report.removed += 1
                continue
            self.tokens.delete(self.provider, connection)
            report.removed += 1
        due.sort()
        report.due = len(due)
        threshold = self.settings.fanout_threshold
        if self.fanout is not None and len(due) > threshold:
            # More than one run refreshes: keep the nearest expiries, queue the rest.
            report.fanned_out = self._fan_out(due[threshold:])
            due = due[:threshold]
        self._run_bounded(due, remaining_ms, report)
        logger.info(
            "scheduled refresh finished", extra={"provider": self.provider, **report.as_dict()}
        )
        emit("ScheduleDeferred", report.deferred)
        self._report_health(states, versions, now)
        return report

    def _fan_out(self, overflow: list[tuple[float, str, Need]]) -> int:
        assert self.fanout is not None
        size = self.settings.fanout_batch
        bodies = [
            {
                "action": "refresh_batch",
                "connections": [
                    {"connection": name, "min_ttl": need.min_ttl, "newer_than": need.newer_than}
                    for _, name, need in overflow[start : start + size]
                ],
            }
            for start in range(0, len(overflow), size)
        ]
        try:
            self.fanout.send(bodies)
        except TokenVendError:
            logger.warning("could not queue the fan-out; the next run picks these up")
            return 0
        emit("ScheduleFannedOut", len(overflow))
        return len(overflow)

    def refresh_batch(
        self, items: list[tuple[str, Need]], remaining_ms: Callable[[], int]
    ) -> ScheduleReport:
        """A batch queued by a scheduled run's fan-out, refreshed like the run itself would.
        Each connection's need is checked again: one refreshed meanwhile costs nothing."""
        report = ScheduleReport(connections=len(items), due=len(items))
        self._run_bounded([(0.0, name, need) for name, need in items], remaining_ms, report)
        return report

    def _run_bounded(
        self,
        due: list[tuple[float, str, Need]],
        remaining_ms: Callable[[], int],
        report: ScheduleReport,
    ) -> None:
        budget_ms = (self.settings.schedule_margin + self.settings.attempt_deadline) * 1000
        lock = threading.Lock()
        queue = iter(due)
        done = {"refreshed": 0, "failed": 0}

        def worker() -> None:
            while True:
                with lock:
                    if remaining_ms() <= budget_ms:
                        return
                    item = next(queue, None)
                if item is None:
                    return
                _, connection, need = item
                try:
                    self.refresh(connection, need, wait=0)
                    outcome = "refreshed"
                except TokenVendError as error:
                    outcome = "failed"
                    logger.warning(
                        "scheduled refresh of a connection failed",
                        extra={
                            **_ids(self, connection),
                            "error_code": error.code,
                            "error_message": error.message,
                        },
                    )
                except Exception:
                    logger.exception("scheduled refresh crashed", extra=_ids(self, connection))
                    outcome = "failed"
                with lock:
                    done[outcome] += 1

        workers = [
            threading.Thread(target=worker, name=f"refresh-{i}", daemon=True)
            for i in range(min(self.settings.schedule_concurrency, len(due)))
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        report.refreshed, report.failed = done["refreshed"], done["failed"]
        report.deferred = report.due - report.refreshed - report.failed - report.fanned_out

    def _report_health(
        self, states: dict[str, ConnectionState], versions: dict[str, str | None], now: float
    ) -> None:
        """Gauges for the alarms, from the connections' state at the start of this run."""
        known = [state for name, state in states.items() if name in versions]
        permanent = [s for s in known if s.error_permanent]
        failing = [s for s in known if s.error_code and not s.error_permanent and s.failures >= 2]
        emit("PermanentErrorConnections", len(permanent))
        emit("FailingConnections", len(failing))
        if not self.spec.uses_refresh_token:
            return
        grants = {s.connection: s.refresh_expires_at for s in known if s.refresh_expires_at}
        for connection, expires_at in grants.items():
            emit_for_connection(
                "RefreshGrantRemaining",
                max(0, expires_at - now),
                MetricUnit.Seconds,
                provider=self.provider,
                connection=connection,
            )
        if grants:
            emit("RefreshGrantMinRemaining", max(0, min(grants.values()) - now), MetricUnit.Seconds)


class Failed(Exception):
    """A classified failure inside an attempt."""

    def __init__(self, failure: Failure, dead_tokens: frozenset[str] = frozenset()) -> None:
        super().__init__(failure.error.message)
        self.failure = failure
        self.dead_tokens = dead_tokens  # SHA-256s of tokens the provider declared dead


def _lost_rotation(failure: Failure) -> Failure:
    error = AuthorizationRequired(
        "the refresh grant was refused after an earlier refresh ended between the provider's "
        "answer and storing its new refresh token; authorize the connection again with "
        "`tokenvend authorize PROVIDER CONNECTION --code CODE`"
    )
    return Failure(error, permanent=True, retry=False)


def _ids(refresher: Refresher, connection: str) -> dict[str, str]:
    return {"provider": refresher.provider, "connection": connection}
