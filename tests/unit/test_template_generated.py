"""template.yaml is generated from template.yaml.j2 and the provider catalogue: it is kept in
step, and a provider added to the catalogue gets everything a provider has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tokenvend.catalogue_template import (
    MAX_DEPLOYED,
    catalogue_text,
    main,
    readme_with_table,
    render,
)
from tokenvend.template import ROOT, load_template
from tokenvend_core.errors import UnknownProvider
from tokenvend_core.names import PROVIDERS, check_provider, deployed_providers

ENTRY = """
[acme]
title = "Acme"
grant = "client_credentials"
token_url = "https://auth.acme.example/oauth2/token"
required = ["client_id", "client_secret"]
"""
CATALOGUED = """
[sleeper]
grant = "client_credentials"
deploy = false
token_url = "https://auth.sleeper.example/token"
required = ["client_id", "client_secret"]
"""


def rendered(extra: str) -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")
    return dict(yaml.load(render(ROOT, catalogue_text(ROOT) + extra), Loader=Loader))  # nosec B506


def test_the_committed_template_is_the_one_the_catalogue_makes() -> None:
    assert (ROOT / "template.yaml").read_text("utf-8") == render(ROOT), (
        "template.yaml is out of step: run `make template`"
    )


def test_the_api_accepts_exactly_the_deployed_providers_of_the_catalogue() -> None:
    functions = load_template()["Resources"]
    deployed = {
        r["Properties"]["Environment"]["Variables"]["PROVIDER"]
        for r in functions.values()
        if r["Type"] == "AWS::Serverless::Function"
        and "PROVIDER" in r["Properties"].get("Environment", {}).get("Variables", {})
    }
    assert set(PROVIDERS) == deployed == set(deployed_providers(catalogue_text(ROOT)))


def test_an_added_entry_gets_everything_a_provider_has() -> None:
    # Given the catalogue with one more entry
    template = rendered(ENTRY)
    resources = template["Resources"]

    # Then the template has its function, log group, fan-out queue and mapping
    function = resources["AcmeFunction"]["Properties"]
    assert function["Environment"]["Variables"]["PROVIDER"] == "acme"
    assert function["CodeUri"] == "functions/provider/"
    assert resources["AcmeFunctionLogs"]["Type"] == "AWS::Logs::LogGroup"
    assert resources["AcmeRefreshQueue"]["Type"] == "AWS::SQS::Queue"
    assert resources["AcmeFanOutMapping"]["Type"] == "AWS::Lambda::EventSourceMapping"
    assert function["Events"]["Refresh"]["Type"] == "Schedule"
    # and the vend function may invoke it, the alarms and the outputs know it
    text = render(ROOT, catalogue_text(ROOT) + ENTRY)
    assert "!GetAtt AcmeFunction.Arn" in text
    assert '"MAX([aspose, wps365, azure, dingtalk, oauth2, acme])"' in text
    assert "AcmeFunctionName" in template["Outputs"]
    # while a client-credentials provider stores no secrets
    statements = str(function["Policies"])
    assert "PutSecretValue" not in statements


def test_an_entry_that_is_not_deployed_is_only_catalogued() -> None:
    template = rendered(CATALOGUED)
    assert not [name for name in template["Resources"] if name.startswith("Sleeper")]
    assert "sleeper" not in PROVIDERS
    with pytest.raises(UnknownProvider):
        check_provider("sleeper")


def test_more_providers_than_one_stack_takes_are_refused_with_the_way_out() -> None:
    many = "".join(
        ENTRY.replace("[acme]", f"[acme{i}]") for i in range(MAX_DEPLOYED - len(PROVIDERS) + 1)
    )
    with pytest.raises(ValueError, match="deploy = false"):
        render(ROOT, catalogue_text(ROOT) + many)


def test_check_says_when_the_template_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a copy of the checkout's template sources with one more catalogue entry
    catalogue = tmp_path / "layers/core/tokenvend_core/catalogue/providers.toml"
    catalogue.parent.mkdir(parents=True)
    catalogue.write_text(catalogue_text(ROOT) + ENTRY)
    (tmp_path / "template.yaml.j2").write_text((ROOT / "template.yaml.j2").read_text())
    (tmp_path / "template.yaml").write_text((ROOT / "template.yaml").read_text())
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text())

    # When checked, it is stale; once written, it is not
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert "make template" in capsys.readouterr().err
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--root", str(tmp_path), "--check"]) == 0
    assert "AcmeFunction:" in (tmp_path / "template.yaml").read_text()
    assert "| `acme` | Acme | client_credentials |" in (tmp_path / "README.md").read_text()


def test_the_readme_table_is_the_one_the_catalogue_makes() -> None:
    import tomllib

    catalogue = tomllib.loads(catalogue_text(ROOT))
    readme = (ROOT / "README.md").read_text("utf-8")
    assert readme == readme_with_table(readme, catalogue), "run `make template`"
    for name in catalogue:
        assert f"| `{name}` |" in readme


def test_the_local_stack_refuses_a_stale_template(tmp_path: Path) -> None:
    from tokenvend.local.stack import LocalStack, Options, StartError

    # Given a checkout whose catalogue gained an entry after its template was made
    catalogue = tmp_path / "layers/core/tokenvend_core/catalogue/providers.toml"
    catalogue.parent.mkdir(parents=True)
    catalogue.write_text(catalogue_text(ROOT) + ENTRY)
    (tmp_path / "template.yaml.j2").write_text((ROOT / "template.yaml.j2").read_text())
    (tmp_path / "template.yaml").write_text((ROOT / "template.yaml").read_text())

    # When the local stack starts on it, it says what to run, before starting anything
    stack = LocalStack(Options(template=tmp_path / "template.yaml"))
    with pytest.raises(StartError, match="make template"):
        stack.start()
    assert stack.moto is None
