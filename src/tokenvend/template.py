"""Reading template.yaml: the one description of the stack, also for the local stack and the
tests, which create their resources from it rather than from a second copy."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Tag:
    """An intrinsic function as written (!Ref X, !Sub "...", !GetAtt A.B, ...)."""

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value

    def __repr__(self) -> str:
        return f"!{self.name} {self.value!r}"


def find_template(start: Path | None = None) -> Path:
    """template.yaml in this directory or above, else the one of this checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "template.yaml").is_file():
            return folder / "template.yaml"
    if (ROOT / "template.yaml").is_file():
        return ROOT / "template.yaml"
    raise FileNotFoundError("template.yaml not found: run from the tokenvend checkout")


def load_template(path: Path | None = None) -> dict[str, Any]:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Tag:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if suffix == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return Tag(suffix, value)

    Loader.add_multi_constructor("!", construct)
    text = (path or find_template()).read_text("utf-8")
    # A SafeLoader subclass that only adds CloudFormation's tags as plain data.
    data = yaml.load(text, Loader=Loader)  # noqa: S506  # nosec B506
    if not isinstance(data, dict):
        raise ValueError("template.yaml is not a mapping")
    return data


def table_definition(template: dict[str, Any], logical_id: str = "TokenTable") -> dict[str, Any]:
    """CreateTable arguments for the template's table (its literal properties)."""
    props = template["Resources"][logical_id]["Properties"]
    return {
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }


def ttl_attribute(template: dict[str, Any], logical_id: str = "TokenTable") -> str | None:
    spec = template["Resources"][logical_id]["Properties"].get("TimeToLiveSpecification") or {}
    return spec.get("AttributeName") if spec.get("Enabled") else None


# -- the stack as deployed: parameters, conditions and intrinsic functions resolved ------------

ACCOUNT_ID = "123456789012"  # moto's default account
_PSEUDO_PARTITION = "aws"
_URL_SUFFIX = "amazonaws.com"
_NO_VALUE: Any = type("NoValue", (), {"__repr__": lambda self: "AWS::NoValue"})()
_SUB_RE = re.compile(r"\$\{(!?)([^}]*)\}")
SERVERLESS_FUNCTION = "AWS::Serverless::Function"
LOG_GROUP = "AWS::Logs::LogGroup"


class TemplateError(ValueError):
    """The template asks for something this reader cannot resolve, or a parameter is bad."""


class Stack:
    """One stack of the template, as CloudFormation would resolve it: parameter values
    (defaults and overrides, checked against their constraints), conditions, and the
    intrinsic functions the template uses (Ref, Fn::Sub, Fn::GetAtt, Fn::If, Fn::Equals,
    Fn::Not, Fn::And, Fn::Or, Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap).

    Physical names follow what the template sets (FunctionName, TableName, QueueName,
    LogGroupName) and otherwise
    `<stack>-<LogicalId>`, a readable stand-in for CloudFormation's generated names; a
    resource whose id its service chooses (a KMS key's) has the one `register` gave, once
    the resource is created."""

    def __init__(
        self,
        template: dict[str, Any],
        *,
        name: str,
        region: str,
        account_id: str = ACCOUNT_ID,
        parameters: Mapping[str, str] | None = None,
    ) -> None:
        self.template = template
        self.name = name
        self.region = region
        self.account_id = account_id
        self.resources: dict[str, Any] = template.get("Resources") or {}
        self.parameters = _parameter_values(template.get("Parameters") or {}, parameters or {})
        self._conditions: dict[str, bool] = {}
        self._registered: dict[str, str] = {}
        for condition in template.get("Conditions") or {}:
            self.condition(condition)

    # -- names ------------------------------------------------------------------------------

    def resource_type(self, logical_id: str) -> str:
        return str(self._resource(logical_id).get("Type", ""))

    def exists(self, logical_id: str) -> bool:
        """Whether CloudFormation creates the resource with these parameters: it has no
        Condition, or its Condition holds."""
        condition = self._resource(logical_id).get("Condition")
        return condition is None or self.condition(str(condition))

    def register(self, logical_id: str, physical_id: str) -> None:
        """The physical id of a resource as created, where its service chose it (a KMS
        key's id): what !Ref of it gives from now on."""
        self._resource(logical_id)
        self._registered[logical_id] = physical_id

    def physical_id(self, logical_id: str) -> str:
        """What !Ref of a resource gives."""
        if logical_id in self._registered:
            return self._registered[logical_id]
        kind = self.resource_type(logical_id)
        props = self._resource(logical_id).get("Properties") or {}
        if kind in (SERVERLESS_FUNCTION, "AWS::Lambda::Function") and "FunctionName" in props:
            return str(self.resolve(props["FunctionName"]))
        if kind == "AWS::DynamoDB::Table" and "TableName" in props:
            return str(self.resolve(props["TableName"]))
        if kind == "AWS::SQS::Queue" and "QueueName" in props:
            return str(self.resolve(props["QueueName"]))
        if kind == LOG_GROUP and "LogGroupName" in props:
            return str(self.resolve(props["LogGroupName"]))
        if kind in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            return self._arn("lambda", f"layer:{self.name}-{logical_id}:1")
        return f"{self.name}-{logical_id}"

    def arn(self, logical_id: str) -> str:
        """What !GetAtt X.Arn gives."""
        kind = self.resource_type(logical_id)
        name = self.physical_id(logical_id)
        if kind in (SERVERLESS_FUNCTION, "AWS::Lambda::Function"):
            return self._arn("lambda", f"function:{name}")
        if kind == "AWS::DynamoDB::Table":
            return self._arn("dynamodb", f"table/{name}")
        if kind == "AWS::SQS::Queue":
            return self._arn("sqs", name)
        if kind == "AWS::SNS::Topic":
            return self._arn("sns", name)
        if kind == "AWS::KMS::Key":
            return self._arn("kms", f"key/{name}")
        if kind == LOG_GROUP:  # CloudFormation's Arn of a log group ends in ":*"
            return self._arn("logs", f"log-group:{name}:*")
        if kind.startswith("AWS::Serverless::LayerVersion"):
            return name
        raise TemplateError(f"no Arn for {logical_id} ({kind}) in this reader")

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:{_PSEUDO_PARTITION}:{service}:{self.region}:{self.account_id}:{resource}"

    def _resource(self, logical_id: str) -> dict[str, Any]:
        resource = self.resources.get(logical_id)
        if not isinstance(resource, dict):
            raise TemplateError(f"no resource {logical_id} in the template")
        return resource

    # -- intrinsic functions ----------------------------------------------------------------

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::StackName": self.name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": _PSEUDO_PARTITION,
            "AWS::URLSuffix": _URL_SUFFIX,
            "AWS::StackId": (
                f"arn:{_PSEUDO_PARTITION}:cloudformation:{self.region}:{self.account_id}"
                f":stack/{self.name}/local"
            ),
        }
        if name in pseudo:
            return pseudo[name]
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            if self.resource_type(name) == "AWS::SQS::Queue":  # a queue's Ref is its URL
                return f"https://sqs.{self.region}.{_URL_SUFFIX}/{self.account_id}/" + (
                    self.physical_id(name)
                )
            if self.resource_type(name) == "AWS::SNS::Topic":
                return self.arn(name)
            return self.physical_id(name)
        raise TemplateError(f"!Ref {name}: no such parameter or resource")

    def get_att(self, logical_id: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(logical_id)
        if attribute == "KeyId" and self.resource_type(logical_id) == "AWS::KMS::Key":
            return self.physical_id(logical_id)
        if attribute in ("QueueName", "TopicName", "Name"):
            return self.physical_id(logical_id)
        raise TemplateError(f"!GetAtt {logical_id}.{attribute} is not known to this reader")

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.template.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"no condition {name} in the template")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    def resolve(self, value: Any) -> Any:
        """The value with every intrinsic function evaluated; what resolves to
        AWS::NoValue is left out (None at the top)."""
        resolved = self._resolve(value)
        return None if resolved is _NO_VALUE else resolved

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, Tag):
            return self._intrinsic(value.name, value.value)
        if isinstance(value, dict):
            if len(value) == 1:
                (key, arg), *_ = value.items()
                if key == "Ref":
                    return self._intrinsic("Ref", arg)
                if key == "Condition" and isinstance(arg, str):
                    return self.condition(arg)
                if key.startswith("Fn::"):
                    return self._intrinsic(key[4:], arg)
            items = ((key, self._resolve(item)) for key, item in value.items())
            return {key: item for key, item in items if item is not _NO_VALUE}
        if isinstance(value, list):
            return [item for item in map(self._resolve, value) if item is not _NO_VALUE]
        return value

    def _intrinsic(self, name: str, arg: Any) -> Any:
        if name == "Ref":
            return self.ref(str(self.resolve(arg)))
        if name == "GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else self.resolve(arg)
            return self.get_att(str(parts[0]), str(parts[1]))
        if name == "Sub":
            return self._sub(arg)
        if name == "Condition":
            return self.condition(str(arg))
        if name == "If":
            condition, when_true, when_false = arg
            return self._resolve(when_true if self.condition(str(condition)) else when_false)
        if name == "Equals":
            left, right = (_text(self.resolve(item)) for item in arg)
            return left == right
        if name == "Not":
            return not self.resolve(arg[0])
        if name == "And":
            return all(self.resolve(item) for item in arg)
        if name == "Or":
            return any(self.resolve(item) for item in arg)
        if name == "Join":
            delimiter, items = arg
            return str(delimiter).join(_text(self.resolve(item)) for item in self.resolve(items))
        if name == "Select":
            index, items = arg
            return self.resolve(items)[int(self.resolve(index))]
        if name == "Split":
            delimiter, text = arg
            return _text(self.resolve(text)).split(str(delimiter))
        if name == "FindInMap":
            mapping, key, sub_key = (_text(self.resolve(item)) for item in arg)
            return self.resolve(self.template["Mappings"][mapping][key][sub_key])
        raise TemplateError(f"the intrinsic function {name} is not known to this reader")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            text, variables = arg, {}

        def fill(match: re.Match[str]) -> str:
            literal, expression = match.group(1), match.group(2)
            if literal:
                return "${" + expression + "}"
            if expression in variables:
                return _text(variables[expression])
            if "." in expression and expression.split(".", 1)[0] in self.resources:
                logical_id, attribute = expression.split(".", 1)
                return self.get_att(logical_id, attribute)
            return _text(self.ref(expression))

        return _SUB_RE.sub(fill, str(text))

    # -- outputs ----------------------------------------------------------------------------

    def output(self, name: str) -> str:
        """An output's value, as `aws cloudformation describe-stacks` would list it: what the
        command line reads from a deployed stack (e.g. SecretsPrefix, `<stack name>/` unless
        the parameter gives a prefix)."""
        spec = (self.template.get("Outputs") or {}).get(name)
        if not isinstance(spec, dict) or "Value" not in spec:
            raise TemplateError(f"no output {name} in the template")
        if "Condition" in spec and not self.condition(str(spec["Condition"])):
            raise TemplateError(f"the output {name} does not exist with these parameters")
        return _text(self.resolve(spec["Value"]))

    # -- functions --------------------------------------------------------------------------

    def function_ids(self) -> list[str]:
        """The logical ids of every AWS::Serverless::Function the stack creates (`exists`:
        a function under a Condition that does not hold is none of its functions), in
        template order."""
        return [
            logical_id
            for logical_id, resource in self.resources.items()
            if isinstance(resource, dict)
            and resource.get("Type") == SERVERLESS_FUNCTION
            and self.exists(logical_id)
        ]

    def function_property(self, logical_id: str, name: str, default: Any = None) -> Any:
        """A function's property, falling back on Globals.Function as SAM does."""
        props = self._resource(logical_id).get("Properties") or {}
        if name in props:
            return self.resolve(props[name])
        globals_ = (self.template.get("Globals") or {}).get("Function") or {}
        return self.resolve(globals_[name]) if name in globals_ else default

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Globals' variables merged with the function's own, resolved to strings."""
        globals_ = (self.template.get("Globals") or {}).get("Function") or {}
        props = self._resource(logical_id).get("Properties") or {}
        merged: dict[str, Any] = {}
        for source in (globals_, props):
            variables = (source.get("Environment") or {}).get("Variables") or {}
            merged.update(variables)
        return {key: _text(self.resolve(value)) for key, value in merged.items()}

    def function_events(self, logical_id: str, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """(event name, resolved properties) of a function's events of one type."""
        props = self._resource(logical_id).get("Properties") or {}
        found = []
        for event_name, event in (props.get("Events") or {}).items():
            if isinstance(event, dict) and event.get("Type") == kind:
                found.append((event_name, self.resolve(event.get("Properties") or {})))
        return found


def _text(value: Any) -> str:
    """A value as CloudFormation puts it into a string: numbers and booleans as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TemplateError(f"expected a string, got {type(value).__name__}")


def _parameter_values(declared: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"unknown parameter(s): {', '.join(unknown)}")
    values: dict[str, str] = {}
    for name, spec in declared.items():
        spec = spec or {}
        if name in overrides:
            value = str(overrides[name])
        elif "Default" in spec:
            value = _text(spec["Default"])
        else:
            raise TemplateError(f"parameter {name} has no default: give it a value")
        _check_parameter(name, spec, value)
        values[name] = value
    return values


def _check_parameter(name: str, spec: dict[str, Any], value: str) -> None:
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [_text(item) for item in allowed]:
        raise TemplateError(f"parameter {name} must be one of {allowed}, got {value!r}")
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(str(pattern), value):
        raise TemplateError(f"parameter {name} must match {pattern}, got {value!r}")
    if spec.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            raise TemplateError(f"parameter {name} must be a number, got {value!r}") from None
        low, high = spec.get("MinValue"), spec.get("MaxValue")
        if low is not None and number < float(low):
            raise TemplateError(f"parameter {name} must be at least {low}, got {value}")
        if high is not None and number > float(high):
            raise TemplateError(f"parameter {name} must be at most {high}, got {value}")
