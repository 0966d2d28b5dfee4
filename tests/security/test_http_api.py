"""ApiType HTTP gives up the resource policy and private endpoints, and nothing else of the
vend function's: the stack refuses the parameters that would mean nothing with it, and its
vend function has exactly the REST one's permissions."""

from __future__ import annotations

import json

from template_iam import _source, role_of, translate


def test_an_http_api_stack_refuses_the_resource_policys_parameters() -> None:
    rules = _source()["Rules"]["HttpApiHasNoResourcePolicy"]
    assert rules["RuleCondition"] == {"Fn::Equals": [{"Ref": "ApiType"}, "HTTP"]}
    refused = {
        assertion["Assert"]["Fn::Equals"][0]["Ref"]
        for assertion in rules["Assertions"]
        if assertion["Assert"]["Fn::Equals"][1] == ""
    }
    assert refused == {"AllowedAccountIds", "AllowedOrganizationId", "VpcEndpointIds"}
    for assertion in rules["Assertions"]:
        assert "ApiType REST" in assertion["AssertDescription"]


def test_the_http_vend_function_has_exactly_the_rest_ones_permissions() -> None:
    rest, http = translate(), translate(ApiType="HTTP")

    def policies(template: dict) -> str:  # type: ignore[type-arg]
        role = role_of(template, "vend")
        documents = [policy["PolicyDocument"] for policy in role["Policies"]]
        return json.dumps([documents, sorted(map(str, role["ManagedPolicyArns"]))])

    assert policies(http) == policies(rest)
    rest_fn, http_fn = rest["Resources"]["VendFunction"], http["Resources"]["VendHttpFunction"]
    for key in ("FunctionName", "Environment", "Timeout", "LoggingConfig", "Layers"):
        assert http_fn["Properties"][key] == rest_fn["Properties"][key], key


def test_the_outputs_and_alarms_follow_the_api_type() -> None:
    for api_type, api in (("REST", "TokenApi"), ("HTTP", "TokenHttpApi")):
        template = translate(ApiType=api_type)
        url = json.dumps(template["Outputs"]["ApiUrl"]["Value"])
        assert f"${{{api}}}" in url
        alarm = json.dumps(template["Resources"]["VendServerErrorAlarm"]["Properties"]["Metrics"])
        if api_type == "HTTP":
            assert '"5xx"' in alarm and '"ApiId"' in alarm and "TokenHttpApi" in alarm
        else:
            assert '"5XXError"' in alarm and '"ApiName"' in alarm
