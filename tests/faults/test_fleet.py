"""Promise 7: a large fleet refreshed with bounded concurrency inside a run's time budget,
nearest expiries first, the rest left for the next run, never reaching the timeout."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import boto3

from support import LambdaContext, Stack, connection_secret
from tokenvend.sandbox import Fault

FLEET = 120


def put_fleet(stack: Stack, count: int) -> None:
    for i in range(count):
        value = connection_secret(stack.sandbox, "oauth2", f"c{i:04d}")
        value["client_id"] = "fleet-client"
        value["client_secret"] = "fleet-secret-value"
        boto3.client("secretsmanager").create_secret(
            Name=stack.secrets.name("oauth2", f"c{i:04d}"),
            SecretString=json.dumps(value),
        )
    stack.sandbox.register("oauth2", "fleet-client", "fleet-secret-value", scope="read write")


class Clock(LambdaContext):
    """A Lambda context whose remaining time follows the wall clock from a budget."""

    def __init__(self, budget_ms: int) -> None:
        super().__init__("tokenvend-test-oauth2")
        self._until = time.monotonic() + budget_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self._until - time.monotonic()) * 1000)


def test_a_fleet_is_refreshed_with_bounded_concurrency(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    refresher = stack.refreshers["oauth2"]
    refresher.settings = replace(refresher.settings, schedule_concurrency=8)
    put_fleet(stack, FLEET)
    peak = [0, 0]
    lock = threading.Lock()
    original = refresher.refresh

    def counted(*args: object, **kwargs: object) -> object:
        with lock:
            peak[0] += 1
            peak[1] = max(peak[1], peak[0])
        try:
            return original(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                peak[0] -= 1

    refresher.refresh = counted  # type: ignore[method-assign]
    report = stack.call_provider("oauth2", {"action": "schedule"})["schedule"]
    assert report["connections"] == FLEET and report["refreshed"] == FLEET
    assert stack.sandbox.calls("oauth2") == FLEET
    assert 1 < peak[1] <= 8


def test_what_does_not_fit_is_left_for_the_next_run(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(schedule_margin=1, attempt_deadline=1)
    refresher = stack.refreshers["oauth2"]
    refresher.settings = replace(refresher.settings, schedule_concurrency=2)
    put_fleet(stack, 40)
    stack.sandbox.inject(
        "oauth2",
        *[Fault(status=200, body='{"access_token": "slow", "expires_in": 3600}', delay=0.2)] * 40,
    )
    budget_ms = 2000 + 1500  # the margin and one attempt's deadline, plus about 1.5 s of work
    module = stack.provider_functions["oauth2"]
    first = module.lambda_handler({"action": "schedule"}, Clock(budget_ms))["schedule"]
    assert 0 < first["refreshed"] < 40 and first["deferred"] == 40 - first["refreshed"]
    second = module.lambda_handler({"action": "schedule"}, Clock(600_000))["schedule"]
    assert second["due"] == first["deferred"] and second["refreshed"] == first["deferred"]
