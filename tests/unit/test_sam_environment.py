"""SAM CLI's environment file (.tokenvend/sam-env.json) and what the template declares for it:
every function gets every variable its template declares, pointed at the local stack, and
the variables the file overrides are declared, empty, for deployment. No Docker: the file's
content, and what boto3 and tokenvend local make of an empty value."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from tokenvend.local import samenv
from tokenvend.local.functions import (
    LocalFunction,
    environment,
    functions_of,
    set_by_the_stack,
)
from tokenvend.template import Stack, load_template
from tokenvend_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
AWS_URL, LAMBDA_URL, BRIDGE = "http://172.17.0.1:4566", "http://172.17.0.1:3001", "172.17.0.1"
# What the file overrides: it points the functions at the local stack.
OVERRIDDEN = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA", "PLAIN_HTTP_HOSTS")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def local_stack(template: dict[str, Any], **parameters: str) -> Stack:
    return Stack(template, name="tokenvend", region="us-east-1", parameters=parameters)


def file_content(stack: Stack) -> dict[str, dict[str, str]]:
    functions = functions_of(stack, ROOT).values()
    return samenv.container_environment(
        functions, aws_url=AWS_URL, lambda_url=LAMBDA_URL, plain_http_hosts=[BRIDGE]
    )


def test_every_function_gets_every_variable_its_template_declares(
    template: dict[str, Any],
) -> None:
    # Given the template's functions as tokenvend local reads them, with a parameter set
    stack = local_stack(template, CoolDownSeconds="7")
    # When the file is made for them
    content = file_content(stack)
    # Then it names every function by its logical id, in SAM CLI's --env-vars format
    assert set(content) == set(stack.function_ids())
    for logical_id, variables in content.items():
        declared = stack.function_environment(logical_id)
        # with exactly the variables declared (SAM passes a function no others)
        assert set(variables) == set(declared), logical_id
        assert all(isinstance(value, str) for value in variables.values())
        # pointed at the local stack through the address a container reaches it at
        assert variables["AWS_ENDPOINT_URL"] == AWS_URL
        assert variables["PLAIN_HTTP_HOSTS"] == BRIDGE
        # and with the values the local stack's own copy of the function has
        for name, value in declared.items():
            if name not in OVERRIDDEN:
                assert variables[name] == value, (logical_id, name)
        assert variables["TABLE_NAME"] == stack.physical_id("TokenTable")
        assert variables["SECRETS_PREFIX"] == "tokenvend/"
        assert variables["COOL_DOWN_SECONDS"] == "7"


def test_the_vend_function_gets_the_lambda_endpoint_and_the_providers_their_own(
    template: dict[str, Any],
) -> None:
    content = file_content(local_stack(template))
    vend = content["VendFunction"]
    assert vend["AWS_ENDPOINT_URL_LAMBDA"] == LAMBDA_URL
    assert vend["PROVIDER_FUNCTION_PREFIX"] == "tokenvend-"
    providers = {
        variables["PROVIDER"]: logical_id
        for logical_id, variables in content.items()
        if "PROVIDER" in variables
    }
    assert set(providers) == {"aspose", "wps365", "azure", "dingtalk", "oauth2"}
    for provider, logical_id in providers.items():
        variables = content[logical_id]
        assert "AWS_ENDPOINT_URL_LAMBDA" not in variables  # a provider invokes no function
        # its own fan-out queue, by the name tokenvend local created it under
        queue = logical_id.removesuffix("Function") + "RefreshQueue"
        assert variables["FANOUT_QUEUE_URL"].endswith(f"/tokenvend-{queue}"), provider


def test_the_file_is_written_whole_under_the_directory_given(
    template: dict[str, Any], tmp_path: Path
) -> None:
    content = file_content(local_stack(template))
    path = samenv.write(tmp_path, content)
    assert path == tmp_path / ".tokenvend" / "sam-env.json"
    assert json.loads(path.read_text()) == content
    assert [p.name for p in path.parent.iterdir()] == ["sam-env.json"]  # no partial file left
    # Written again, it is replaced
    samenv.write(tmp_path, {"VendFunction": {}})
    assert json.loads(path.read_text()) == {"VendFunction": {}}


def test_an_ipv6_bridge_address_is_bracketed_in_urls() -> None:
    assert samenv.endpoint("fd00::1", 4566) == "http://[fd00::1]:4566"
    assert samenv.endpoint("172.17.0.1", 4566) == "http://172.17.0.1:4566"


# -- what the template declares ---------------------------------------------------------------


def test_the_template_declares_every_overridden_variable_empty(template: dict[str, Any]) -> None:
    # Given the template as deployed (default parameters)
    stack = local_stack(template)
    for logical_id in stack.function_ids():
        declared = stack.function_environment(logical_id)
        # Then the endpoint and the plain-HTTP hosts are declared, empty
        assert declared["AWS_ENDPOINT_URL"] == "", logical_id
        assert declared["PLAIN_HTTP_HOSTS"] == "", logical_id
        assert declared.get("AWS_ENDPOINT_URL_LAMBDA", "") == "", logical_id
        # and a deployed function allows plain HTTP to no host
        settings = Settings.from_env(declared)
        assert settings.plain_http_hosts == frozenset()
        assert settings.allow_http_loopback is False
    assert "AWS_ENDPOINT_URL_LAMBDA" in stack.function_environment("VendFunction")


def test_botocore_ignores_an_empty_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the environment a deployed function gets from the template
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", "")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "cn-north-1")
    session = boto3.session.Session()
    # Then its clients go to AWS's own endpoints
    assert session.client("dynamodb").meta.endpoint_url == (
        "https://dynamodb.cn-north-1.amazonaws.com.cn"
    )
    assert session.client("lambda").meta.endpoint_url == (
        "https://lambda.cn-north-1.amazonaws.com.cn"
    )


def test_the_architecture_is_a_parameter_of_the_functions_and_the_layer(
    template: dict[str, Any],
) -> None:
    parameter = template["Parameters"]["Architecture"]
    assert parameter["Default"] == "arm64"
    assert sorted(parameter["AllowedValues"]) == ["arm64", "x86_64"]
    for arch in ("arm64", "x86_64"):
        stack = local_stack(template, Architecture=arch)
        assert stack.resolve(template["Globals"]["Function"]["Architectures"]) == [arch]
        layer = template["Resources"]["CoreLayer"]
        assert stack.resolve(layer["Properties"]["CompatibleArchitectures"]) == [arch]
        assert stack.resolve(layer["Metadata"]["BuildArchitecture"]) == arch
    for logical_id in local_stack(template).function_ids():
        props = template["Resources"][logical_id]["Properties"]
        assert "Architectures" not in props, logical_id  # all from Globals


# -- tokenvend local: a template's value never replaces the stack's own ------------------------


def test_an_empty_template_value_never_overrides_the_local_stacks_endpoints(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the local stack's own settings, process-wide
    own = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        "AWS_ENDPOINT_URL_LAMBDA": "http://127.0.0.1:3001",
        "PLAIN_HTTP_HOSTS": BRIDGE,
        "ALLOW_HTTP_LOOPBACK": "true",
    }
    for name, value in own.items():
        monkeypatch.setenv(name, value)
    functions = functions_of(local_stack(template), ROOT)
    for function in functions.values():
        # and a function whose template declares them empty
        assert function.environment["AWS_ENDPOINT_URL"] == ""
        # When the function's environment is laid over the process's, as it is loaded
        with environment(function.lambda_environment()):
            seen = dict(os.environ)
        # Then the stack's own values are in force, and the template's others too
        for name, value in own.items():
            assert seen[name] == value, (function.name, name)
        assert seen["TABLE_NAME"] == function.environment["TABLE_NAME"]
        assert seen["AWS_LAMBDA_FUNCTION_NAME"] == function.name
        settings = Settings.from_env(seen)
        assert settings.plain_http_hosts == frozenset({BRIDGE})


def test_a_non_empty_template_endpoint_does_not_override_them_either(tmp_path: Path) -> None:
    # Given a template whose function names endpoints of its own (a VPC endpoint, say)
    function = LocalFunction(
        logical_id="Fn",
        name="tokenvend-fn",
        arn="arn:aws:lambda:us-east-1:123456789012:function:tokenvend-fn",
        source=tmp_path / "app.py",
        handler_name="handler",
        timeout=3,
        memory_size=128,
        environment={
            "AWS_ENDPOINT_URL": "https://vpce-1.example.com",
            "AWS_ENDPOINT_URL_DYNAMODB": "https://vpce-2.example.com",
            "PLAIN_HTTP_HOSTS": "elsewhere.example.com",
            "TABLE_NAME": "t",
        },
    )
    # Then tokenvend local runs it against its own AWS, never the ones it names
    variables = function.lambda_environment()
    assert not [name for name in variables if set_by_the_stack(name)]
    assert variables["TABLE_NAME"] == "t"
