"""The sandbox's token endpoints and one ready `demo` connection per provider.

Each provider gets a sandbox client with a fresh random secret, and a connection secret in
the local Secrets Manager that points at the sandbox, exactly as an operator would put a
real one (`tokenvend connections put`). wps365's connection is authorized through the
sandbox's own authorization step: the sandbox issues a code, as a user's consent would, and
the wps365 function redeems it, as `tokenvend authorize` does. Then every demo connection's
first token is fetched through its provider function, as a first vend would, so that each
has a token in the table when `ready` is printed; a connection that cannot get one stops the
start with the provider's own error. The secrets are never shown.

The connections name the sandbox at `base_url` when given (with `--docker-bridge`, the
bridge address: one URL that the in-process functions and SAM CLI's containers both reach).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
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
            "authorize_url",
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
        secret.update(
            redirect_uri=sandbox.callback_url(),
            token_url=sandbox.token_url("wps365"),
            authorize_url=sandbox.authorize_url("wps365"),  # tokenvend connect's links
        )
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
    forget: Callable[[str, str], None],
    base_url: str | None = None,
) -> list[str]:
    """Register, store and (for an authorization code grant) authorize the demo connection
    of every provider that has both a function and a sandbox endpoint, and fetch its first
    token; returns those providers. `forget(provider, connection)` drops a connection's
    cached token."""
    ready = []
    for provider, function_name in provider_functions.items():
        try:
            attrs, value = demo_connection(provider, sandbox, base_url)
        except DemoError as exc:  # e.g. a client certificate, which plain http cannot carry
            log("no demo connection", provider=provider, reason=str(exc))
            continue
        sandbox.register(provider, value["client_id"], value.get("client_secret", ""), **attrs)
        if _store(secretsmanager, f"{secrets_prefix}{provider}/{CONNECTION}", provider, value):
            # kept from an earlier start (.tokenvend/state/): its cached token is the earlier
            # sandbox's, which this one does not know
            forget(provider, CONNECTION)
        if sandbox.dialect(provider).grant == "authorization_code":
            _authorize(sandbox, lambda_client, provider, function_name, value)
        ready.append(provider)
    for provider in ready:
        _first_token(lambda_client, provider, provider_functions[provider])
    log("demo connections ready", connection=CONNECTION, providers=ready)
    return ready


def _store(secretsmanager: Any, name: str, provider: str, value: dict[str, Any]) -> bool:
    """Create the demo connection's secret, or add a version to one kept from an earlier
    start (the sandbox's client secrets are new at every start); whether it was kept."""
    from botocore.exceptions import ClientError

    text = json.dumps(value)
    try:
        secretsmanager.create_secret(
            Name=name,
            Description=f"tokenvend local: the {provider} demo connection (sandbox)",
            SecretString=text,
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceExistsException":
            raise
        secretsmanager.put_secret_value(SecretId=name, SecretString=text)
        return True
    return False


def _first_token(lambda_client: Any, provider: str, function_name: str) -> None:
    """The demo connection's first token, fetched through its provider function with the
    event the vend function sends on a miss (one already there, e.g. an authorization's,
    is kept): the token table holds it before `ready`."""
    event = {"action": "refresh", "connection": CONNECTION, "min_ttl": 0}
    result = _invoke(lambda_client, function_name, event)
    if not result.get("ok") or not result.get("version"):
        raise DemoError(
            f"the {provider} demo connection got no first token from {function_name} "
            f"({_problem(result)})"
        )
    log(
        "demo connection has a token",
        provider=provider,
        connection=CONNECTION,
        version=result["version"],
        expires_at=result.get("expires_at"),
    )


def _invoke(lambda_client: Any, function_name: str, event: dict[str, Any]) -> dict[str, Any]:
    """A provider function's answer; a crash or an unreadable answer as {"ok": False, ...}."""
    answer = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps(event).encode())
    try:
        result = json.loads(answer["Payload"].read() or b"null")
    except ValueError:
        result = None
    if answer.get("FunctionError"):
        message = result.get("errorMessage") if isinstance(result, dict) else None
        return {"ok": False, "error": {"code": answer["FunctionError"], "message": message}}
    if not isinstance(result, dict):
        return {"ok": False, "error": {"code": "unreadable", "message": "not a JSON object"}}
    return result


def _problem(result: dict[str, Any]) -> str:
    error = result.get("error")
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    return "no token version in the answer"


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
    result = _invoke(lambda_client, function_name, event)
    if not result.get("ok"):
        raise DemoError(
            f"the {provider} demo connection could not be authorized ({_problem(result)})"
        )
