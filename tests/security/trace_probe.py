"""Runs tokenvend's flows with the Tracer on, as in Lambda, and writes every X-Ray entity it
would have sent, with the secret values used, to the file named by its argument. Run in its own process by test_traces.py: the Tracer
patches botocore and requests for good once it is on."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

os.environ.update(
    AWS_LAMBDA_FUNCTION_NAME="tokenvend-test",
    _X_AMZN_TRACE_ID="Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1",
    POWERTOOLS_TRACE_DISABLED="false",
    LAMBDA_TASK_ROOT=str(HERE),
)


def main() -> None:
    import boto3
    from aws_xray_sdk.core import xray_recorder
    from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter
    from moto import mock_aws

    from support import ENV, PROVIDERS, build_stack, create_table
    from tokenvend.sandbox import Fault, Sandbox
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
    with mock_aws(), Sandbox() as sandbox:
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
    Path(sys.argv[1]).write_text(json.dumps({"values": values, "entities": sent}))


if __name__ == "__main__":
    main()
