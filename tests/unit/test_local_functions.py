"""The local stack runs the functions the stack creates: a function whose Condition does not
hold for the parameters is not created by CloudFormation, and not run locally either (two
functions of one name under opposite conditions are one function, whichever holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokenvend.local.functions import functions_of
from tokenvend.template import Stack

ROOT = Path(__file__).resolve().parents[2]


def template() -> dict[str, Any]:
    def function(condition: str, description: str) -> dict[str, Any]:
        return {
            "Type": "AWS::Serverless::Function",
            "Condition": condition,
            "Properties": {
                "FunctionName": {"Fn::Sub": "${AWS::StackName}-vend"},
                "CodeUri": "functions/vend/",
                "Handler": "app.lambda_handler",
                "Runtime": "python3.11",
                "Description": description,
            },
        }

    return {
        "Parameters": {"Flavour": {"Type": "String", "Default": "a", "AllowedValues": ["a", "b"]}},
        "Conditions": {
            "A": {"Fn::Equals": [{"Ref": "Flavour"}, "a"]},
            "B": {"Fn::Equals": [{"Ref": "Flavour"}, "b"]},
        },
        "Resources": {"FunctionA": function("A", "a"), "FunctionB": function("B", "b")},
    }


@pytest.mark.parametrize(("flavour", "logical_id"), [("a", "FunctionA"), ("b", "FunctionB")])
def test_only_the_functions_whose_condition_holds_are_run(flavour: str, logical_id: str) -> None:
    stack = Stack(template(), name="tokenvend", region="us-east-1", parameters={"Flavour": flavour})

    found = functions_of(stack, ROOT)

    assert stack.function_ids() == [logical_id]
    assert list(found) == ["tokenvend-vend"]
    assert found["tokenvend-vend"].logical_id == logical_id
    assert [stack.exists(f) for f in ("FunctionA", "FunctionB")] == [
        flavour == "a",
        flavour == "b",
    ]
