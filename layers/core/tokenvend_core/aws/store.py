"""The token table: one item per connection, keyed by (provider, connection).

The item holds the current token, the lease under which one refresh at a time runs, and
the connection's health. Every write that follows a refresh is conditional on the lease
(fencing): a holder whose lease was taken over cannot overwrite a newer token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tokenvend_core.aws.clients import aws_call
from tokenvend_core.errors import TokenVendError, error_from_dict
from tokenvend_core.tokens import Token, sha256_hex

# The attributes that conditions name, by their placeholder in the condition expressions.
CONDITION_NAMES = {
    "#lo": "lease_owner",
    "#le": "lease_expires_at",
    "#la": "last_attempt_at",
    "#pg": "pending_refresh_token",
    "#cn": "connection",
    "#at": "access_token",
    "#ln": "link_nonce",
}
TTL_GRACE = 86400
# What the vend function reads: never the fallback copy of a refresh token.
PUBLIC = (
    "provider", "connection", "access_token", "token_type", "scope", "extra", "expires_at",
    "version", "refreshed_at", "allowed_principals", "secret_version",
)  # fmt: skip
_IN_FLIGHT = ("grant_in_flight", "grant_in_flight_at")
# A connection's outstanding connect link: its nonce and when it ends (refresh/link.py).
_LINK = ("link_nonce", "link_expires_at")
# The fallback copy of a rotated refresh token, and what it is ahead of: the secret version
# that was current when it was kept, and the SHA-256 of that version's refresh token.
_PENDING = (
    "pending_refresh_token",
    "pending_refresh_expires_at",
    "pending_secret_version",
    "pending_base_sha256",
)
# A retired connection (its secret awaits deletion) keeps only its key and its fallback.
_TOKEN = ("access_token", "token_type", "scope", "extra", "expires_at", "refreshed_at", "ttl")

_HEALTH = (
    "lease_owner",
    "lease_expires_at",
    "last_attempt_at",
    "error_code",
    "error_message",
    "error_permanent",
    "error_secret_version",
    "error_retry_after",
    "failing_since",
    "failures",
    "next_attempt_at",
)

# What the schedule's listing reads of each item: no token, no fallback refresh token.
LISTING = (
    "provider", "connection", "token_type", "expires_at", "version", "refreshed_at",
    "secret_version", "refresh_expires_at", *_HEALTH,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConnectionState:
    provider: str
    connection: str
    access_token: str | None = None
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a credential
    scope: str | None = None
    # The answer fields the provider's catalogue entry passes through (Token.extra).
    extra: dict[str, Any] = field(default_factory=dict)
    expires_at: int = 0
    version: int = 0
    refreshed_at: float = 0.0
    secret_version: str | None = None
    allowed_principals: tuple[str, ...] | None = None
    refresh_expires_at: int | None = None
    lease_owner: str | None = None
    lease_expires_at: float = 0.0
    last_attempt_at: float = 0.0
    error_code: str | None = None
    error_message: str | None = None
    error_permanent: bool = False
    error_secret_version: str | None = None
    error_retry_after: int | None = None
    failing_since: float | None = None
    failures: int = 0
    next_attempt_at: float = 0.0
    pending_refresh_token: str | None = field(default=None, repr=False)
    pending_refresh_expires_at: int | None = None
    pending_secret_version: str | None = None
    pending_base_sha256: str | None = None
    grant_in_flight: str | None = None
    grant_in_flight_at: float = 0.0

    def __repr__(self) -> str:
        return (
            f"ConnectionState({self.provider}/{self.connection}, version={self.version}, "
            f"expires_at={self.expires_at}, error={self.error_code})"
        )

    def remaining(self, now: float) -> float:
        return self.expires_at - now if self.access_token else float("-inf")

    def valid(self, now: float) -> bool:
        """Holds a token that has not expired, whatever DynamoDB's TTL sweeper did."""
        return self.access_token is not None and self.expires_at > now

    def leased(self, now: float) -> bool:
        return self.lease_owner is not None and self.lease_expires_at >= now

    def error(self) -> TokenVendError | None:
        if not self.error_code:
            return None
        return error_from_dict(
            {
                "code": self.error_code,
                "message": self.error_message,
                "retry_after": self.error_retry_after,
            }
        )

    def token_sha256(self) -> str | None:
        return sha256_hex(self.access_token) if self.access_token else None


def _num(value: Any, default: float = 0) -> Any:
    if value is None:
        return default
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def state_from_item(item: dict[str, Any]) -> ConnectionState:
    principals = item.get("allowed_principals")
    retry_after = item.get("error_retry_after")
    refresh_expires = item.get("refresh_expires_at")
    return ConnectionState(
        provider=item["provider"],
        connection=item["connection"],
        access_token=item.get("access_token"),
        token_type=item.get("token_type") or "Bearer",
        scope=item.get("scope"),
        extra={name: _num(value) for name, value in (item.get("extra") or {}).items()},
        expires_at=int(_num(item.get("expires_at"))),
        version=int(_num(item.get("version"))),
        refreshed_at=float(_num(item.get("refreshed_at"))),
        secret_version=item.get("secret_version"),
        allowed_principals=tuple(principals) if principals is not None else None,
        refresh_expires_at=int(_num(refresh_expires)) if refresh_expires is not None else None,
        lease_owner=item.get("lease_owner"),
        lease_expires_at=float(_num(item.get("lease_expires_at"))),
        last_attempt_at=float(_num(item.get("last_attempt_at"))),
        error_code=item.get("error_code"),
        error_message=item.get("error_message"),
        error_permanent=bool(item.get("error_permanent", False)),
        error_secret_version=item.get("error_secret_version"),
        error_retry_after=int(_num(retry_after)) if retry_after is not None else None,
        failing_since=float(_num(item["failing_since"])) if "failing_since" in item else None,
        failures=int(_num(item.get("failures"))),
        next_attempt_at=float(_num(item.get("next_attempt_at"))),
        pending_refresh_token=item.get("pending_refresh_token"),
        pending_refresh_expires_at=(
            int(_num(item["pending_refresh_expires_at"]))
            if item.get("pending_refresh_expires_at") is not None
            else None
        ),
        pending_secret_version=item.get("pending_secret_version"),
        pending_base_sha256=item.get("pending_base_sha256"),
        grant_in_flight=item.get("grant_in_flight"),
        grant_in_flight_at=float(_num(item.get("grant_in_flight_at"))),
    )


def _dec(value: float) -> Decimal:
    return Decimal(str(round(value, 3)))


class TokenStore:
    """DynamoDB access for tokens and leases, through the low-level client."""

    def __init__(self, client: Any, table: str) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._client = client
        self._table = table
        self._ser = TypeSerializer()
        self._de = TypeDeserializer()

    def _key(self, provider: str, connection: str) -> dict[str, Any]:
        return {"provider": {"S": provider}, "connection": {"S": connection}}

    def _values(self, values: dict[str, Any]) -> dict[str, Any]:
        return {name: self._ser.serialize(value) for name, value in values.items()}

    def _item(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {name: self._de.deserialize(value) for name, value in raw.items()}

    def get(
        self, provider: str, connection: str, *, consistent: bool = False, public: bool = False
    ) -> ConnectionState | None:
        """The connection's item; `public` reads only what the vend function may see."""
        extra: dict[str, Any] = {}
        if public:
            extra["ProjectionExpression"] = ", ".join(f"#p{i}" for i in range(len(PUBLIC)))
            extra["ExpressionAttributeNames"] = {f"#p{i}": name for i, name in enumerate(PUBLIC)}
        with aws_call("the token table"):
            answer = self._client.get_item(
                TableName=self._table,
                Key=self._key(provider, connection),
                ConsistentRead=consistent,
                **extra,
            )
        raw = answer.get("Item")
        return state_from_item(self._item(raw)) if raw else None

    def connections(self, provider: str) -> list[ConnectionState]:
        """Every connection of a provider that has an item, without the tokens themselves."""
        aliases = {f"#a{i}": name for i, name in enumerate(LISTING)}
        states: list[ConnectionState] = []
        with aws_call("the token table"):
            paginator = self._client.get_paginator("query")
            pages = paginator.paginate(
                TableName=self._table,
                KeyConditionExpression="#p = :p",
                ExpressionAttributeNames={**aliases, "#p": "provider"},
                ExpressionAttributeValues={":p": {"S": provider}},
                ProjectionExpression=", ".join(aliases),
                ConsistentRead=True,
            )
            for page in pages:
                states.extend(state_from_item(self._item(raw)) for raw in page.get("Items", []))
        return states

    def _update(
        self,
        provider: str,
        connection: str,
        *,
        set_: dict[str, Any],
        remove: tuple[str, ...] = (),
        add: dict[str, Any] | None = None,
        condition: str | None = None,
        values: dict[str, Any] | None = None,
        if_not_exists: tuple[str, ...] = (),
        return_new: bool = False,
    ) -> dict[str, Any] | None:
        """Returns None when the condition failed, else the new item (empty unless asked)."""
        from botocore.exceptions import ClientError

        names: dict[str, str] = {}
        vals: dict[str, Any] = {}
        sets = []
        for i, (name, value) in enumerate(set_.items()):
            names[f"#s{i}"] = name
            vals[f":s{i}"] = value
            if name in if_not_exists:
                sets.append(f"#s{i} = if_not_exists(#s{i}, :s{i})")
            else:
                sets.append(f"#s{i} = :s{i}")
        for i, (name, value) in enumerate((add or {}).items()):
            names[f"#n{i}"] = name
            vals[f":n{i}"] = value
            vals[":zero"] = 0
            sets.append(f"#n{i} = if_not_exists(#n{i}, :zero) + :n{i}")
        removes = [name for name in remove if name not in set_]
        for i, name in enumerate(removes):
            names[f"#r{i}"] = name
        expression = " ".join(
            part
            for part in (
                "SET " + ", ".join(sets) if sets else "",
                "REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes))) if removes else "",
            )
            if part
        )
        kwargs: dict[str, Any] = {"ReturnValues": "ALL_NEW"} if return_new else {}
        if condition:
            kwargs["ConditionExpression"] = condition
            vals.update(values or {})
            names.update(
                {alias: name for alias, name in CONDITION_NAMES.items() if alias in condition}
            )
        if vals:
            kwargs["ExpressionAttributeValues"] = self._values(vals)
        with aws_call("the token table"):
            try:
                answer = self._client.update_item(
                    TableName=self._table,
                    Key=self._key(provider, connection),
                    UpdateExpression=expression,
                    ExpressionAttributeNames=names,
                    **kwargs,
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                    return None
                raise
        return self._item(answer.get("Attributes") or {})

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
        """Take the connection's lease: free or expired, and no attempt within the cool-down."""
        condition = "(attribute_not_exists(#lo) OR #le < :now)"
        values: dict[str, Any] = {":now": _dec(now)}
        if cool_down > 0:
            condition += " AND (attribute_not_exists(#la) OR #la <= :cool)"
            values[":cool"] = _dec(now - cool_down)
        return None is not self._update(
            provider,
            connection,
            set_={
                "lease_owner": owner,
                "lease_expires_at": _dec(now + seconds),
                "last_attempt_at": _dec(now),
            },
            condition=condition,
            values=values,
        )

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
        """Store a new token and release the lease, only while `owner` still holds it.
        Returns the stored state, or None when the lease was lost (nothing written)."""
        set_: dict[str, Any] = {
            "access_token": token.access_token,
            "token_type": token.token_type,
            "expires_at": token.expires_at,
            "refreshed_at": _dec(now),
            "ttl": token.expires_at + TTL_GRACE,
        }
        remove = ["scope", "extra", "allowed_principals", "secret_version", *_HEALTH, *_IN_FLIGHT]
        remove.remove("last_attempt_at")
        if token.scope:
            set_["scope"] = token.scope
        if token.extra:
            set_["extra"] = {
                name: _dec(value) if isinstance(value, float) else value
                for name, value in token.extra.items()
            }
        if secret_version:
            set_["secret_version"] = secret_version
        if allowed_principals is not None:
            set_["allowed_principals"] = list(allowed_principals)
        if token.refresh_expires_at is not None:
            set_["refresh_expires_at"] = token.refresh_expires_at
        item = self._update(
            provider,
            connection,
            set_=set_,
            remove=tuple(remove),
            add={"version": 1},
            condition="#lo = :owner",
            values={":owner": owner},
            return_new=True,
        )
        return state_from_item(item) if item else None

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
        """Remember a failed attempt on the connection and release the lease."""
        set_: dict[str, Any] = {
            "error_code": error.code,
            "error_message": error.message,
            "error_permanent": permanent,
            "failing_since": _dec(now),
            "next_attempt_at": _dec(next_attempt_at),
        }
        if secret_version:
            set_["error_secret_version"] = secret_version
        if error.retry_after is not None:
            set_["error_retry_after"] = error.retry_after
        return None is not self._update(
            provider,
            connection,
            set_=set_,
            remove=(
                "lease_owner",
                "lease_expires_at",
                "error_secret_version",
                "error_retry_after",
                *_IN_FLIGHT,
            ),
            add={"failures": 1},
            if_not_exists=("failing_since",),
            condition="#lo = :owner",
            values={":owner": owner},
        )

    def mark_grant_in_flight(
        self, provider: str, connection: str, owner: str, grant_sha256: str, now: float
    ) -> bool:
        """Note, before a refresh-token grant is sent, which grant is being spent: if the
        attempt dies after the provider answered, the next one knows why the grant fails."""
        return None is not self._update(
            provider,
            connection,
            set_={"grant_in_flight": grant_sha256, "grant_in_flight_at": _dec(now)},
            condition="#lo = :owner",
            values={":owner": owner},
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
        """The fallback place for a rotated refresh token that Secrets Manager would not take,
        with what it is ahead of: the secret's version and that version's refresh token (by
        hash). Whatever later puts another grant into the secret supersedes it."""
        set_: dict[str, Any] = {
            "pending_refresh_token": refresh_token,
            "pending_secret_version": secret_version,
        }
        if base_sha256 is not None:
            set_["pending_base_sha256"] = base_sha256
        if refresh_expires_at is not None:
            set_["pending_refresh_expires_at"] = refresh_expires_at
        return None is not self._update(
            provider,
            connection,
            set_=set_,
            remove=_PENDING,
            condition="#lo = :owner",
            values={":owner": owner},
        )

    def clear_pending_grant(
        self, provider: str, connection: str, owner: str, refresh_token: str
    ) -> bool:
        """Forget the fallback copy once the secret holds it (only that very token)."""
        return None is not self._update(
            provider,
            connection,
            set_={},
            remove=_PENDING,
            condition="#lo = :owner AND #pg = :grant",
            values={":owner": owner, ":grant": refresh_token},
        )

    def set_access(
        self, provider: str, connection: str, allowed_principals: list[str] | None
    ) -> bool:
        """Put the access list of the connection's secret in force on its cached token, at
        once: every later vend checks callers against it. False when there is no item."""
        if allowed_principals is None:
            set_: dict[str, Any] = {}
            remove: tuple[str, ...] = ("allowed_principals",)
        else:
            set_, remove = {"allowed_principals": list(allowed_principals)}, ()
        return None is not self._update(
            provider, connection, set_=set_, remove=remove, condition="attribute_exists(#cn)"
        )

    def expire_token(self, provider: str, connection: str, access_token: str, now: float) -> bool:
        """The provider declared this very token dead: it is never served again, not even
        stale. Only while the item still holds that token."""
        return None is not self._update(
            provider,
            connection,
            set_={"expires_at": int(now)},
            condition="#at = :tok",
            values={":tok": access_token},
        )

    def retire(self, provider: str, connection: str) -> bool:
        """A connection whose secret awaits deletion: its token goes at once (nothing serves
        it again), and so does its outstanding connect link (a restored secret needs a new
        one); its fallback refresh token stays until the secret is gone for good, so that
        restoring the secret loses no grant. False when there is no item."""
        return None is not self._update(
            provider,
            connection,
            set_={},
            remove=(*_TOKEN, "allowed_principals", *_HEALTH, *_IN_FLIGHT, *_LINK),
            condition="attribute_exists(#cn)",
        )

    def release(self, provider: str, connection: str, owner: str) -> bool:
        return None is not self._update(
            provider,
            connection,
            set_={},
            remove=("lease_owner", "lease_expires_at"),
            condition="#lo = :owner",
            values={":owner": owner},
        )

    # -- the connection's latest connect link (refresh/link.py) ---------------------------
    # Not in PUBLIC nor LISTING: only the provider function reads or writes them.

    def set_link(self, provider: str, connection: str, nonce: str, expires_at: int) -> None:
        """Make this link the connection's only working one: an earlier link is superseded."""
        self._update(
            provider,
            connection,
            set_={"link_nonce": nonce, "link_expires_at": expires_at},
        )

    def take_link(self, provider: str, connection: str, nonce: str) -> bool:
        """Consume the link whose nonce this is, once: True for the one caller that did,
        False when it was used already or a newer link superseded it."""
        return None is not self._update(
            provider,
            connection,
            set_={},
            remove=_LINK,
            condition="#ln = :nonce",
            values={":nonce": nonce},
        )

    def delete(self, provider: str, connection: str) -> None:
        with aws_call("the token table"):
            self._client.delete_item(TableName=self._table, Key=self._key(provider, connection))
