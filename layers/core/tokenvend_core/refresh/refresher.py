"""Refreshing a connection's token: what a provider function does.

One refresh attempt per connection at a time, across all containers: the attempt runs under
a lease in the token table, taken with a conditional write that also enforces the cool-down.
Whoever finds the lease taken waits briefly and reads the holder's result. Permanent
failures are remembered against the secret's version, so that only a new version retries.

`Refresher` holds what a provider function refreshes with (its provider, settings, stores,
token endpoint, fan-out, clocks) and its ways in; the work lives in the modules named for
it:

- `lease`: the lease loop, and waiting on whoever holds the lease;
- `attempt`: one attempt against the token endpoint, under the lease;
- `failures`: a failed attempt, classified and remembered with its backoff;
- `rotation`: keeping a rotated refresh token, settling a fallback copy of one;
- `authorization`: redeeming an authorization code;
- `schedule`: the scheduled run: planning, fan-out, the bounded pool, health gauges.

Those modules take the Refresher and read its collaborators on every use, never a copy:
tests and benchmarks replace them (`settings`, `tokens`, `endpoint`, `_sleep`) on a built
one, and the schedule calls `refresh` through it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from tokenvend_core.audit import Trail
from tokenvend_core.aws.secrets import ConnectionSecret, SecretStore
from tokenvend_core.aws.store import TokenStore
from tokenvend_core.catalogue.spec import ProviderSpec, validate_secret
from tokenvend_core.errors import Internal, InvalidRequest, UnknownConnection
from tokenvend_core.refresh import authorization, lease, schedule
from tokenvend_core.refresh.endpoint import TokenEndpoint
from tokenvend_core.refresh.schedule import Fanout, ScheduleReport
from tokenvend_core.settings import Settings

__all__ = ["Fanout", "Refresher", "ScheduleReport"]


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
        audit: Trail | None = None,
    ) -> None:
        self.spec = spec
        # Where this function's audit records go (attempts, redemptions, scheduled runs).
        self.audit = audit if audit is not None else Trail()
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

    # -- the ways in: each is the function of the module named for it, called as a method --

    refresh = lease.refresh
    authorize = authorization.authorize
    run_schedule = schedule.run_schedule
    refresh_batch = schedule.refresh_batch

    # -- what the modules share --------------------------------------------------------

    def read_secret(self, connection: str) -> tuple[ConnectionSecret, dict[str, Any]]:
        """The connection's secret, and its value checked against the provider's fields."""
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

    def new_owner(self) -> str:
        """A lease owner of its own for one way in: this container's name and a nonce."""
        return f"{self._owner}:{uuid.uuid4().hex}"

    def ids(self, connection: str) -> dict[str, str]:
        """What every log line about the connection carries."""
        return {"provider": self.provider, "connection": connection}
