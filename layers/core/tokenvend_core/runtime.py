"""Wiring: the objects each function needs, built once per container from its settings."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tokenvend_core.aws.clients import client
from tokenvend_core.aws.store import TokenStore
from tokenvend_core.settings import Settings
from tokenvend_core.vend.invoker import LambdaInvoker
from tokenvend_core.vend.vendor import Vendor

if TYPE_CHECKING:
    from tokenvend_core.refresh.refresher import Refresher


# The vend function's worst case, in seconds, which its Timeout in template.yaml exceeds:
# table reads of at most two tries of CONNECT + TABLE_READ each, and one provider invocation
# of at most CONNECT + INVOKE_READ. A slow provider function then gives 503 with
# Retry-After, never a Lambda timeout (and API Gateway's own limit is 29 s).
CONNECT_TIMEOUT = 1
TABLE_READ_TIMEOUT = 2
TABLE_TRIES = 2
INVOKE_READ_TIMEOUT = 18
TABLE_WORST = TABLE_TRIES * (CONNECT_TIMEOUT + TABLE_READ_TIMEOUT) + 1  # and a backoff
INVOKE_WORST = CONNECT_TIMEOUT + INVOKE_READ_TIMEOUT + TABLE_WORST


def build_vendor(settings: Settings) -> Vendor:
    tokens = TokenStore(
        client(
            "dynamodb",
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=TABLE_READ_TIMEOUT,
            total_max_attempts=TABLE_TRIES,
        ),
        settings.table_name,
    )
    # Exactly one attempt: a second invocation would be a second refresh attempt.
    lambda_client = client(
        "lambda",
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=INVOKE_READ_TIMEOUT,
        total_max_attempts=1,
    )
    invoker = LambdaInvoker(lambda_client, settings.provider_function_prefix)
    return Vendor(
        tokens,
        invoker,
        memory_seconds=settings.memory_cache,
        skew=settings.clock_skew,
        invoke_seconds=INVOKE_WORST,
    )


def build_refresher(settings: Settings) -> Refresher:
    # The refresh side's imports (requests, the providers) are the provider function's own:
    # the vend function never pays for them at cold start.
    from tokenvend_core.aws.secrets import SecretStore
    from tokenvend_core.catalogue.providers import spec_for
    from tokenvend_core.observability import tracer
    from tokenvend_core.refresh.endpoint import TokenEndpoint, pooled_session
    from tokenvend_core.refresh.fanout import SqsFanout
    from tokenvend_core.refresh.refresher import Refresher

    if not settings.provider:
        raise ValueError("PROVIDER is not set")
    tracer.patch(["requests"])  # trace the token endpoints' HTTP as well
    fanout = None
    if settings.fanout_queue_url:
        fanout = SqsFanout(client("sqs"), settings.fanout_queue_url)
    return Refresher(
        spec_for(settings.provider),
        settings,
        SecretStore(client("secretsmanager"), settings.secrets_prefix),
        TokenStore(client("dynamodb"), settings.table_name),
        TokenEndpoint(pooled_session(settings.schedule_concurrency)),
        fanout=fanout,
        owner=os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        or "local",
    )
