"""Vending: a token from memory, from the table, or through the connection's provider
function; a still-valid cached token marked stale when a refresh fails; never an expired one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import Forbidden, ProviderUnavailable, RefreshFailed, TokenVendError
from .need import Need
from .observability import emit
from .principals import is_allowed
from .store import ConnectionState, TokenStore
from .tokens import rfc3339

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
    ) -> ConnectionState: ...


@dataclass(frozen=True, slots=True)
class Vended:
    state: ConnectionState
    source: str  # memory, table or provider
    stale_error: TokenVendError | None = None

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
    ) -> None:
        self._tokens = tokens
        self._invoker = invoker
        self._memory_seconds = memory_seconds
        self._skew = skew
        self._memory: dict[tuple[str, str], tuple[ConnectionState, float]] = {}
        self._clock = clock
        self._monotonic = monotonic

    def get(self, provider: str, connection: str, min_ttl: int, caller_arn: str | None) -> Vended:
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
        return self._through_provider(provider, connection, cached, caller_arn, min_ttl=min_ttl)

    def refresh(
        self, provider: str, connection: str, rejected_sha256: str | None, caller_arn: str | None
    ) -> Vended:
        now = self._clock()
        cached = self._tokens.get(provider, connection, public=True)
        if rejected_sha256 is not None:
            if (
                cached is not None
                and cached.valid(now + self._skew)
                and cached.token_sha256() != rejected_sha256
            ):
                self._remember(cached)
                return self._serve(cached, caller_arn, "table")  # someone refreshed already
            return self._through_provider(
                provider, connection, cached, caller_arn, min_ttl=0, rejected_sha256=rejected_sha256
            )
        return self._through_provider(
            provider,
            connection,
            cached,
            caller_arn,
            min_ttl=0,
            newer_than=cached.version if cached is not None and cached.access_token else None,
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
    ) -> Vended:
        if cached is not None and not is_allowed(caller_arn, cached.allowed_principals):
            raise Forbidden(f"the caller may not use {provider}/{connection}")
        emit("VendMiss")
        try:
            fresh = self._invoker.refresh(
                provider,
                connection,
                min_ttl=min_ttl,
                rejected_sha256=rejected_sha256,
                newer_than=newer_than,
                caller_arn=caller_arn,
            )
        except RefreshFailed as error:
            now = self._clock()
            rejected = (
                rejected_sha256 is not None
                and cached is not None
                and (cached.token_sha256() == rejected_sha256)
            )
            # Stale-if-error, but never the very token the caller reported as refused.
            if cached is not None and cached.valid(now + self._skew) and not rejected:
                emit("VendStale")
                return Vended(cached, "table", stale_error=error)
            raise
        if not fresh.valid(self._clock() + self._skew):
            raise ProviderUnavailable("the provider function returned an expired token")
        self._remember(fresh)
        return self._serve(fresh, caller_arn, "provider")

    def _serve(self, state: ConnectionState, caller_arn: str | None, source: str) -> Vended:
        if not is_allowed(caller_arn, state.allowed_principals):
            raise Forbidden(f"the caller may not use {state.provider}/{state.connection}")
        if source != "provider":
            emit("VendMemoryHit" if source == "memory" else "VendTableHit")
        return Vended(state, source)

    def _remember(self, state: ConnectionState) -> None:
        if len(self._memory) >= MEMORY_ENTRIES:
            self._memory.clear()
        self._memory[(state.provider, state.connection)] = (state, self._monotonic())

    def forget(self) -> None:
        self._memory.clear()
