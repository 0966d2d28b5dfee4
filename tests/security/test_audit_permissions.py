"""The audit trail's log groups, read from template.yaml through the SAM translator: each
function may write its audit records and its own log, and no other log group; none may read
or change the trail; both groups keep the stack's retention and key; the API's access log
is JSON with the fields the trail needs. Each role's statements, with the logging policy SAM
attaches beside them, are judged by the IAM policy engine the local stack uses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from template_iam import ACCOUNT, PROVIDERS, REGION, deployed, role_of, statements, translate

from tokenvend.local.moto_iam import Effect, evaluate

KMS_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# AWS's managed policy AWSLambdaBasicExecutionRole, which SAM gives every function's role.
BASIC_EXECUTION = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "*",
        }
    ],
}
WRITES = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
READS_AND_CHANGES = (
    "logs:GetLogEvents", "logs:FilterLogEvents", "logs:StartQuery", "logs:GetQueryResults",
    "logs:DescribeLogStreams", "logs:DeleteLogStream", "logs:DeleteLogGroup",
    "logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy", "logs:AssociateKmsKey",
    "logs:DisassociateKmsKey", "logs:PutSubscriptionFilter", "logs:CreateExportTask",
)  # fmt: skip
STACK = "tokenvend"


def group(name: str) -> str:
    return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}"


def stream(name: str) -> str:
    return f"{group(name)}:log-stream:fn/2026/11/30/abc"


AUDIT = f"/tokenvend/{STACK}/audit"
ACCESS = f"/tokenvend/{STACK}/access"


@pytest.fixture(scope="module", params=["aws-managed-keys", "customer-key", "http-api"])
def parameters(request: pytest.FixtureRequest) -> dict[str, str]:
    return {
        "aws-managed-keys": {},
        "customer-key": {"KmsKeyArn": KMS_KEY},
        "http-api": {"ApiType": "HTTP"},
    }[request.param]


@pytest.fixture(scope="module")
def template(parameters: dict[str, str]) -> dict[str, Any]:
    return translate(**parameters)


def allowed(template: dict[str, Any], function: str, action: str, resource: str) -> bool:
    """Whether the function's role may: an explicit Deny wins, then any Allow."""
    stack = deployed(template, STACK)
    assert "AWSLambdaBasicExecutionRole" in json.dumps(role_of(template, function))
    judged = [stack.resolve(s) for s in statements(template, function)]
    judged += BASIC_EXECUTION["Statement"]
    effects = [evaluate(s, action, resource, {}, where=function) for s in judged]
    return Effect.DENY not in effects and Effect.ALLOW in effects


def own_log(function: str) -> str:
    return f"/aws/lambda/{STACK}-{function}"


@pytest.mark.parametrize("function", ["vend", *PROVIDERS])
def test_each_function_writes_its_audit_records_and_its_own_log(
    template: dict[str, Any], function: str
) -> None:
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert allowed(template, function, action, stream(AUDIT)), action
        assert allowed(template, function, action, group(AUDIT)), action
        assert allowed(template, function, action, stream(own_log(function))), action


@pytest.mark.parametrize("function", ["vend", *PROVIDERS])
def test_no_function_writes_any_other_log_group(template: dict[str, Any], function: str) -> None:
    others = [own_log(name) for name in ("vend", *PROVIDERS) if name != function]
    for name in [*others, ACCESS, "/aws/lambda/someone-else", "/tokenvend/other/audit"]:
        for action in WRITES:
            assert not allowed(template, function, action, stream(name)), (action, name)
            assert not allowed(template, function, action, group(name)), (action, name)


@pytest.mark.parametrize("function", ["vend", *PROVIDERS])
def test_no_function_reads_or_changes_the_trail(template: dict[str, Any], function: str) -> None:
    for action in READS_AND_CHANGES:
        for resource in (group(AUDIT), stream(AUDIT), group(ACCESS)):
            assert not allowed(template, function, action, resource), (action, resource)


def test_both_log_groups_keep_the_stacks_retention_and_key(
    template: dict[str, Any], parameters: dict[str, str]
) -> None:
    stack = deployed(template, STACK, **parameters)
    for logical_id, name in (("AuditLog", AUDIT), ("ApiAccessLog", ACCESS)):
        props = stack.resolve(template["Resources"][logical_id]["Properties"])
        assert props["LogGroupName"] == name
        assert props["RetentionInDays"] == "90"  # LogRetentionDays' default
        assert props.get("KmsKeyId") == parameters.get("KmsKeyArn"), logical_id
    outputs = template["Outputs"]
    assert outputs["AuditLogGroup"]["Value"] == {"Ref": "AuditLog"}
    assert outputs["ApiAccessLogGroup"]["Value"] == {"Ref": "ApiAccessLog"}


def test_every_function_is_told_where_the_audit_log_group_is(template: dict[str, Any]) -> None:
    functions = [
        props["Properties"]
        for props in template["Resources"].values()
        if props["Type"] == "AWS::Lambda::Function"
    ]
    assert len(functions) == 1 + len(PROVIDERS)
    for props in functions:
        assert props["Environment"]["Variables"]["AUDIT_LOG_GROUP"] == {"Ref": "AuditLog"}


def test_the_access_log_is_json_with_the_caller_and_never_a_query_string(
    template: dict[str, Any], parameters: dict[str, str]
) -> None:
    http = parameters.get("ApiType") == "HTTP"
    kind = "AWS::ApiGatewayV2::Stage" if http else "AWS::ApiGateway::Stage"
    (stage,) = [r for r in template["Resources"].values() if r["Type"] == kind]
    setting = stage["Properties"]["AccessLogSettings" if http else "AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLog", "Arn"]}
    fields = json.loads(setting["Format"])
    assert fields == {
        "requestId": "$context.requestId",
        "time": "$context.requestTime",
        "caller": "$context.identity.userArn",
        "sourceIp": "$context.identity.sourceIp",
        "method": "$context.httpMethod",
        "path": "$context.path",
        # the HTTP API names its route by its key ("GET /tokens/{provider}/{connection}")
        "resource": "$context.routeKey" if http else "$context.resourcePath",
        "status": "$context.status",
        "latencyMs": "$context.responseLatency",
        "protocol": "$context.protocol",
    }


def test_api_gateway_gets_its_logs_role_unless_the_account_has_one() -> None:
    made = translate()["Resources"]
    assert made["ApiGatewayAccount"]["Properties"]["CloudWatchRoleArn"] == {
        "Fn::GetAtt": ["ApiGatewayLogsRoleForAccount", "Arn"]
    }
    # not with an account that has one, nor for an HTTP API (which has a role of its own)
    for parameters in ({"ApiGatewayLogsRole": "existing"}, {"ApiType": "HTTP"}):
        resources = translate(**parameters)["Resources"]
        assert "ApiGatewayAccount" not in resources, parameters
        assert "ApiGatewayLogsRoleForAccount" not in resources, parameters
