"""In-memory stand-ins for the token table and Secrets Manager, with a fixed latency per call.

The token table is `tokenvend_core.aws.store.TokenStore` itself with its DynamoDB calls
done on a dict (so the lease, the fencing on `lease_owner`, the version counter are the
store's own code, not a copy); Secrets Manager is the methods of
`tokenvend_core.aws.secrets.SecretStore` that the refresh path uses. Both sleep a fixed time
per AWS call (per page for listings) outside their lock, as concurrent requests to DynamoDB
and Secrets Manager overlap. What the fleet benchmark measures is tokenvend's
own work and its concurrency, not moto's speed.

Pages: ListSecrets returns at most 100 secrets a page; a DynamoDB Query at most 1 MB, taken
here as 4,000 items of the projected schedule listing (~250 bytes each).
"""

from __future__ import annotations

import math
import operator
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tokenvend_core.aws.secrets import ConnectionSecret
from tokenvend_core.aws.store import (
    CONDITION_NAMES,
    LISTING,
    PUBLIC,
    ConnectionState,
    TokenStore,
    state_from_item,
)

LATENCY = 0.005
SECRETS_PAGE = 100
QUERY_PAGE = 4000


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


class FakeTokenStore(_Latency, TokenStore):
    """The real TokenStore over a dict of items: every write method is TokenStore's own,
    down to the update it describes (what it sets, removes, adds and on what condition);
    only the one call that would go to DynamoDB is done here, on the dict, under a lock, as
    DynamoDB applies a conditional write to one item atomically. One AWS call per call."""

    def __init__(self, latency: float = LATENCY) -> None:
        TokenStore.__init__(self, client=None, table="bench")
        _Latency.__init__(self, latency)
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
        return [state_from_item({k: v for k, v in i.items() if k in LISTING}) for i in items]

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
        """UpdateItem on the dict, as DynamoDB does it: None when the condition fails."""
        self._call("UpdateItem")
        with self._lock:
            key = (provider, connection)
            current = self.items.get(key)
            if condition and not _holds(condition, current or {}, values or {}):
                return None
            item = dict(current or {"provider": provider, "connection": connection})
            for name, value in set_.items():
                if name not in if_not_exists or name not in item:
                    item[name] = value
            for name, value in (add or {}).items():
                item[name] = item.get(name, 0) + value
            for name in remove:
                if name not in set_:
                    item.pop(name, None)
            self.items[key] = item
            return dict(item) if return_new else {}

    def delete(self, provider: str, connection: str) -> None:
        self._call("DeleteItem")
        with self._lock:
            self.items.pop((provider, connection), None)


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FUNCTION = re.compile(r"(attribute_exists|attribute_not_exists)\((#\w+)\)")
_COMPARISON = re.compile(r"(#\w+) (=|<>|<=|<|>=|>) (:\w+)")


def _holds(condition: str, item: dict[str, Any], values: dict[str, Any]) -> bool:
    """A ConditionExpression of the forms TokenStore writes (clauses joined by AND, each a
    term or a parenthesised OR of terms; a term is attribute_(not_)exists or a comparison
    with a value), against an item; anything else is an error, not a guess."""

    def term(text: str) -> bool:
        if found := _FUNCTION.fullmatch(text):
            present = CONDITION_NAMES[found[2]] in item
            return present if found[1] == "attribute_exists" else not present
        if found := _COMPARISON.fullmatch(text):
            name = CONDITION_NAMES[found[1]]
            return name in item and _COMPARISONS[found[2]](item[name], values[found[3]])
        raise ValueError(f"bench.fakes cannot evaluate {text!r} in {condition!r}")

    def clause(text: str) -> bool:
        if text.startswith("(") and text.endswith(")"):
            return any(term(part.strip()) for part in text[1:-1].split(" OR "))
        return term(text)

    return all(clause(text.strip()) for text in condition.split(" AND "))


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
