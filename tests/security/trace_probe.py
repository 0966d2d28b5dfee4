"""Runs tokenvend's flows with the Tracer on, as in Lambda, and writes every X-Ray entity it
would have sent, with the secret values used, to the file named by its argument. Run in its
own process by test_traces.py: the Tracer patches botocore and requests for good once it is
on.

Two kinds of flow: every provider's success and rejection paths at the sandbox; then every
client authentication against token endpoints that fail on the network (refused, a connect
timeout, a read timeout, a TLS error) or answer 5xx with the request echoed."""

from __future__ import annotations

import json
import os
import socket
import sys
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

os.environ.update(
    AWS_LAMBDA_FUNCTION_NAME="tokenvend-test",
    _X_AMZN_TRACE_ID="Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1",
    POWERTOOLS_TRACE_DISABLED="false",
    LAMBDA_TASK_ROOT=str(HERE),
)

# Secret values whose encodings all differ (see test_scrub_echo.py).
CLIENT_SECRET = 'TRACE-S3cr3t/+ =&"é\\~{style}-{failure}'
PASSWORD = 'TRACE-pässw/rd+ "q"&={style}-{failure}'
REFRESH_TOKEN = "TRACE-rt/+ =&é-{failure}"
CODE = 'TRACE-code/+ =&"é-{failure}'
# One try each, with short timeouts: the failures are the same on every try.
FAILING_POLICY: dict[str, Any] = {"max_tries": 1, "connect_timeout": 0.2, "read_timeout": 0.2}


def failing_endpoints(stack: ExitStack, sandbox_url: str) -> dict[str, str]:
    """Base URLs of token endpoints that fail each way, all on loopback."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    silent = stack.enter_context(socket.socket())
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts; nobody ever answers: a read timeout
    full = stack.enter_context(socket.socket())
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    for _ in range(4):  # fill its accept queue: further connections hang in connect
        filler = stack.enter_context(socket.socket())
        filler.setblocking(False)
        with suppress(BlockingIOError):
            filler.connect(full.getsockname())
    port = sandbox_url.rsplit(":", 1)[1]
    return {
        "refused": f"http://127.0.0.1:{closed_port}",
        "connect-timeout": f"http://127.0.0.1:{full.getsockname()[1]}",
        "read-timeout": f"http://127.0.0.1:{silent.getsockname()[1]}",
        "tls": f"https://127.0.0.1:{port}",  # TLS to a server that speaks plain HTTP
        "5xx": sandbox_url,
    }


def wrapped_attributes() -> list[str]:
    """Which of the HTTP stack's callables a patch has wrapped (they have `__wrapped__`)."""
    import http.client

    import requests
    import urllib3
    from requests.adapters import HTTPAdapter

    owners: dict[str, Any] = {
        "Session": requests.Session,
        "HTTPAdapter": HTTPAdapter,
        "PoolManager": urllib3.PoolManager,
        "HTTPConnectionPool": urllib3.HTTPConnectionPool,
        "HTTPConnection": http.client.HTTPConnection,
    }
    found = []
    for owner_name, owner in owners.items():
        for name in dir(owner):
            attribute = owner.__dict__.get(name)
            if hasattr(attribute, "__wrapped__") and not isinstance(attribute, staticmethod):
                found.append(f"{owner_name}.{name}")
    return sorted(found)


def main() -> None:
    import boto3
    from aws_xray_sdk.core import xray_recorder
    from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter
    from moto import mock_aws

    from support import ENV, PROVIDERS, REDIRECT_URI, build_stack, create_table
    from tokenvend.sandbox import Fault, Sandbox
    from tokenvend_core.catalogue.spec import CLIENT_AUTHS
    from tokenvend_core.refresh.endpoint import RetryPolicy, TokenEndpoint
    from tokenvend_core.tokens import sha256_hex

    sent: list[str] = []

    class Capture(UDPEmitter):
        def send_entity(self, entity: object) -> None:
            sent.append(entity.serialize())  # type: ignore[attr-defined]

    for name, value in ENV.items():
        os.environ.setdefault(name, value)
    os.environ.pop("POWERTOOLS_TRACE_DISABLED", None)
    xray_recorder.configure(emitter=Capture(), streaming_threshold=0, context_missing="LOG_ERROR")
    from tokenvend_core.observability import tracer

    tracer.patch(["requests"])  # as runtime.build_refresher does in a provider function

    values: dict[str, list[str]] = {"tokens": [], "secrets": [], "refresh_tokens": []}
    # Each connection's client id and secret values, for the test to encode every way.
    credentials: list[dict[str, Any]] = []
    outcomes: dict[str, Any] = {}
    with mock_aws(), Sandbox() as sandbox, ExitStack() as sockets:
        create_table(boto3.client("dynamodb"))
        stack = build_stack(sandbox)
        for provider in PROVIDERS:
            values["secrets"].append(stack.connect(provider)["client_secret"])
        stack.authorize()
        for provider in PROVIDERS:
            _, body, _ = stack.vend("GET", provider)
            values["tokens"].append(body["access_token"])
            rejected = json.dumps({"rejected_token_sha256": sha256_hex(body["access_token"])})
            _, body, _ = stack.vend("POST", provider, body=rejected)
            values["tokens"].append(body["access_token"])
            stack.sandbox.inject(provider, *[Fault.oauth_error("invalid_client", 401)] * 4)
            stack.vend("POST", provider, body=None)
            stack.vend("GET", provider, "missing")
        secret = stack.secrets.get("wps365", "demo")
        assert secret is not None
        values["refresh_tokens"].append(secret.value["refresh_token"])
        stack.call_provider("wps365", {"action": "schedule"})

        # Every client authentication against endpoints that fail, with tight timeouts.
        for name in ("oauth2", "aspose", "wps365"):
            stack.refreshers[name].endpoint = TokenEndpoint(policy=RetryPolicy(**FAILING_POLICY))
        paths = {
            "oauth2": "/oauth2/token",
            "aspose": "/aspose/v4.0/cells/connect/token",  # query client auth by default
            "wps365": "/wps365/oauth2/token",
        }
        for failure, base in failing_endpoints(sockets, sandbox.url).items():
            for style in (*CLIENT_AUTHS, "default"):
                for provider in ("oauth2", "aspose", "wps365"):
                    if style == "default" and provider != "aspose":
                        continue
                    connection = f"{provider}-{style}-{failure}".replace("_", "-")
                    words = {"style": style, "failure": failure}
                    config: dict[str, Any] = {
                        "token_url": base + paths[provider],
                        "client_id": f"trace client/{style}+{failure}",
                        "client_secret": CLIENT_SECRET.format(**words),
                        "extra_params": {"password": PASSWORD.format(**words)},
                    }
                    if style != "default":
                        config["client_auth"] = style
                    grant: list[str] = []
                    if provider == "wps365":
                        config["redirect_uri"] = REDIRECT_URI
                        config["refresh_token"] = REFRESH_TOKEN.format(**words)
                        grant = [config["refresh_token"], CODE.format(**words)]
                    stack.put_secret(provider, connection, config)
                    credentials.append(
                        {
                            "client_id": config["client_id"],
                            "client_secret": config["client_secret"],
                            "others": [config["extra_params"]["password"], *grant],
                        }
                    )
                    sandbox.reset()
                    if failure == "5xx":
                        sandbox.inject(provider, *[Fault.echo_request(503)] * 8)
                    status, _, _ = stack.vend("GET", provider, connection)
                    outcomes[f"{connection} vend"] = status
                    if provider == "wps365":
                        answer = stack.call_provider(
                            provider,
                            {"action": "authorize", "connection": connection, "code": grant[1]},
                        )
                        outcomes[f"{connection} authorize"] = answer["error"]["code"]
    Path(sys.argv[1]).write_text(
        json.dumps(
            {
                "values": values,
                "credentials": credentials,
                "outcomes": outcomes,
                "wrapped": wrapped_attributes(),
                "entities": sent,
            }
        )
    )


if __name__ == "__main__":
    main()
