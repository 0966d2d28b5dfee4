"""The sandbox's token endpoints and one ready `demo` connection per provider.

Each provider gets a sandbox client with a fresh random secret, and a connection secret in
the local Secrets Manager that points at the sandbox, exactly as an operator would put a
real one (`tokenvend connections put`). wps365's connection is authorized through the
sandbox's own authorization step: the sandbox issues a code, as a user's consent would, and
the wps365 function redeems it, as `tokenvend authorize` does. The secrets are never shown.

The connections name the sandbox at `base_url` when given (with `--docker-bridge`, the
bridge address: one URL that the in-process functions and SAM CLI's containers both reach).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from ..sandbox import Sandbox
from .log import log

CONNECTION = "demo"
AZURE_TENANT = "tokenvend-demo-tenant"
AZURE_SCOPE = "api://tokenvend-demo/.default"
DINGTALK_CORP = "dingtokenvenddemo"
OAUTH2_SCOPE = "demo.read"


class DemoError(RuntimeError):
    """A demo connection could not be set up."""


def demo_connection(
    provider: str, sandbox: Sandbox, base_url: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the sandbox client's registration attributes, the connection's secret value), with
    the sandbox's URLs at `base_url` instead of its own when given."""
    attrs, secret = _demo_connection(provider, sandbox)
    if base_url and base_url != sandbox.url:
        rewritten = {
            "token_url",
            "redirect_uri",
            "authority_host",
            *sandbox.endpoint_fields(provider),
        }
        for values in (attrs, secret):
            for name in rewritten:
                if isinstance(values.get(name), str) and values[name].startswith(sandbox.url):
                    values[name] = base_url + values[name][len(sandbox.url) :]
    return attrs, secret


def _demo_connection(provider: str, sandbox: Sandbox) -> tuple[dict[str, Any], dict[str, Any]]:
    client_id = f"tokenvend-demo-{provider}"
    secret: dict[str, Any] = {"client_id": client_id, "client_secret": secrets.token_urlsafe(24)}
    attrs: dict[str, Any] = {}
    if provider == "aspose":
        # The /connect/token URL the official SDKs use: credentials in a form body.
        secret["token_url"] = sandbox.token_url("aspose", style="form")
    elif provider == "wps365":
        attrs["redirect_uri"] = sandbox.callback_url()
        secret.update(redirect_uri=sandbox.callback_url(), token_url=sandbox.token_url("wps365"))
    elif provider == "azure":
        attrs.update(tenant_id=AZURE_TENANT, scope=AZURE_SCOPE)
        secret.update(
            tenant_id=AZURE_TENANT, scope=AZURE_SCOPE, authority_host=sandbox.authority_host()
        )
    elif provider == "dingtalk":
        attrs["corp_id"] = DINGTALK_CORP
        secret.update(corp_id=DINGTALK_CORP, token_url=sandbox.token_url("dingtalk"))
    elif provider == "oauth2":
        attrs["scope"] = OAUTH2_SCOPE
        secret.update(token_url=sandbox.token_url("oauth2"), scope=OAUTH2_SCOPE)
    else:  # any other catalogue entry: the sandbox speaks its dialect from its data
        try:
            attrs, secret = sandbox.demo_connection(provider, client_id)
        except ValueError as exc:
            raise DemoError(str(exc)) from None
    return attrs, secret


def set_up(
    sandbox: Sandbox,
    *,
    provider_functions: Mapping[str, str],
    secrets_prefix: str,
    secretsmanager: Any,
    lambda_client: Any,
    base_url: str | None = None,
) -> list[str]:
    """Register, store and (for an authorization code grant) authorize the demo connection
    of every provider that has both a function and a sandbox endpoint; returns those
    providers."""
    ready = []
    for provider, function_name in provider_functions.items():
        try:
            attrs, value = demo_connection(provider, sandbox, base_url)
        except DemoError as exc:  # e.g. a client certificate, which plain http cannot carry
            log("no demo connection", provider=provider, reason=str(exc))
            continue
        sandbox.register(provider, value["client_id"], value.get("client_secret", ""), **attrs)
        secretsmanager.create_secret(
            Name=f"{secrets_prefix}{provider}/{CONNECTION}",
            Description=f"tokenvend local: the {provider} demo connection (sandbox)",
            SecretString=json.dumps(value),
        )
        if sandbox.dialect(provider).grant == "authorization_code":
            _authorize(sandbox, lambda_client, provider, function_name, value)
        ready.append(provider)
    log("demo connections ready", connection=CONNECTION, providers=ready)
    return ready


def _authorize(
    sandbox: Sandbox,
    lambda_client: Any,
    provider: str,
    function_name: str,
    value: dict[str, Any],
) -> None:
    code = sandbox.authorize(value["client_id"], value["redirect_uri"], provider=provider)
    event = {
        "action": "authorize",
        "connection": CONNECTION,
        "code": code,
        "redirect_uri": value["redirect_uri"],
    }
    answer = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps(event).encode())
    result = json.loads(answer["Payload"].read() or b"null")
    if answer.get("FunctionError") or not isinstance(result, dict) or not result.get("ok"):
        error = (result or {}).get("error") if isinstance(result, dict) else None
        detail = f"{error.get('code')}: {error.get('message')}" if isinstance(error, dict) else ""
        raise DemoError(f"the {provider} demo connection could not be authorized ({detail})")
