"""The vend function's wiring: its objects, built once per container from its settings.

Only the table and the Lambda client: the vend function holds no secret and never calls a
token endpoint, so nothing of the refresh side is imported here (tests/unit/test_layout.py).
"""

from __future__ import annotations

from tokenvend_core.audit import Trail
from tokenvend_core.aws.clients import client
from tokenvend_core.aws.store import TokenStore
from tokenvend_core.settings import Settings
from tokenvend_core.vend.invoker import LambdaInvoker
from tokenvend_core.vend.vendor import Vendor

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
        audit=Trail.from_env(),
    )
