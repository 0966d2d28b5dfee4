"""Least privilege, read from template.yaml through the SAM translator."""

from __future__ import annotations

from typing import Any

import pytest
from template_iam import (
    ACCOUNT,
    PROVIDERS,
    REGION,
    WITH_ADDED,
    actions,
    deployed,
    function_id,
    function_resource,
    resources,
    role_of,
    show,
    statements,
    translate,
)

KMS_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# Data-plane services: what reads or changes tokenvend's data or runs its code.
DATA_PLANE = ("dynamodb:", "secretsmanager:", "lambda:", "kms:", "sqs:", "sns:", "s3:")
# Actions AWS offers no resource-level permission for: a "*" is the only way to grant them.
NO_RESOURCE_LEVEL = {"secretsmanager:ListSecrets"}
TELEMETRY_MANAGED = {"AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"}
SECRET_READS = ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret")
LINK_KEY = {"Fn::GetAtt": ["LinkKey", "Arn"]}
# The API's routes (OpenAPI path, method): all IAM-signed but the link flow's callback.
SIGNED_ROUTES = {
    ("/tokens/{provider}/{connection}", "get"),
    ("/tokens/{provider}/{connection}/refresh", "post"),
    ("/connections/{provider}/{connection}/connect", "post"),
}
CALLBACK = ("/connect/callback", "get")


def on_link_key(statement: dict[str, Any]) -> bool:
    return any(show(resource) == show(LINK_KEY) for resource in resources(statement))


def own_secrets(prefix: str, provider: str) -> str:
    """The ARN pattern of one provider's connection secrets under a prefix."""
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{prefix}{provider}/*"


@pytest.fixture(scope="module", params=["aws-managed-keys", "customer-key", "http-api"])
def parameters(request: pytest.FixtureRequest) -> dict[str, str]:
    """Each check, with and without a customer key, and for ApiType HTTP (whose vend function
    is another resource, with the same permissions)."""
    return {
        "aws-managed-keys": {},
        "customer-key": {"KmsKeyArn": KMS_KEY},
        "http-api": {"ApiType": "HTTP"},
    }[request.param]


# The committed catalogue's template, and the one a catalogue with two more providers makes:
# whatever the template gives a provider, an added one gets exactly the same.
@pytest.fixture(scope="module", params=["committed", "with-added-providers"])
def added(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "with-added-providers")


@pytest.fixture(scope="module")
def providers(added: bool) -> tuple[str, ...]:
    return WITH_ADDED if added else PROVIDERS


@pytest.fixture(scope="module")
def functions(providers: tuple[str, ...]) -> tuple[str, ...]:
    return ("vend", *providers)


@pytest.fixture(scope="module")
def authorizing(added: bool) -> set[str]:
    """The providers whose grant is authorization_code: the ones that write secrets."""
    return {"wps365", "acme-users"} if added else {"wps365"}


@pytest.fixture(scope="module")
def template(parameters: dict[str, str], added: bool) -> dict[str, Any]:
    return translate(added=added, **parameters)


def test_each_provider_reads_only_its_own_secrets(
    template: dict[str, Any], parameters: dict[str, str], providers: tuple[str, ...]
) -> None:
    stack = deployed(template, "tokenvend", **parameters)
    for provider in providers:
        granted = []
        for statement in statements(template, provider):
            for action in actions(statement):
                if not action.startswith("secretsmanager:") or action in NO_RESOURCE_LEVEL:
                    continue
                for resource in resources(statement):
                    granted.append(action)
                    assert stack.resolve(resource) == own_secrets("tokenvend/", provider), (
                        provider,
                        action,
                        show(resource),
                    )
        assert set(SECRET_READS) <= set(granted), provider


def test_only_authorizing_providers_write_secrets_and_only_their_own(
    template: dict[str, Any],
    parameters: dict[str, str],
    functions: tuple[str, ...],
    authorizing: set[str],
) -> None:
    writes = ("secretsmanager:PutSecretValue", "secretsmanager:UpdateSecret",
              "secretsmanager:CreateSecret", "secretsmanager:DeleteSecret",
              "secretsmanager:UpdateSecretVersionStage", "secretsmanager:*")  # fmt: skip
    stack = deployed(template, "tokenvend", **parameters)
    for function in functions:
        granted = [
            (action, stack.resolve(resource))
            for s in statements(template, function)
            for action in actions(s)
            if action in writes
            for resource in resources(s)
        ]
        if function in authorizing:
            assert granted and all(a == "secretsmanager:PutSecretValue" for a, _ in granted)
            assert all(r == own_secrets("tokenvend/", function) for _, r in granted)
        else:
            assert granted == [], function


# Stack name, SecretsPrefix, the prefix every permission, the functions and the output use.
PREFIXES = [
    ("tokenvend", "", "tokenvend/"),
    ("other", "", "other/"),
    ("other", "team-a/", "team-a/"),
    ("tokenvend", "team-a/", "team-a/"),
]


@pytest.mark.parametrize(("stack_name", "parameter", "prefix"), PREFIXES)
def test_secret_permissions_follow_the_stack_name_unless_a_prefix_is_given(
    stack_name: str, parameter: str, prefix: str
) -> None:
    # Given a stack of that name, with a customer key so that the key's conditions exist too
    parameters = {"KmsKeyArn": KMS_KEY, "SecretsPrefix": parameter}
    template = translate(**parameters)
    stack = deployed(template, stack_name, **parameters)
    for provider in PROVIDERS:
        # Then each provider's secret permissions name only its own secrets under the prefix
        scoped = []
        for statement in statements(template, provider):
            for action in actions(statement):
                if action.startswith("secretsmanager:") and action not in NO_RESOURCE_LEVEL:
                    scoped += [stack.resolve(r) for r in resources(statement)]
            condition = stack.resolve(statement.get("Condition") or {})
            for operator in condition.values():
                if "kms:EncryptionContext:SecretARN" in operator:
                    scoped.append(operator["kms:EncryptionContext:SecretARN"])
        assert len(scoped) >= 3, provider  # read, describe, and the key's condition
        assert set(scoped) == {own_secrets(prefix, provider)}, provider
    # and every function looks for connections under it, and the stack's output says it
    for function in ("vend", *PROVIDERS):
        variables = function_resource(template, function)["Properties"]["Environment"]["Variables"]
        assert stack.resolve(variables["SECRETS_PREFIX"]) == prefix, function
    assert stack.resolve(template["Outputs"]["SecretsPrefix"]["Value"]) == prefix


def test_vend_has_no_secret_access_and_invokes_only_provider_functions(
    template: dict[str, Any], providers: tuple[str, ...]
) -> None:
    vend = statements(template, "vend")
    assert not [a for s in vend for a in actions(s) if a.startswith("secretsmanager:")]
    invoke = [s for s in vend if any(a.startswith("lambda:") for a in actions(s))]
    assert [a for s in invoke for a in actions(s)] == ["lambda:InvokeFunction"]
    targets = sorted(r["Fn::GetAtt"][0] for s in invoke for r in resources(s))
    assert targets == sorted(function_id(p) for p in providers)
    table = [s for s in vend if any(a.startswith("dynamodb:") for a in actions(s))]
    assert [a for s in table for a in actions(s)] == ["dynamodb:GetItem"]
    # And only the attributes a caller may be given.
    attributes = table[0]["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]
    from tokenvend_core.aws.store import PUBLIC

    assert sorted(attributes) == sorted(PUBLIC)
    assert "pending_refresh_token" not in attributes


def test_each_provider_writes_only_its_own_items_in_the_table(
    template: dict[str, Any], providers: tuple[str, ...]
) -> None:
    for provider in providers:
        table = [
            s
            for s in statements(template, provider)
            if any(a.startswith("dynamodb:") for a in actions(s))
        ]
        assert table
        for statement in table:
            keys = statement["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"]
            assert keys == [provider]


def test_no_data_plane_action_has_a_wildcard_resource(
    template: dict[str, Any], functions: tuple[str, ...]
) -> None:
    for function in functions:
        for statement in statements(template, function):
            data = [
                a
                for a in actions(statement)
                if a.startswith(DATA_PLANE) and a not in NO_RESOURCE_LEVEL
            ]
            assert not [a for a in data if a.endswith("*")], (function, data)
            if data:
                for resource in resources(statement):
                    assert resource != "*", (function, data)
        managed = {
            show(arn).split("/")[-1].strip('"}')
            for arn in role_of(template, function).get("ManagedPolicyArns", [])
        }
        assert managed <= TELEMETRY_MANAGED, (function, managed)


def test_list_secrets_is_the_only_wildcard_and_reveals_no_values(
    template: dict[str, Any], functions: tuple[str, ...]
) -> None:
    for function in functions:
        for statement in statements(template, function):
            if "*" in resources(statement):
                assert actions(statement) == ["secretsmanager:ListSecrets"], function


def test_every_route_is_iam_signed_but_the_link_callback(
    template: dict[str, Any], parameters: dict[str, str]
) -> None:
    http = parameters.get("ApiType") == "HTTP"
    resources = template["Resources"]
    assert ("TokenHttpApi" in resources, "TokenApi" in resources) == (http, not http)
    body = resources["TokenHttpApi" if http else "TokenApi"]["Properties"]["Body"]
    schemes = body["components"]["securitySchemes"]
    assert schemes["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    routes = {
        (path, method): spec
        for path, methods in body["paths"].items()
        for method, spec in methods.items()
    }
    assert set(routes) == SIGNED_ROUTES | {CALLBACK}
    for route, spec in routes.items():
        # The callback: no authorizer at all (a browser brings no signature); every other
        # route, AWS_IAM.
        expected = [{"NONE": []}] if route == CALLBACK else [{"AWS_IAM": []}]
        assert spec.get("security") == expected, route
        # Each is served by the vend function, and nothing else.
        integration = spec["x-amazon-apigateway-integration"]
        uri = show(integration["uri"])
        assert ("VendHttpFunction.Arn" if http else "VendFunction.Arn") in uri, route
        assert integration.get("payloadFormatVersion") == ("2.0" if http else None)
    assert "NONE" not in schemes  # SAM's marker for "no authorizer", not a scheme


def test_the_link_callback_is_throttled_on_its_own(
    template: dict[str, Any], parameters: dict[str, str]
) -> None:
    if parameters.get("ApiType") == "HTTP":
        (http_stage,) = [
            r["Properties"]
            for r in template["Resources"].values()
            if r["Type"] == "AWS::ApiGatewayV2::Stage"
        ]
        route = http_stage["RouteSettings"]["GET /connect/callback"]
        assert (route["ThrottlingBurstLimit"], route["ThrottlingRateLimit"]) == (20, 10)
        default = http_stage["DefaultRouteSettings"]
        assert route["ThrottlingRateLimit"] < default["ThrottlingRateLimit"]
        return
    (stage,) = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::ApiGateway::Stage"
    ]
    settings = {(m["ResourcePath"], m["HttpMethod"]): m for m in stage["MethodSettings"]}
    # A stage's method settings spell the path's "/" as "~1".
    callback = settings[("/~1connect~1callback", "GET")]
    assert (callback["ThrottlingBurstLimit"], callback["ThrottlingRateLimit"]) == (20, 10)
    everything = settings[("/*", "*")]
    assert callback["ThrottlingRateLimit"] < everything["ThrottlingRateLimit"]


def test_only_authorizing_providers_may_use_the_link_key_and_only_for_macs(
    template: dict[str, Any],
    parameters: dict[str, str],
    functions: tuple[str, ...],
    authorizing: set[str],
) -> None:
    stack = deployed(template, "tokenvend", **parameters)
    for function in functions:
        on_key = [s for s in statements(template, function) if on_link_key(s)]
        variables = function_resource(template, function)["Properties"]["Environment"]["Variables"]
        if function in authorizing:
            (statement,) = on_key
            assert set(actions(statement)) == {"kms:GenerateMac", "kms:VerifyMac"}
            assert resources(statement) == [LINK_KEY] and "Condition" not in statement
            assert variables["LINK_KEY_ID"] == {"Ref": "LinkKey"}
            assert stack.resolve(statement["Resource"]).startswith(
                f"arn:aws:kms:{REGION}:{ACCOUNT}:key/"
            )
        else:
            assert on_key == [], function
            assert "LINK_KEY_ID" not in variables, function
        # No other KMS grant names the link key, nor any key but the customer's.
        for statement in statements(template, function):
            if any(a.startswith("kms:") for a in actions(statement)) and not on_link_key(statement):
                assert show(resources(statement)) in (
                    show([KMS_KEY]),
                    show([{"Ref": "KmsKeyArn"}]),
                ), (function, statement)


def test_the_vend_function_has_no_use_of_any_key_but_reading_the_table(
    template: dict[str, Any], parameters: dict[str, str]
) -> None:
    # The callback's code path (API Gateway -> vend -> provider function) can reach neither
    # a secret nor the link key except through the provider function.
    kms = [s for s in statements(template, "vend") if any(a.startswith("kms:") for a in actions(s))]
    if "KmsKeyArn" not in parameters:
        assert kms == []
    for statement in kms:
        assert set(actions(statement)) == {"kms:Decrypt", "kms:DescribeKey"}
        assert "dynamodb" in show(statement["Condition"]["StringEquals"]["kms:ViaService"])
        assert not on_link_key(statement)


def test_the_link_key_is_an_hmac_key_whose_use_iam_decides(template: dict[str, Any]) -> None:
    key = template["Resources"]["LinkKey"]
    assert key["Type"] == "AWS::KMS::Key"
    props = key["Properties"]
    assert (props["KeySpec"], props["KeyUsage"]) == ("HMAC_256", "GENERATE_VERIFY_MAC")
    stack = deployed(template, "tokenvend")
    (statement,) = stack.resolve(props["KeyPolicy"])["Statement"]
    # AWS's default key policy: the account administers it and delegates use to IAM, so
    # that only the roles granted it above may use it; no one is named directly.
    assert statement["Effect"] == "Allow" and "Condition" not in statement
    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}


@pytest.mark.parametrize("added", [False, True], ids=["committed", "with-added-providers"])
def test_kms_permissions_exist_exactly_with_a_customer_key(added: bool) -> None:
    plain = translate(added=added)
    keyed = translate(added=added, KmsKeyArn=KMS_KEY)
    functions = ("vend", *(WITH_ADDED if added else PROVIDERS))
    for function in functions:
        assert not [
            a
            for s in statements(plain, function)
            if not on_link_key(s)
            for a in actions(s)
            if a.startswith("kms:")
        ]
    expected = {
        "vend": {"kms:Decrypt", "kms:DescribeKey"},
        "wps365": {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"},
        "acme-users": {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"},
    }
    for function in functions:
        kms = [
            s
            for s in statements(keyed, function)
            if any(a.startswith("kms:") for a in actions(s)) and not on_link_key(s)
        ]
        granted = {a for s in kms for a in actions(s)}
        assert granted == expected.get(
            function, {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"}
        )
        for statement in kms:
            assert resources(statement) == [KMS_KEY] or show(resources(statement)) == show(
                [{"Ref": "KmsKeyArn"}]
            )
            assert "kms:ViaService" in show(statement["Condition"])
        via_secrets = [s for s in kms if "secretsmanager" in show(s["Condition"])]
        if function == "vend":
            assert via_secrets == []
        else:
            (statement,) = via_secrets
            assert set(actions(statement)) == (
                {"kms:Decrypt", "kms:GenerateDataKey"}
                if function in ("wps365", "acme-users")
                else {"kms:Decrypt"}
            )
            resolved = deployed(keyed, "tokenvend", KmsKeyArn=KMS_KEY).resolve(
                statement["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"]
            )
            assert resolved == own_secrets("tokenvend/", function)
    table = keyed["Resources"]["TokenTable"]["Properties"]["SSESpecification"]
    assert table["SSEType"] == "KMS" and show(table["KMSMasterKeyId"]) in (
        show(KMS_KEY),
        show({"Ref": "KmsKeyArn"}),
    )
    assert (
        "KMSMasterKeyId" not in plain["Resources"]["TokenTable"]["Properties"]["SSESpecification"]
    )
