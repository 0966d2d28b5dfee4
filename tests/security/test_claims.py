"""Claims of docs/security.md that the other security tests would not notice breaking: what
the vend function reads of the table and may read, the table's own protection, plain HTTP in
a deployed stack, the provider roles' reach, granted scopes, and the token request's trace."""

from __future__ import annotations

import fnmatch
import json
import sys
import types
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest
from template_iam import (
    FUNCTIONS,
    PROVIDERS,
    actions,
    as_list,
    deployed,
    role_of,
    show,
    statements,
    translate,
)

from support import CALLER, CLIENT_SECRET, TABLE, AwsFault, Stack
from tokenvend.sandbox import Fault
from tokenvend_core.aws.store import PUBLIC
from tokenvend_core.settings import Settings
from tokenvend_core.vend import runtime

KMS_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture(scope="module", params=["aws-managed-key", "customer-key"])
def parameters(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"KmsKeyArn": KMS_KEY} if request.param == "customer-key" else {}


@pytest.fixture(scope="module")
def template(parameters: dict[str, str]) -> dict[str, Any]:
    return translate(**parameters)


# -- what the vend function reads of the table --------------------------------------------


def test_the_vend_functions_reads_project_the_public_attributes(stack: Stack) -> None:
    # Given a wps365 connection whose rotated refresh token sits in the fallback place, and
    # Secrets Manager still refusing it
    stack.connect("wps365")
    stack.authorize()
    stack.refreshers["wps365"]._sleep = lambda _: None
    AwsFault(stack.secrets._client, "PutSecretValue", "ServiceUnavailable")
    assert stack.vend("POST", "wps365", body=None)[0] == 200
    item = stack.tokens.get("wps365", "demo", consistent=True)
    assert item is not None and item.pending_refresh_token
    # And the vend function's own objects, as its container builds them
    vendor = runtime.build_vendor(
        Settings(table_name=TABLE, provider_function_prefix="tokenvend-test-")
    )
    vendor._invoker = stack.invoker
    reads: list[dict[str, Any]] = []
    vendor._tokens._client.meta.events.register(
        "before-parameter-build.dynamodb.GetItem", lambda params, **_: reads.append(params)
    )
    # When it serves the token from the table, and forces a refresh (a read, an invocation,
    # a consistent read)
    served = [
        vendor.get("wps365", "demo", 300, CALLER),
        vendor.refresh("wps365", "demo", None, CALLER),
    ]
    # Then every read it made asked for the public attributes by name, and nothing else
    assert len(reads) == 3
    for params in reads:
        names = params.get("ExpressionAttributeNames", {})
        asked = {
            names.get(part.strip(), part.strip())
            for part in params["ProjectionExpression"].split(",")
        }
        assert asked == set(PUBLIC)
    # and what it got holds no fallback refresh token
    assert [vended.source for vended in served] == ["table", "provider"]
    assert all(vended.state.pending_refresh_token is None for vended in served)
    item = stack.tokens.get("wps365", "demo", consistent=True)
    assert item is not None and item.pending_refresh_token  # it was there all along


def test_the_vend_functions_table_reads_must_select_specific_attributes(
    template: dict[str, Any],
) -> None:
    table = [
        s
        for s in statements(template, "vend")
        if any(a.startswith("dynamodb:") for a in actions(s))
    ]
    assert table
    for statement in table:
        condition = statement["Condition"]
        selects = [
            as_list(values["dynamodb:Select"])
            for operator, values in condition.items()
            if "dynamodb:Select" in values
        ]
        assert selects == [["SPECIFIC_ATTRIBUTES"]], show(condition)
        (operator,) = (op for op, values in condition.items() if "dynamodb:Select" in values)
        assert operator in ("StringEquals", "StringEqualsIfExists"), operator


# -- the table's own protection ---------------------------------------------------------------


def test_the_table_has_point_in_time_recovery_and_is_encrypted_with_kms(
    template: dict[str, Any], parameters: dict[str, str]
) -> None:
    table = template["Resources"]["TokenTable"]["Properties"]
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    sse = table["SSESpecification"]
    assert sse["SSEEnabled"] is True and sse["SSEType"] == "KMS"
    key = sse.get("KMSMasterKeyId")
    if "KmsKeyArn" in parameters:
        assert deployed(template, "tokenvend", **parameters).resolve(key) == KMS_KEY
    else:
        assert key is None  # DynamoDB's AWS-managed key, aws/dynamodb


# -- plain HTTP in a deployed stack -----------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_deployed_function_allows_plain_http(
    function: str, make_stack: Callable[..., Stack]
) -> None:
    template = translate()
    variables = template["Resources"][FUNCTIONS[function]]["Properties"]["Environment"]["Variables"]
    env = {
        name: str(deployed(template, "tokenvend").resolve(value))
        for name, value in variables.items()
    }
    # The template leaves every plain-HTTP allowance empty or unset
    assert env.get("ALLOW_HTTP_LOOPBACK", "") == ""
    assert env.get("PLAIN_HTTP_HOSTS", "") == ""
    assert {name: value for name, value in env.items() if "HTTP" in name and value} == {}
    settings = Settings.from_env(env)
    http = {f.name: getattr(settings, f.name) for f in fields(Settings) if "http" in f.name}
    assert http and not any(http.values()), http
    if function == "vend":
        return
    # So the provider function, with those settings, sends nothing over plain http, not even
    # to loopback (where the sandbox listens)
    stack = make_stack(**http)
    stack.connect(function)
    status, body, _ = stack.vend("GET", function)
    assert status == 500 and "https" in body["error"]["message"], body
    assert stack.sandbox.calls(function) == 0


# -- what a provider function's role cannot do --------------------------------------------------

# Invoking functions or the API, changing the API, changing IAM or taking another role.
FORBIDDEN = ("lambda", "execute-api", "apigateway", "iam", "sts")


def _grants_forbidden(action: str) -> bool:
    service, _, _ = action.lower().partition(":")
    return action == "*" or any(fnmatch.fnmatchcase(name, service) for name in FORBIDDEN)


def test_a_provider_role_cannot_invoke_functions_or_change_the_api_or_iam(
    template: dict[str, Any],
) -> None:
    # (the check itself knows a forbidden grant in any spelling)
    for action in ("lambda:InvokeFunction", "Lambda:*", "iam:PassRole", "apigateway:PATCH",
                   "execute-api:Invoke", "sts:AssumeRole", "*", "*:*", "i*:Put*"):  # fmt: skip
        assert _grants_forbidden(action), action
    for provider in PROVIDERS:
        role_id = template["Resources"][FUNCTIONS[provider]]["Properties"]["Role"]["Fn::GetAtt"][0]
        found = list(statements(template, provider))
        # Policies attached to the role from outside it count too
        for resource in template["Resources"].values():
            if resource["Type"] in (
                "AWS::IAM::Policy",
                "AWS::IAM::ManagedPolicy",
                "AWS::IAM::RolePolicy",
            ):
                props = resource["Properties"]
                roles = as_list(props.get("Roles", [])) + as_list(props.get("RoleName", []))
                if {"Ref": role_id} in roles:
                    found += as_list(props["PolicyDocument"]["Statement"])
        assert found, provider
        for statement in found:
            if statement.get("Effect") == "Deny":
                continue
            assert "NotAction" not in statement, (provider, statement)
            granted = [a for a in actions(statement) if _grants_forbidden(a)]
            assert granted == [], (provider, granted)
        managed = {
            show(arn).split("/")[-1].strip('"}')
            for arn in role_of(template, provider).get("ManagedPolicyArns", [])
        }
        assert managed <= {"AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"}, managed
        assert "PermissionsBoundary" not in role_of(template, provider)


# -- granted scopes ------------------------------------------------------------------------------

REQUESTED = "read write"  # the oauth2 connection's scope in support.connection_secret
OWN_SECRET = f"{CLIENT_SECRET}-oauth2-demo"


@pytest.mark.parametrize(
    ("granted", "shown"),
    [
        ("read", "read"),  # a narrower grant is passed on as it is
        (f"read {OWN_SECRET}", REQUESTED),
        (f"read {OWN_SECRET.upper()}", REQUESTED),
        ("read\nwrite", REQUESTED),
        ("read\x1b[2Jwrite", REQUESTED),
        ("read " + "x" * 2000, REQUESTED),
        (["read", "write"], REQUESTED),
    ],
    ids=["fit", "secret", "secret-upper-case", "two-lines", "control", "too-long", "not-text"],
)
def test_a_granted_scope_unfit_to_show_is_replaced_by_the_requested_one(
    stack: Stack, granted: Any, shown: str
) -> None:
    stack.connect("oauth2")
    answer = {
        "access_token": "at-scoped",
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": granted,
    }
    stack.sandbox.inject("oauth2", Fault(status=200, body=json.dumps(answer)))
    status, body, _ = stack.vend("GET", "oauth2")
    assert status == 200 and body["access_token"] == "at-scoped"
    assert body["scope"] == shown
    state = stack.tokens.get("oauth2", "demo", consistent=True)
    assert state is not None and state.scope == shown


# -- the token request's trace -------------------------------------------------------------------


class Subsegment:
    def __init__(self, name: str, namespace: str) -> None:
        self.name, self.namespace = name, namespace
        self.http: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}

    def put_http_meta(self, key: str, value: Any) -> None:
        self.http[key] = value

    def add_fault_flag(self) -> None:
        self.metadata["fault"] = True

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        self.metadata[f"{namespace}.{key}"] = value


class Recorder:
    """What xray_requests.traced asks of the X-Ray SDK's recorder."""

    def __init__(self) -> None:
        self.subsegments: list[Subsegment] = []

    def begin_subsegment(self, name: str, namespace: str = "local") -> Subsegment:
        self.subsegments.append(Subsegment(name, namespace))
        return self.subsegments[-1]

    def end_subsegment(self) -> None:
        pass


def test_a_token_requests_trace_leaves_out_the_token_urls_own_query_string(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a process that traces, and a token URL that carries a query string of its own
    recorder = Recorder()
    core = types.ModuleType("aws_xray_sdk.core")
    core.xray_recorder = recorder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aws_xray_sdk.core", core)
    base = stack.sandbox.token_url("oauth2")
    stack.connect("oauth2", token_url=f"{base}?api-version=2&tenant_hint=corp-a")
    # When a token is fetched
    status, _, _ = stack.vend("GET", "oauth2")
    assert status == 200
    # Then the request went with its query string, and its trace shows the URL without it
    assert stack.sandbox.requests("oauth2")[-1].query == {
        "api-version": "2",
        "tenant_hint": "corp-a",
    }
    (traced,) = [s for s in recorder.subsegments if s.namespace == "remote"]
    assert traced.name == "127.0.0.1"
    assert traced.http == {"method": "POST", "url": base, "status": 200}
