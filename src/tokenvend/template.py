"""Reading template.yaml: the one description of the stack, also for the local stack and the
tests, which create their resources from it rather than from a second copy."""

from __future__ import annotations

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
    data = yaml.load(text, Loader=Loader)  # noqa: S506 - SafeLoader plus CloudFormation's tags
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
