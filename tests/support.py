"""The pieces integration tests assemble: the real handlers, the sandbox's token endpoints,
moto, and the template's own table definition."""

from __future__ import annotations

import base64
import importlib.util
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, quote_plus

import boto3
import requests
from botocore.exceptions import ClientError
from hypothesis import strategies as st

from tokenvend.awslocal import OFFLINE_ENV
from tokenvend.local import functions
from tokenvend.sandbox import Sandbox
from tokenvend.template import load_template, table_definition
from tokenvend_core.audit import Trail
from tokenvend_core.aws.secrets import SecretStore
from tokenvend_core.aws.store import TokenStore
from tokenvend_core.catalogue.request import build_request
from tokenvend_core.catalogue.spec import ProviderSpec, spec_for, validate_secret
from tokenvend_core.refresh.endpoint import RetryPolicy, TokenEndpoint
from tokenvend_core.refresh.refresher import Refresher
from tokenvend_core.settings import Settings
from tokenvend_core.tokens import Token
from tokenvend_core.vend.invoker import LambdaInvoker
from tokenvend_core.vend.vendor import Vendor

ENV = dict(OFFLINE_ENV)

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
PROVIDERS = ("aspose", "wps365", "azure", "dingtalk", "oauth2")
TABLE = "tokenvend-test-TokenTable"
CALLER = "arn:aws:iam::123456789012:user/workload"
REDIRECT_URI = "https://app.example.com/callback"

# Recognisable values: the leak checks look for these everywhere.
CLIENT_SECRET = "SECRET-do-not-leak-7f3a"


def secret_forms(value: str, client_id: str | None = None) -> set[str]:
    """Every form in which tokenvend sends a secret, and so in which it may be echoed back
    (worked out here, not by the code under test): raw, form- and URL-escaped, JSON-escaped,
    and, given its client id, the HTTP Basic credentials made from it."""
    found = {
        value,
        quote_plus(value),
        quote(value),
        quote(value, safe=""),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    if client_id is not None:
        pair = f"{quote_plus(client_id)}:{quote_plus(value)}"
        basic = base64.b64encode(pair.encode()).decode("ascii")
        found |= {basic, f"Basic {basic}"}
    return found


def event(name: str, **changes: Any) -> dict[str, Any]:
    data = json.loads((EVENTS / name).read_text())
    data.update(changes)
    return data


def api_event(
    method: str,
    provider: str,
    connection: str,
    *,
    min_ttl: Any = None,
    body: str | None = None,
    caller: str = CALLER,
) -> dict[str, Any]:
    """A sample API event from events/, pointed at another provider and connection."""
    data = event("vend-get.json" if method == "GET" else "vend-refresh.json")
    data["pathParameters"] = {"provider": provider, "connection": connection}
    data["path"] = f"/tokens/{provider}/{connection}" + ("" if method == "GET" else "/refresh")
    data["queryStringParameters"] = None if min_ttl is None else {"min_ttl": str(min_ttl)}
    data["multiValueQueryStringParameters"] = (
        None if min_ttl is None else {"min_ttl": [str(min_ttl)]}
    )
    if method != "GET":
        data["body"] = body
    data["requestContext"]["identity"]["userArn"] = caller
    return data


class LambdaContext(functions.LambdaContext):
    """The local stack's Lambda context with its clock stopped: the time left stays what the
    test gave, however long the machine takes."""

    def __init__(self, name: str, timeout_ms: int = 60_000) -> None:
        super().__init__(name, timeout_ms, log_stream_name="test", clock=functions.stopped)


def load_function(folder: str, name: str) -> ModuleType:
    """A function's app.py as its own module instance (the provider entry point serves five)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InProcessInvoker(LambdaInvoker):
    """The vend function's invoker with the Lambda service replaced by a direct call into the
    provider function's handler: same event, same JSON, same error handling."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(client=None, function_prefix="tokenvend-test-")
        self._stack = stack
        self.invocations = 0

    def _invoke(self, function_name: str, payload: str) -> tuple[str | None, bytes]:
        self.invocations += 1
        provider = function_name.removeprefix("tokenvend-test-")
        module = self._stack.provider_functions[provider]
        try:
            answer = module.lambda_handler(json.loads(payload), LambdaContext(function_name))
        except Exception as exc:  # what Lambda reports for an unhandled error
            return "Unhandled", json.dumps({"errorType": type(exc).__name__}).encode()
        return None, json.dumps(answer).encode()


FAST = RetryPolicy(base=0.01, cap=0.05, max_tries=4, connect_timeout=1.0, read_timeout=1.0)


def token_for_drawn_connection(
    sandbox: Sandbox, name: str, spec: ProviderSpec, data: st.DataObject
) -> Token:
    """Given a client registered with the sandbox for the catalogue entry `name`, and a
    connection whose url fields are any values the entry's patterns allow (drawn from
    `data`): the token tokenvend builds, sends and reads for it, which must be a token with
    every passed-through field."""
    client_id = f"client-{name}-{data.draw(st.integers(0, 10**6))}"
    attrs, secret = sandbox.demo_connection(name, client_id)
    for key, pattern in spec.url_fields.items():
        secret[key] = data.draw(st.from_regex(rf"\A(?:{pattern})\Z"), label=key)
        if key in attrs:  # a path field: the client exists at its path only
            attrs[key] = secret[key]
    sandbox.register(name, client_id, secret.get("client_secret", ""), **attrs)
    checked = validate_secret(spec, secret, allow_http_loopback=True)
    request = build_request(spec, checked, allow_http_loopback=True)
    policy = RetryPolicy(base=0.01, cap=0.02, max_tries=2, connect_timeout=2, read_timeout=3)
    outcome = TokenEndpoint(policy=policy).fetch(
        spec, request, deadline=time.monotonic() + 10, default_lifetime=3300
    )
    assert isinstance(outcome, Token), getattr(outcome, "error", outcome)
    assert set(outcome.extra) == set(spec.passthrough)
    return outcome


@dataclass
class Stack:
    """One deployment's worth of parts, on moto and the sandbox."""

    settings: Settings
    sandbox: Sandbox
    tokens: TokenStore
    secrets: SecretStore
    refreshers: dict[str, Refresher]
    provider_functions: dict[str, ModuleType]
    vend_function: ModuleType
    vendor: Vendor
    invoker: InProcessInvoker
    # Every function's audit records, in the order they were written.
    audit: AuditRecords = field(default_factory=lambda: AuditRecords())

    def put_secret(self, provider: str, connection: str, value: dict[str, Any]) -> str:
        client = boto3.client("secretsmanager")
        name = self.secrets.name(provider, connection)
        try:
            return str(client.create_secret(Name=name, SecretString=json.dumps(value))["VersionId"])
        except client.exceptions.ResourceExistsException:
            return self.secrets.put(provider, connection, value)

    def connect(self, provider: str, connection: str = "demo", **extra: Any) -> dict[str, Any]:
        """Register a sandbox client and put the matching connection secret."""
        value = connection_secret(self.sandbox, provider, connection)
        lifetime = extra.pop("lifetime", None)
        attrs = {
            k: v for k, v in value.items() if k in ("tenant_id", "scope", "corp_id", "redirect_uri")
        }
        if lifetime is not None:
            attrs["lifetime"] = lifetime
        self.sandbox.register(provider, value["client_id"], value["client_secret"], **attrs)
        value.update(extra)
        self.put_secret(provider, connection, value)
        return value

    def authorize(self, connection: str = "demo") -> dict[str, Any]:
        secret = self.secrets.get("wps365", connection)
        assert secret is not None
        code = self.sandbox.authorize(secret.value["client_id"], REDIRECT_URI)
        return self.call_provider(
            "wps365", {"action": "authorize", "connection": connection, "code": code}
        )

    def vend(
        self, method: str, provider: str, connection: str = "demo", **kw: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        answer = self.vend_function.lambda_handler(
            api_event(method, provider, connection, **kw),
            LambdaContext("tokenvend-test-vend", 20_000),
        )
        return answer["statusCode"], json.loads(answer["body"]), answer["headers"]

    def call_provider(self, provider: str, payload: dict[str, Any]) -> dict[str, Any]:
        module = self.provider_functions[provider]
        result: dict[str, Any] = module.lambda_handler(
            payload, LambdaContext(f"tokenvend-test-{provider}")
        )
        return result


def connection_secret(sandbox: Sandbox, provider: str, connection: str) -> dict[str, Any]:
    client_id = f"{provider}-{connection}-client"
    base: dict[str, Any] = {
        "client_id": client_id,
        "client_secret": f"{CLIENT_SECRET}-{provider}-{connection}",
    }
    if provider == "aspose":
        base["token_url"] = sandbox.token_url("aspose")
    elif provider == "wps365":
        base.update(token_url=sandbox.token_url("wps365"), redirect_uri=REDIRECT_URI)
    elif provider == "azure":
        base.update(
            tenant_id=f"tenant-{connection}",
            scope="api://resource-1/.default",
            authority_host=sandbox.authority_host(),
        )
    elif provider == "dingtalk":
        base.update(corp_id=f"ding{connection}", token_url=sandbox.token_url("dingtalk"))
    else:
        base.update(token_url=sandbox.token_url("oauth2"), scope="read write")
    return base


def redeem_out_of_band(sandbox: Sandbox, client_id: str, client_secret: str) -> str:
    """An operator's own authorization at the sandbox's wps365, outside tokenvend: a fresh
    grant's refresh token."""
    code = sandbox.authorize(client_id, REDIRECT_URI)
    answer = requests.post(
        sandbox.token_url("wps365"),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": client_id,
            "client_secret": client_secret,
        },
        timeout=5,
    )
    refresh_token = answer.json()["refresh_token"]
    assert isinstance(refresh_token, str)
    return refresh_token


def create_table(client: Any, name: str = TABLE) -> None:
    client.create_table(TableName=name, **table_definition(load_template(ROOT / "template.yaml")))


def build_stack(sandbox: Sandbox, *, clock: Any = None, **overrides: Any) -> Stack:
    """Every function of the template, wired to moto (whatever endpoint boto3 is set to)."""
    settings = Settings(
        **{
            "table_name": TABLE,
            "provider_function_prefix": "tokenvend-test-",
            "cool_down": 0,
            "lease_wait": 5,
            "attempt_deadline": 3,
            "allow_http_loopback": True,
            **overrides,
        }
    )
    ddb = boto3.client("dynamodb")
    tokens = TokenStore(ddb, TABLE)
    secrets = SecretStore(boto3.client("secretsmanager"), settings.secrets_prefix)
    extra = {"clock": clock} if clock is not None else {}
    audit = AuditRecords()
    refreshers = {
        name: Refresher(
            spec_for(name),
            replace(settings, provider=name),
            secrets,
            tokens,
            TokenEndpoint(policy=FAST, **extra),
            owner=f"test-{name}",
            audit=Trail(audit, function=f"tokenvend-test-{name}"),
            **extra,
        )
        for name in PROVIDERS
    }
    functions = {}
    for name in PROVIDERS:
        module = load_function("provider", f"provider_app_{name}_{uuid.uuid4().hex[:6]}")
        module._refresher = refreshers[name]
        functions[name] = module
    vend_module = load_function("vend", f"vend_app_{uuid.uuid4().hex[:6]}")
    stack = Stack(
        settings=settings,
        sandbox=sandbox,
        tokens=tokens,
        secrets=secrets,
        refreshers=refreshers,
        provider_functions=functions,
        vend_function=vend_module,
        vendor=None,  # type: ignore[arg-type]
        invoker=None,  # type: ignore[arg-type]
        audit=audit,
    )
    stack.invoker = InProcessInvoker(stack)
    stack.vendor = Vendor(
        tokens,
        stack.invoker,
        memory_seconds=settings.memory_cache,
        skew=settings.clock_skew,
        audit=Trail(audit, function="tokenvend-test-vend"),
        **extra,
    )
    vend_module._vendor = stack.vendor
    return stack


class AwsFault:
    """Botocore-level failure injection: the named operation of a client raises, for the
    next `times` calls (or always), an error AWS really answers with."""

    def __init__(self, client: Any, operation: str, code: str, *, times: int | None = None,
                 when: Callable[[dict[str, Any]], bool] | None = None) -> None:  # fmt: skip
        self.client = client
        self.event = f"before-parameter-build.*.{operation}"
        self.code = code
        self.left = times
        self.when = when
        self.raised = 0
        client.meta.events.register(self.event, self)

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        if self.left == 0 or (self.when is not None and not self.when(params)):
            return
        if self.left is not None:
            self.left -= 1
        self.raised += 1
        raise ClientError({"Error": {"Code": self.code, "Message": "injected"}}, self.event)

    def stop(self) -> None:
        self.client.meta.events.unregister(self.event, self)


def connection_snapshot(stack: Stack, provider: str, connection: str) -> tuple[Any, ...]:
    """What a link callback may change: the connection's secret (its version and value) and
    its item in the token table."""
    secret = stack.secrets.get(provider, connection)
    item = boto3.client("dynamodb").get_item(
        TableName=stack.settings.table_name,
        Key={"provider": {"S": provider}, "connection": {"S": connection}},
        ConsistentRead=True,
    )
    return (
        secret.version if secret else None,
        json.dumps(secret.value if secret else None, sort_keys=True),
        json.dumps(item.get("Item"), sort_keys=True),
    )


def state_of(url: str) -> str:
    """The `state` of a connect link."""
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(url).query)["state"][0]


class FakeClock:
    """A clock a test sets and moves on: it says `now`."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class AuditRecords:
    """An audit trail's sink that keeps what it is given: `Trail(AuditRecords())`."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            record.pop("_ms", None)
            self.records.append(json.loads(json.dumps(record)))  # as the log group holds it

    def of(self, action: str) -> list[dict[str, Any]]:
        return [record for record in self.records if record["action"] == action]

    def clear(self) -> None:
        self.records.clear()
