"""Wiring: the objects each function needs, built once per container from its settings."""

from __future__ import annotations

import os

from .aws import client
from .endpoint import TokenEndpoint
from .fanout import SqsFanout
from .invoker import LambdaInvoker
from .providers import spec_for
from .refresh import Refresher
from .secrets import SecretStore
from .settings import Settings
from .store import TokenStore
from .vend import Vendor


def build_vendor(settings: Settings) -> Vendor:
    tokens = TokenStore(client("dynamodb"), settings.table_name)
    # No retries on invoke: a second invocation would be a second refresh attempt.
    lambda_client = client(
        "lambda", read_timeout=settings.attempt_deadline + settings.lease_wait + 5
    )
    lambda_client.meta.config.retries = {"mode": "standard", "max_attempts": 1}
    invoker = LambdaInvoker(lambda_client, settings.provider_function_prefix)
    return Vendor(tokens, invoker, memory_seconds=settings.memory_cache, skew=settings.clock_skew)


def build_refresher(settings: Settings) -> Refresher:
    if not settings.provider:
        raise ValueError("PROVIDER is not set")
    fanout = None
    if settings.fanout_queue_url:
        fanout = SqsFanout(client("sqs"), settings.fanout_queue_url)
    return Refresher(
        spec_for(settings.provider),
        settings,
        SecretStore(client("secretsmanager"), settings.secrets_prefix),
        TokenStore(client("dynamodb"), settings.table_name),
        TokenEndpoint(),
        fanout=fanout,
        owner=os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        or "local",
    )
