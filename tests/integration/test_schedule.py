"""The scheduled run of a provider function, driven with the sample EventBridge event."""

from __future__ import annotations

import time
from dataclasses import replace

import boto3

from support import LambdaContext, Stack, event
from tokenvend.sandbox import Fault
from tokenvend_core.need import Need


def run(stack: Stack, provider: str, context: LambdaContext | None = None) -> dict[str, int]:
    module = stack.provider_functions[provider]
    answer = module.lambda_handler(
        event("provider-schedule.json"), context or LambdaContext(provider)
    )
    assert answer["ok"] is True
    report: dict[str, int] = answer["schedule"]
    return report


def set_expiry(stack: Stack, provider: str, connection: str, seconds: int) -> None:
    boto3.client("dynamodb").update_item(
        TableName=stack.settings.table_name,
        Key={"provider": {"S": provider}, "connection": {"S": connection}},
        UpdateExpression="SET expires_at = :e",
        ExpressionAttributeValues={":e": {"N": str(int(time.time()) + seconds)}},
    )


def test_first_tokens_for_connections_that_have_a_secret_but_no_token(stack: Stack) -> None:
    for name in ("a", "b", "c"):
        stack.connect("oauth2", name)
    report = run(stack, "oauth2")
    assert report["connections"] == 3 and report["refreshed"] == 3
    for name in ("a", "b", "c"):
        state = stack.tokens.get("oauth2", name)
        assert state is not None and state.valid(time.time())
    assert stack.sandbox.calls("oauth2") == 3
    # Nothing is due on the next run.
    report = run(stack, "oauth2")
    assert report["due"] == 0 and stack.sandbox.calls("oauth2") == 3


def test_refreshes_what_would_fall_below_the_lead_before_the_next_run(stack: Stack) -> None:
    for name in ("soon", "later"):
        stack.connect("azure", name)
    run(stack, "azure")
    horizon = stack.settings.refresh_lead + stack.settings.schedule_interval
    set_expiry(stack, "azure", "soon", horizon - 10)
    set_expiry(stack, "azure", "later", horizon + 60)
    before = {n: stack.tokens.get("azure", n) for n in ("soon", "later")}
    report = run(stack, "azure")
    assert report["due"] == 1 and report["refreshed"] == 1
    soon, later = (stack.tokens.get("azure", n) for n in ("soon", "later"))
    assert soon is not None and soon.version == before["soon"].version + 1  # type: ignore[union-attr]
    assert later is not None and later.version == before["later"].version  # type: ignore[union-attr]


def test_permanent_failure_is_skipped_until_the_secret_changes(stack: Stack) -> None:
    stack.connect("dingtalk")
    stack.sandbox.inject("dingtalk", Fault.dingtalk_error("invalid.client"))
    report = run(stack, "dingtalk")
    assert report["failed"] == 1
    state = stack.tokens.get("dingtalk", "demo")
    assert state is not None and state.error_permanent and state.error_code == "provider_rejected"
    assert run(stack, "dingtalk")["skipped"] == 1
    assert stack.sandbox.calls("dingtalk") == 1
    stack.connect("dingtalk")  # new version of the secret
    assert run(stack, "dingtalk")["refreshed"] == 1
    state = stack.tokens.get("dingtalk", "demo")
    assert state is not None and state.error_code is None and state.access_token


def test_a_failing_connection_is_backed_off(stack: Stack) -> None:
    stack.connect("oauth2")
    stack.sandbox.inject("oauth2", *[Fault.html(502)] * 4)
    assert run(stack, "oauth2")["failed"] == 1
    state = stack.tokens.get("oauth2", "demo")
    assert state is not None and state.failures == 1
    assert state.next_attempt_at >= time.time() + stack.settings.schedule_interval - 5
    calls = stack.sandbox.calls("oauth2")
    assert run(stack, "oauth2")["skipped"] == 1
    assert stack.sandbox.calls("oauth2") == calls


def test_orphaned_tokens_are_removed(stack: Stack) -> None:
    stack.connect("oauth2", "gone")
    run(stack, "oauth2")
    boto3.client("secretsmanager").delete_secret(
        SecretId=stack.secrets.name("oauth2", "gone"), ForceDeleteWithoutRecovery=True
    )
    assert run(stack, "oauth2")["removed"] == 1
    assert stack.tokens.get("oauth2", "gone") is None


class Countdown(LambdaContext):
    """A context whose remaining time runs out after `budget` looks."""

    def __init__(self, name: str, budget: int) -> None:
        super().__init__(name)
        self._looks = budget

    def get_remaining_time_in_millis(self) -> int:
        self._looks -= 1
        return 60_000 if self._looks >= 0 else 1_000


def test_nearest_expiries_first_and_the_rest_left_for_the_next_run(stack: Stack) -> None:
    refresher = stack.refreshers["oauth2"]
    refresher.settings = replace(refresher.settings, schedule_concurrency=1)
    names = [f"c{i}" for i in range(5)]
    for name in names:
        stack.connect("oauth2", name)
    run(stack, "oauth2")
    horizon = stack.settings.refresh_lead + stack.settings.schedule_interval
    for offset, name in enumerate(names):
        set_expiry(stack, "oauth2", name, horizon - 100 - offset * 10)  # c4 expires first
    before = {n: stack.tokens.get("oauth2", n).version for n in names}  # type: ignore[union-attr]
    report = run(stack, "oauth2", Countdown("oauth2", budget=2))
    assert report["due"] == 5 and report["refreshed"] == 2 and report["deferred"] == 3
    refreshed = {n for n in names if stack.tokens.get("oauth2", n).version > before[n]}  # type: ignore[union-attr]
    assert refreshed == {"c4", "c3"}
    report = run(stack, "oauth2")
    assert report["refreshed"] == 3


def test_no_time_left_means_no_attempt(stack: Stack) -> None:
    stack.connect("oauth2")
    report = run(stack, "oauth2", LambdaContext("oauth2", timeout_ms=5_000))
    assert report["deferred"] == 1 and stack.sandbox.calls("oauth2") == 0


def test_cool_down_allows_one_attempt(aws: None, sandbox: object) -> None:
    from support import build_stack

    stack = build_stack(sandbox, cool_down=30)  # type: ignore[arg-type]
    stack.connect("oauth2")
    refresher = stack.refreshers["oauth2"]
    first = refresher.refresh("demo", Need(newer_than=0))
    second = refresher.refresh("demo", Need(newer_than=first.version))
    assert second.access_token == first.access_token  # refreshed moments ago: that one
    assert stack.sandbox.calls("oauth2") == 1
