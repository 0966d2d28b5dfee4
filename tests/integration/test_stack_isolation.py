"""Two stacks of the template in one AWS account: each finds its connections under the
secrets prefix the template gives it (`<stack name>/` unless SecretsPrefix says otherwise),
so one stack's scheduled run never adopts or refreshes the other's connections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest

from support import ROOT, LambdaContext, Stack, create_table, event
from tokenvend.template import Stack as TemplateStack
from tokenvend.template import load_template
from tokenvend_core.aws.store import TokenStore


def template_stack(stack_name: str, **parameters: str) -> TemplateStack:
    return TemplateStack(
        load_template(ROOT / "template.yaml"),
        name=stack_name,
        region="us-east-1",
        parameters=parameters,
    )


def template_prefix(stack_name: str, **parameters: str) -> str:
    """The prefix every function of the stack gets, which is also its SecretsPrefix output."""
    stack = template_stack(stack_name, **parameters)
    prefixes = {stack.function_environment(f)["SECRETS_PREFIX"] for f in stack.function_ids()}
    assert prefixes == {stack.output("SecretsPrefix")}, prefixes
    return prefixes.pop()


def deploy(make_stack: Callable[..., Stack], stack_name: str, **parameters: str) -> Stack:
    """One stack's provider side in the shared moto account: its own token table, and the
    secrets prefix the template resolves for it."""
    table = template_stack(stack_name, **parameters).physical_id("TokenTable")
    ddb = boto3.client("dynamodb")
    if table not in ddb.list_tables()["TableNames"]:
        create_table(ddb, table)
    stack = make_stack(secrets_prefix=template_prefix(stack_name, **parameters), table_name=table)
    stack.tokens = TokenStore(ddb, table)
    for refresher in stack.refreshers.values():
        refresher.tokens = stack.tokens
    return stack


def run(stack: Stack, provider: str) -> dict[str, Any]:
    """One scheduled run of the stack's provider function, from the sample event."""
    module = stack.provider_functions[provider]
    answer = module.lambda_handler(event("provider-schedule.json"), LambdaContext(provider))
    assert answer["ok"] is True
    report: dict[str, Any] = answer["schedule"]
    return report


@pytest.mark.parametrize(
    ("stack_name", "parameters", "prefix"),
    [
        ("tokenvend", {}, "tokenvend/"),
        ("other", {}, "other/"),
        ("other", {"SecretsPrefix": "team-a/"}, "team-a/"),
    ],
)
def test_the_template_gives_each_stack_its_own_prefix_unless_one_is_given(
    stack_name: str, parameters: dict[str, str], prefix: str
) -> None:
    # What `tokenvend local --stack NAME` and a deployed stack's functions both get.
    assert template_prefix(stack_name, **parameters) == prefix


def test_a_scheduled_run_refreshes_only_its_own_stacks_connections(
    make_stack: Callable[..., Stack],
) -> None:
    # Given the default stack and a second one in the same account, each with connections
    first, second = deploy(make_stack, "tokenvend"), deploy(make_stack, "other")
    assert (first.secrets.prefix, second.secrets.prefix) == ("tokenvend/", "other/")
    first.connect("oauth2", "billing")
    first.connect("dingtalk", "corp-a")
    second.connect("oauth2", "crm")
    assert run(first, "oauth2")["refreshed"] == 1
    assert run(first, "dingtalk")["refreshed"] == 1
    billing = first.tokens.get("oauth2", "billing")
    assert billing is not None
    calls = {p: first.sandbox.calls(p) for p in ("oauth2", "dingtalk")}

    # When the second stack's schedules run
    oauth2, dingtalk = run(second, "oauth2"), run(second, "dingtalk")

    # Then each sees only its own connections
    assert (oauth2["connections"], oauth2["refreshed"]) == (1, 1)
    assert (dingtalk["connections"], dingtalk["refreshed"]) == (0, 0)
    assert second.tokens.get("oauth2", "crm") is not None
    assert second.tokens.get("oauth2", "billing") is None
    assert second.tokens.get("dingtalk", "corp-a") is None
    # and the first stack's token endpoints were asked for the second's connection alone
    assert first.sandbox.calls("oauth2") == calls["oauth2"] + 1
    assert first.sandbox.calls("dingtalk") == calls["dingtalk"]
    after = first.tokens.get("oauth2", "billing")
    assert after is not None and after.version == billing.version
    # And the first stack's next run neither adopts the second's connection nor removes its own
    report = run(first, "oauth2")
    assert report["connections"] == 1 and report["removed"] == 0
    assert first.tokens.get("oauth2", "crm") is None


def test_an_explicit_prefix_shared_by_two_stacks_makes_them_refresh_each_others_connections(
    make_stack: Callable[..., Stack],
) -> None:
    # What docs/operations.md warns of: the isolation comes from the prefix alone.
    first = deploy(make_stack, "tokenvend")
    sharing = deploy(make_stack, "other", SecretsPrefix="tokenvend/")
    first.connect("oauth2", "billing")
    assert run(first, "oauth2")["refreshed"] == 1
    calls = first.sandbox.calls("oauth2")

    report = run(sharing, "oauth2")

    assert (report["connections"], report["refreshed"]) == (1, 1)
    assert sharing.tokens.get("oauth2", "billing") is not None
    assert first.sandbox.calls("oauth2") == calls + 1
