"""Vending: a token from memory, from the table, or through the connection's provider
function; a still-valid cached token marked stale when a refresh fails; never an expired one.

Every token served comes from the token table, read with the connection's access list
beside it: a provider function answers only which version of the item meets the need, and
the vend function reads that item itself. A caller with no identity gets nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tokenvend_core.audit import Trail
from tokenvend_core.aws.store import ConnectionState, TokenStore
from tokenvend_core.errors import Forbidden, ProviderUnavailable, RefreshFailed, TokenVendError
from tokenvend_core.need import Need
from tokenvend_core.observability import emit
from tokenvend_core.principals import is_allowed
from tokenvend_core.tokens import rfc3339

MEMORY_ENTRIES = 10_000


class Invoker(Protocol):
    def refresh(
        self,
        provider: str,
        connection: str,
        *,
        min_ttl: int,
        rejected_sha256: str | None = None,
        newer_than: int | None = None,
        caller_arn: str | None = None,
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class Vended:
    state: ConnectionState
    source: str  # memory, table or provider
    stale_error: TokenVendError | None = None

    @property
    def outcome(self) -> str:
        """What the audit trail says of it: memory, table, provider, or stale."""
        return "stale" if self.stale_error is not None else self.source

    def body(self, now: float) -> dict[str, Any]:
        state = self.state
        out: dict[str, Any] = {
            "provider": state.provider,
            "connection": state.connection,
            "access_token": state.access_token,
            "token_type": state.token_type,
            "expires_at": rfc3339(state.expires_at),
            "expires_in": max(0, int(state.expires_at - now)),
        }
        if state.scope:
            out["scope"] = state.scope
        out["extra"] = dict(state.extra)
        if self.stale_error is not None:
            out["stale"] = True
            out["refresh_error"] = {
                "code": self.stale_error.code,
                "message": self.stale_error.message,
            }
        return out


class Vendor:
    def __init__(
        self,
        tokens: TokenStore,
        invoker: Invoker,
        *,
        memory_seconds: float,
        skew: float = 30,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        invoke_seconds: float = 0,
        audit: Trail | None = None,
    ) -> None:
        self._tokens = tokens
        # Where this function's audit records go (the API's answers, tokenvend_core.audit).
        self.audit = audit if audit is not None else Trail()
        # The longest a provider invocation and the table read after it may take: a vend
        # invocation with less time left answers 503 rather than be cut off by Lambda.
        self._invoke_seconds = invoke_seconds
        self._invoker = invoker
        self._memory_seconds = memory_seconds
        self._skew = skew
        self._memory: dict[tuple[str, str], tuple[ConnectionState, float]] = {}
        self._clock = clock
        self._monotonic = monotonic

    @property
    def invoker(self) -> Invoker:
        """The way to the provider functions (the link routes use it too)."""
        return self._invoker

    def get(
        self,
        provider: str,
        connection: str,
        min_ttl: int,
        caller_arn: str | None,
        remaining: Callable[[], float] | None = None,
    ) -> Vended:
        _identified(caller_arn, provider, connection)
        now = self._clock()
        need = Need(min_ttl=min_ttl, skew=self._skew)
        key = (provider, connection)
        remembered = self._memory.get(key)
        if remembered is not None:
            state, at = remembered
            if self._monotonic() - at < self._memory_seconds and need.met_by(state, now):
                return self._serve(state, caller_arn, "memory")
        try:
            cached = self._tokens.get(provider, connection, public=True)
        except ProviderUnavailable:
            # The table is failing: a token this container still holds is as good as any.
            if remembered is not None and need.met_by(remembered[0], now):
                return self._serve(remembered[0], caller_arn, "memory")
            raise
        if cached is not None and need.met_by(cached, now):
            self._remember(cached)
            return self._serve(cached, caller_arn, "table")
        return self._through_provider(
            provider, connection, cached, caller_arn, min_ttl=min_ttl, remaining=remaining
        )

    def refresh(
        self,
        provider: str,
        connection: str,
        rejected_sha256: str | None,
        caller_arn: str | None,
        remaining: Callable[[], float] | None = None,
    ) -> Vended:
        _identified(caller_arn, provider, connection)
        now = self._clock()
        cached = self._tokens.get(provider, connection, public=True)
        newer_than = None
        if rejected_sha256 is not None:
            if (
                cached is not None
                and cached.valid(now + self._skew)
                and cached.token_sha256() != rejected_sha256
            ):
                self._remember(cached)
                return self._serve(cached, caller_arn, "table")  # someone refreshed already
        elif cached is not None and cached.access_token:
            newer_than = cached.version  # a refresh without a rejected token: any newer one
        return self._through_provider(
            provider,
            connection,
            cached,
            caller_arn,
            min_ttl=0,
            rejected_sha256=rejected_sha256,
            newer_than=newer_than,
            remaining=remaining,
        )

    def _through_provider(
        self,
        provider: str,
        connection: str,
        cached: ConnectionState | None,
        caller_arn: str | None,
        *,
        min_ttl: int,
        rejected_sha256: str | None = None,
        newer_than: int | None = None,
        remaining: Callable[[], float] | None = None,
    ) -> Vended:
        if cached is not None and not is_allowed(caller_arn, cached.allowed_principals):
            raise Forbidden(f"the caller may not use {provider}/{connection}")
        emit("VendMiss")
        try:
            if remaining is not None and remaining() < self._invoke_seconds:
                raise ProviderUnavailable(
                    "not enough time left in this request to refresh the token; try again",
                    retry_after=1,
                )
            version = self._invoker.refresh(
                provider,
                connection,
                min_ttl=min_ttl,
                rejected_sha256=rejected_sha256,
                newer_than=newer_than,
                caller_arn=caller_arn,
            )
            fresh = self._tokens.get(provider, connection, consistent=True, public=True)
            if fresh is None or fresh.version < version:
                raise ProviderUnavailable(
                    "the refreshed token is not in the table yet; try again", retry_after=1
                )
        except RefreshFailed as error:
            now = self._clock()
            rejected = (
                rejected_sha256 is not None
                and cached is not None
                and (cached.token_sha256() == rejected_sha256)
            )
            # Stale-if-error, but never the very token the caller reported as refused, nor
            # one the provider has just declared dead, and only to a caller the
            # connection's list allows.
            if cached is None or rejected or not cached.valid(now + self._skew):
                raise
            held = self._still_cached(cached)
            if held is None or not held.valid(now + self._skew):
                raise
            emit("VendStale")
            self._serve(held, caller_arn, "stale")
            return Vended(held, "table", stale_error=error)
        if not fresh.valid(self._clock() + self._skew):
            raise ProviderUnavailable("the provider function returned an expired token")
        vended = self._serve(fresh, caller_arn, "provider")
        self._remember(fresh)
        return vended

    def _still_cached(self, cached: ConnectionState) -> ConnectionState | None:
        """The cached token as the table holds it now, if it is still that token (a failed
        refresh may have found it declared dead); the earlier copy when the table fails."""
        try:
            now_held = self._tokens.get(
                cached.provider, cached.connection, consistent=True, public=True
            )
        except ProviderUnavailable:
            return cached
        if now_held is None or now_held.access_token != cached.access_token:
            return None
        return now_held

    def _serve(self, state: ConnectionState, caller_arn: str | None, source: str) -> Vended:
        if not is_allowed(caller_arn, state.allowed_principals):
            raise Forbidden(f"the caller may not use {state.provider}/{state.connection}")
        if source in ("memory", "table"):
            emit("VendMemoryHit" if source == "memory" else "VendTableHit")
        return Vended(state, source)

    def _remember(self, state: ConnectionState) -> None:
        if len(self._memory) >= MEMORY_ENTRIES:
            self._memory.clear()
        self._memory[(state.provider, state.connection)] = (state, self._monotonic())

    def forget(self) -> None:
        self._memory.clear()


def _identified(caller_arn: str | None, provider: str, connection: str) -> None:
    """API Gateway's IAM authorization gives every request a caller: a request without one
    did not come through it, and gets nothing, not even a provider call."""
    if not caller_arn:
        raise Forbidden(f"the request carries no caller identity for {provider}/{connection}")
