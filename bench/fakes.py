"""In-memory stand-ins for the token table and Secrets Manager, with a fixed latency per call.

They implement the methods of `tokenvend_core.aws.store.TokenStore` and
`tokenvend_core.aws.secrets.SecretStore` that the refresh path uses, with the same semantics
(conditional lease, fencing on `lease_owner`, version counter, projections), and sleep a
fixed time per AWS call (per page for listings) outside their lock, as concurrent requests
to DynamoDB and Secrets Manager overlap. What the fleet benchmark measures is tokenvend's
own work and its concurrency, not moto's speed.

Pages: ListSecrets returns at most 100 secrets a page; a DynamoDB Query at most 1 MB, taken
here as 4,000 items of the projected schedule listing (~250 bytes each).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any

from tokenvend_core.aws.secrets import ConnectionSecret
from tokenvend_core.aws.store import PUBLIC, TTL_GRACE, ConnectionState, state_from_item
from tokenvend_core.errors import TokenVendError
from tokenvend_core.tokens import Token

LATENCY = 0.005
SECRETS_PAGE = 100
QUERY_PAGE = 4000
_LISTING = (
    "provider", "connection", "token_type", "expires_at", "version", "refreshed_at",
    "secret_version", "refresh_expires_at", "lease_owner", "lease_expires_at",
    "last_attempt_at", "error_code", "error_message", "error_permanent",
    "error_secret_version", "error_retry_after", "failing_since", "failures",
    "next_attempt_at",
)  # fmt: skip
_PENDING = (
    "pending_refresh_token", "pending_refresh_expires_at", "pending_secret_version",
    "pending_base_sha256",
)  # fmt: skip
_HEALTH = (
    "lease_owner", "lease_expires_at", "error_code", "error_message", "error_permanent",
    "error_secret_version", "error_retry_after", "failing_since", "failures", "next_attempt_at",
)  # fmt: skip


class _Latency:
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def _call(self, name: str, pages: int = 1) -> None:
        with self._count_lock:
            self.calls[name] += pages
        if self.latency:
            time.sleep(self.latency * pages)


class FakeTokenStore(_Latency):
    """TokenStore's methods over a dict of items; one AWS call per method call."""

    def __init__(self, latency: float = LATENCY) -> None:
        super().__init__(latency)
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def put_item(self, item: dict[str, Any]) -> None:
        self.items[(item["provider"], item["connection"])] = dict(item)

    def get(
        self, provider: str, connection: str, *, consistent: bool = False, public: bool = False
    ) -> ConnectionState | None:
        self._call("GetItem")
        with self._lock:
            item = self.items.get((provider, connection))
            item = dict(item) if item is not None else None
        if item is None:
            return None
        if public:
            item = {k: v for k, v in item.items() if k in PUBLIC}
        return state_from_item(item)

    def connections(self, provider: str) -> list[ConnectionState]:
        with self._lock:
            items = [dict(i) for (p, _), i in self.items.items() if p == provider]
        self._call("Query", max(1, math.ceil(len(items) / QUERY_PAGE)))
        return [state_from_item({k: v for k, v in i.items() if k in _LISTING}) for i in items]

    def _update(self, provider: str, connection: str, change: Any) -> bool:
        """One UpdateItem: `change(item)` returns False when the condition fails."""
        self._call("UpdateItem")
        with self._lock:
            key = (provider, connection)
            item = dict(self.items.get(key) or {"provider": provider, "connection": connection})
            if change(item) is False:
                return False
            self.items[key] = item
            return True

    def try_lease(
        self,
        provider: str,
        connection: str,
        owner: str,
        now: float,
        *,
        seconds: int,
        cool_down: int,
    ) -> bool:
        def change(item: dict[str, Any]) -> bool:
            if "lease_owner" in item and item.get("lease_expires_at", 0) >= now:
                return False
            if cool_down > 0 and item.get("last_attempt_at", 0) > now - cool_down:
                return False
            item.update(lease_owner=owner, lease_expires_at=now + seconds, last_attempt_at=now)
            return True

        return self._update(provider, connection, change)

    def save_token(
        self,
        provider: str,
        connection: str,
        owner: str,
        token: Token,
        *,
        now: float,
        secret_version: str | None,
        allowed_principals: list[str] | None,
    ) -> ConnectionState | None:
        saved: dict[str, Any] = {}

        def change(item: dict[str, Any]) -> bool:
            if item.get("lease_owner") != owner:
                return False
            for name in (*_HEALTH, "scope", "allowed_principals", "secret_version"):
                item.pop(name, None)
            item.pop("grant_in_flight", None)
            item.pop("grant_in_flight_at", None)
            item.update(
                access_token=token.access_token,
                token_type=token.token_type,
                expires_at=token.expires_at,
                refreshed_at=now,
                ttl=token.expires_at + TTL_GRACE,
                version=int(item.get("version", 0)) + 1,
            )
            if token.scope:
                item["scope"] = token.scope
            if secret_version:
                item["secret_version"] = secret_version
            if allowed_principals is not None:
                item["allowed_principals"] = list(allowed_principals)
            if token.refresh_expires_at is not None:
                item["refresh_expires_at"] = token.refresh_expires_at
            saved.update(item)
            return True

        return state_from_item(saved) if self._update(provider, connection, change) else None

    def save_failure(
        self,
        provider: str,
        connection: str,
        owner: str,
        error: TokenVendError,
        *,
        now: float,
        permanent: bool,
        secret_version: str | None,
        next_attempt_at: float,
    ) -> bool:
        def change(item: dict[str, Any]) -> bool:
            if item.get("lease_owner") != owner:
                return False
            for name in ("lease_owner", "lease_expires_at", "error_secret_version"):
                item.pop(name, None)
            item.pop("error_retry_after", None)
            item.update(
                error_code=error.code,
                error_message=error.message,
                error_permanent=permanent,
                next_attempt_at=next_attempt_at,
                failures=int(item.get("failures", 0)) + 1,
            )
            item.setdefault("failing_since", now)
            if secret_version:
                item["error_secret_version"] = secret_version
            if error.retry_after is not None:
                item["error_retry_after"] = error.retry_after
            return True

        return self._update(provider, connection, change)

    def _owned(self, owner: str, apply: Any) -> Any:
        def change(item: dict[str, Any]) -> bool:
            if item.get("lease_owner") != owner:
                return False
            apply(item)
            return True

        return change

    def mark_grant_in_flight(
        self, provider: str, connection: str, owner: str, grant_sha256: str, now: float
    ) -> bool:
        return self._update(
            provider,
            connection,
            self._owned(
                owner, lambda i: i.update(grant_in_flight=grant_sha256, grant_in_flight_at=now)
            ),
        )

    def save_pending_grant(
        self,
        provider: str,
        connection: str,
        owner: str,
        refresh_token: str,
        refresh_expires_at: int | None,
        *,
        secret_version: str,
        base_sha256: str | None,
    ) -> bool:
        def apply(item: dict[str, Any]) -> None:
            for name in _PENDING:
                item.pop(name, None)
            item["pending_refresh_token"] = refresh_token
            item["pending_secret_version"] = secret_version
            if base_sha256 is not None:
                item["pending_base_sha256"] = base_sha256
            if refresh_expires_at is not None:
                item["pending_refresh_expires_at"] = refresh_expires_at

        return self._update(provider, connection, self._owned(owner, apply))

    def clear_pending_grant(
        self, provider: str, connection: str, owner: str, refresh_token: str
    ) -> bool:
        def change(item: dict[str, Any]) -> bool:
            if item.get("lease_owner") != owner:
                return False
            if item.get("pending_refresh_token") != refresh_token:
                return False
            for name in _PENDING:
                item.pop(name, None)
            return True

        return self._update(provider, connection, change)

    def set_access(
        self, provider: str, connection: str, allowed_principals: list[str] | None
    ) -> bool:
        def change(item: dict[str, Any]) -> bool:
            if allowed_principals is None:
                item.pop("allowed_principals", None)
            else:
                item["allowed_principals"] = list(allowed_principals)
            return True

        return self._update(provider, connection, change)

    def release(self, provider: str, connection: str, owner: str) -> bool:
        def apply(item: dict[str, Any]) -> None:
            item.pop("lease_owner", None)
            item.pop("lease_expires_at", None)

        return self._update(provider, connection, self._owned(owner, apply))

    def delete(self, provider: str, connection: str) -> None:
        self._call("DeleteItem")
        with self._lock:
            self.items.pop((provider, connection), None)


class FakeSecretStore(_Latency):
    """SecretStore's methods over a dict of secrets."""

    def __init__(self, prefix: str = "tokenvend/", latency: float = LATENCY) -> None:
        super().__init__(latency)
        self.prefix = prefix
        self.secrets: dict[str, tuple[dict[str, Any], str]] = {}
        self._lock = threading.Lock()
        self._versions = 0

    def name(self, provider: str, connection: str) -> str:
        return f"{self.prefix}{provider}/{connection}"

    def create(self, provider: str, connection: str, value: dict[str, Any]) -> str:
        with self._lock:
            self._versions += 1
            version = f"v{self._versions}"
            self.secrets[self.name(provider, connection)] = (dict(value), version)
            return version

    def get(self, provider: str, connection: str) -> ConnectionSecret | None:
        self._call("GetSecretValue")
        with self._lock:
            found = self.secrets.get(self.name(provider, connection))
        return ConnectionSecret(dict(found[0]), found[1]) if found is not None else None

    def put(self, provider: str, connection: str, value: dict[str, Any]) -> str:
        self._call("PutSecretValue")
        return self.create(provider, connection, value)

    def awaiting_deletion(self, provider: str) -> set[str]:
        self._call("ListSecrets")
        return set()  # the fakes never schedule a deletion

    def list(self, provider: str) -> dict[str, str | None]:
        prefix = f"{self.prefix}{provider}/"
        with self._lock:
            found: dict[str, str | None] = {
                name[len(prefix) :]: version
                for name, (_, version) in self.secrets.items()
                if name.startswith(prefix)
            }
        self._call("ListSecrets", max(1, math.ceil(len(found) / SECRETS_PAGE)))
        return found


class FakeFanout(_Latency):
    """fanout.SqsFanout's send(): one SendMessageBatch call per ten bodies."""

    def __init__(self, latency: float = LATENCY) -> None:
        super().__init__(latency)
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def send(self, bodies: list[dict[str, Any]]) -> int:
        self._call("SendMessageBatch", max(1, math.ceil(len(bodies) / 10)))
        with self._lock:
            self.bodies.extend(bodies)
        return len(bodies)
