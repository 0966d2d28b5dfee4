"""template.yaml as CloudFormation sees it after the SAM transform, with its conditions
evaluated for given parameter values: the roles' statements, the API's routes and policy."""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from tokenvend_core import names

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
PROVIDERS = names.PROVIDERS
# A catalogue with two more deployed providers than the committed one, one of each grant:
# what the template makes for a provider is checked for an added one too.
ADDED = """
[acme]
grant = "client_credentials"
token_url = "https://auth.acme.example/oauth2/token"
required = ["client_id", "client_secret"]

[acme-users]
grant = "authorization_code"
token_url = "https://auth.acme.example/oauth2/token"
required = ["client_id", "client_secret", "redirect_uri"]
optional = ["refresh_token", "refresh_expires_at"]
"""
WITH_ADDED = (*PROVIDERS, "acme", "acme-users")


def function_id(name: str) -> str:
    """The logical ID of the vend function ("vend") or of a provider's function."""
    from tokenvend.catalogue_template import logical_prefix

    return f"{logical_prefix(name)}Function"


FUNCTIONS = {name: function_id(name) for name in ("vend", *PROVIDERS)}


@cache
def _source(added: bool = False) -> dict[str, Any]:
    from cfnlint.decode import decode_str

    if added:
        from tokenvend.catalogue_template import catalogue_text, render

        text = render(ROOT, catalogue_text(ROOT) + ADDED)
    else:
        text = (ROOT / "template.yaml").read_text()
    template, errors = decode_str(text)
    assert not errors, errors
    return json.loads(json.dumps(template, default=str))


def translate(*, added: bool = False, **parameters: str) -> dict[str, Any]:
    """The transformed template (the committed one, or the one the catalogue with ADDED
    makes) with Fn::If resolved for these parameter values."""
    from samtranslator.translator.transform import transform

    template = copy.deepcopy(_source(added))
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if key in props:
                props[key] = "s3://bucket/key"  # as `sam package` leaves them

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    values = {
        name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()
    }
    values.update(parameters)
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    out = transform(template, dict(values), NoManagedPolicies())
    conditions = {
        name: _truth(expr, values, template.get("Conditions", {}))
        for name, expr in template.get("Conditions", {}).items()
    }
    resolved: dict[str, Any] = _resolve(out, conditions)
    # What CloudFormation would create: a resource whose condition is false is not there
    # (one of the two vend functions, as ApiType says; the logs role).
    resolved["Resources"] = {
        name: resource
        for name, resource in resolved["Resources"].items()
        if conditions.get(resource.get("Condition", ""), True)
    }
    return resolved


def _truth(expr: Any, values: dict[str, str], all_conditions: dict[str, Any]) -> bool:
    if isinstance(expr, dict) and len(expr) == 1:
        ((fn, arg),) = expr.items()
        if fn == "Fn::Equals":
            return bool(_value(arg[0], values) == _value(arg[1], values))
        if fn == "Fn::Not":
            return not _truth(arg[0], values, all_conditions)
        if fn == "Fn::And":
            return all(_truth(a, values, all_conditions) for a in arg)
        if fn == "Fn::Or":
            return any(_truth(a, values, all_conditions) for a in arg)
        if fn == "Condition":
            return _truth(all_conditions[arg], values, all_conditions)
    raise AssertionError(f"condition not understood: {expr}")


def _value(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict) and "Ref" in node:
        return values[node["Ref"]]
    return node


def _resolve(node: Any, conditions: dict[str, bool]) -> Any:
    no_value = object()

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            if set(item) == {"Fn::If"}:
                name, yes, no = item["Fn::If"]
                return walk(yes if conditions[name] else no)
            if item == {"Ref": "AWS::NoValue"}:
                return no_value
            out = {}
            for key, value in item.items():
                resolved = walk(value)
                if resolved is not no_value:
                    out[key] = resolved
            return out
        if isinstance(item, list):
            return [w for w in (walk(v) for v in item) if w is not no_value]
        return item

    return walk(node)


def deployed(template: dict[str, Any], stack_name: str, **parameters: str) -> Any:
    """What is left of the intrinsic functions (Ref, Fn::Sub, Fn::Split, ...) resolved as
    one stack of that name resolves them, by the project's own template reader; give the
    parameters the template was translated with."""
    from tokenvend.template import Stack

    stack = Stack(
        template, name=stack_name, region=REGION, account_id=ACCOUNT, parameters=parameters
    )
    return stack


def function_resource(template: dict[str, Any], function: str) -> dict[str, Any]:
    """A function's resource in a translated template: "vend" is whichever of the two vend
    functions ApiType made."""
    resources = template["Resources"]
    if function == "vend" and "VendFunction" not in resources:
        return resources["VendHttpFunction"]  # type: ignore[no-any-return]
    return resources[function_id(function)]  # type: ignore[no-any-return]


def role_of(template: dict[str, Any], function: str) -> dict[str, Any]:
    props = function_resource(template, function)["Properties"]
    role_id = props["Role"]["Fn::GetAtt"][0]
    role: dict[str, Any] = template["Resources"][role_id]["Properties"]
    return role


def statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    found = []
    for policy in role_of(template, function).get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            found.append(statement)
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def actions(statement: dict[str, Any]) -> list[str]:
    return [str(a) for a in as_list(statement.get("Action", []))]


def resources(statement: dict[str, Any]) -> list[Any]:
    return as_list(statement.get("Resource", []))


def show(value: Any) -> str:
    """A resource as text, intrinsics included, for matching."""
    return json.dumps(value, sort_keys=True)
