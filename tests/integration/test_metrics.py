"""The metrics each flow emits (Powertools EMF on stdout), and the alarms of template.yaml
checked against them: every alarm watches a metric name and dimensions the code emits, or
an AWS metric of a resource the template defines, and has a runbook entry."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import PROVIDERS, ROOT, AwsFault, Stack
from tokenvend.sandbox import Fault

Emitted = dict[str, set[frozenset[tuple[str, str]]]]


def emitted(text: str) -> Emitted:
    """Metric name -> the dimension sets it was emitted with."""
    found: Emitted = {}
    for line in text.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        record = json.loads(line)
        for directive in record["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "tokenvend"
            for dimension_set in directive["Dimensions"]:
                dims = frozenset((name, str(record[name])) for name in dimension_set)
                for metric in directive["Metrics"]:
                    found.setdefault(metric["Name"], set()).add(dims)
    return found


@pytest.fixture
def capture(capfd: pytest.CaptureFixture[str]) -> Iterator[Any]:
    def read() -> Emitted:
        return emitted(capfd.readouterr().out)

    yield read


def test_vend_flows_emit_hits_misses_and_served_lifetime(stack: Stack, capture: Any) -> None:
    stack.connect("dingtalk")
    capture()
    stack.vend("GET", "dingtalk")  # miss
    first = capture()
    assert "VendMiss" in first and "RefreshSuccess" in first and "TokenEndpointLatency" in first
    stack.vend("GET", "dingtalk")  # memory
    memory = capture()
    assert memory["VendMemoryHit"] == {
        frozenset({("service", "tokenvend"), ("provider", "dingtalk")})
    }
    assert "ServedTokenRemaining" in memory
    stack.vendor.forget()
    stack.vend("GET", "dingtalk")  # table
    assert "VendTableHit" in capture()


def test_refresh_failures_emit_by_kind(stack: Stack, capture: Any) -> None:
    stack.connect("azure")
    stack.sandbox.inject("azure", *[Fault.plain(503)] * 4)
    stack.call_provider("azure", {"action": "refresh", "connection": "demo"})
    transient = capture()
    assert "RefreshTransientFailure" in transient and "TokenEndpointRetry" in transient
    stack.connect("azure", "bad")
    stack.sandbox.inject("azure", Fault.azure_error(7000215, "invalid_client", 401))
    stack.call_provider("azure", {"action": "refresh", "connection": "bad"})
    assert "RefreshPermanentFailure" in capture()


def test_schedule_emits_health_gauges_and_grant_lifetimes(stack: Stack, capture: Any) -> None:
    stack.connect("wps365")
    stack.authorize()
    capture()
    stack.call_provider("wps365", {"action": "schedule"})
    out = capture()
    for name in (
        "FailingConnections",
        "PermanentErrorConnections",
        "ScheduleDeferred",
        "RefreshGrantMinRemaining",
    ):
        assert out[name] == {frozenset({("service", "tokenvend"), ("provider", "wps365")})}, name
    assert out["RefreshGrantRemaining"] == {
        frozenset({("service", "tokenvend"), ("provider", "wps365"), ("connection", "demo")})
    }


# -- the alarms ---------------------------------------------------------------------------


def template() -> dict[str, Any]:
    from cfnlint.decode import decode_str

    data, errors = decode_str((ROOT / "template.yaml").read_text())
    assert not errors
    return json.loads(json.dumps(data, default=str))


def alarms() -> dict[str, dict[str, Any]]:
    resources = template()["Resources"]
    return {
        k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"
    }


@pytest.fixture(scope="module")
def everything_emitted() -> Emitted:
    """Every flow once, for every provider: what the code really emits."""
    import io
    from contextlib import redirect_stdout

    import boto3
    from moto import mock_aws

    from support import ENV, build_stack, create_table
    from tokenvend.sandbox import Sandbox

    buffer = io.StringIO()
    with (
        pytest.MonkeyPatch.context() as patch,
        mock_aws(),
        Sandbox() as sandbox,
        redirect_stdout(buffer),
    ):
        for name, value in ENV.items():
            patch.setenv(name, value)
        create_table(boto3.client("dynamodb"))
        stack = build_stack(sandbox)
        for provider in PROVIDERS:
            stack.connect(provider)
        stack.authorize()
        AwsFault(stack.secrets._client, "PutSecretValue", "ServiceUnavailable")
        stack.refreshers["wps365"]._sleep = lambda _: None
        for provider in PROVIDERS:
            stack.vend("GET", provider)
            stack.vend("POST", provider, body=None)
            stack.call_provider(provider, {"action": "schedule"})
        # And the fallback place failing too: the grant is lost.
        AwsFault(
            stack.tokens._client,
            "UpdateItem",
            "InternalServerError",
            when=lambda params: (
                "pending_refresh_token" in str(params.get("ExpressionAttributeNames"))
            ),
        )
        stack.vend("POST", "wps365", body=None)
    return emitted(buffer.getvalue())


def test_every_alarm_watches_what_the_code_emits_or_a_resource_of_the_template(
    everything_emitted: Emitted,
) -> None:
    resources = template()["Resources"]
    found = alarms()
    assert len(found) >= 9
    for name, alarm in found.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        stats = [
            branch
            for m in alarm["Metrics"]
            if "MetricStat" in m
            for branch in api_type_branches(m["MetricStat"]["Metric"])
        ]
        assert stats, name
        for metric in stats:
            dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            if metric["Namespace"] == "tokenvend":
                assert metric["MetricName"] in everything_emitted, (name, metric["MetricName"])
                want = frozenset(dims.items())
                assert want in everything_emitted[metric["MetricName"]], (
                    name,
                    metric["MetricName"],
                    dims,
                )
                continue
            for value in dims.values():
                ref = json.dumps(value)
                refs = re.findall(r'"(?:Ref|Fn::GetAtt)": \[?"([A-Za-z0-9]+)', ref) + re.findall(
                    r"\$\{([A-Za-z0-9]+)", ref
                )
                if "Stage" in dims and value == dims.get("Stage"):
                    assert value == {"Ref": "StageName"}
                    continue
                if "ApiName" in dims and value == dims["ApiName"]:
                    api = resources["TokenApi"]["Properties"]["Name"]
                    assert value == api, name
                    continue
                if value == {"Fn::Sub": "${AWS::StackName}-vend"}:
                    # whichever vend function ApiType makes: both have that name
                    for vend in ("VendFunction", "VendHttpFunction"):
                        assert resources[vend]["Properties"]["FunctionName"] == value
                    continue
                assert refs and all(r in resources for r in refs), (name, value)
        used = {m["Id"] for m in alarm["Metrics"] if "MetricStat" in m}
        expression = next(m["Expression"] for m in alarm["Metrics"] if m.get("ReturnData", True))
        assert used <= set(re.findall(r"[a-z][A-Za-z0-9_]*", expression)), name


def api_type_branches(metric: dict[str, Any]) -> list[dict[str, Any]]:
    """A metric as each ApiType makes it: the API's alarm names the REST or the HTTP API's
    metric (`Fn::If: [HttpApi, …, …]`); every other metric is the same in both."""

    def pick(value: Any, branch: int) -> Any:
        if isinstance(value, dict) and "Fn::If" in value:
            condition, *choices = value["Fn::If"]
            assert condition == "HttpApi"
            return choices[branch]
        return value

    return [{key: pick(value, branch) for key, value in metric.items()} for branch in (0, 1)]


def test_every_alarm_has_a_runbook_entry() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{2,3} (.+)$", runbook, flags=re.M)
    }
    for name, alarm in alarms().items():
        slug = alarm["AlarmDescription"].rsplit("docs/runbook.md#", 1)[1]
        assert slug in anchors, (name, slug)
        assert json.dumps(alarm["AlarmName"]).endswith(f'-{slug}"}}'), name


def test_the_dashboard_shows_every_alarm() -> None:
    body, variables = template()["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert set(variables) == {"ApiDimension", "ApiDimensionValue", "Api4xx", "Api5xx"}
    for name in alarms():
        assert f"${{{name}.Arn}}" in body
    json.loads(re.sub(r"\$\{[^}]+\}", "x", body))  # valid JSON once substituted


def test_root_path() -> None:
    assert Path(ROOT / "template.yaml").is_file()
