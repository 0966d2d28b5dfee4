"""1. Warm vend: the deployed vend handler answering GET for a cached token, in-process.

The vend function's module is loaded as Lambda loads it (functions/vend/app.py with its three
Powertools decorators) and builds its own objects from the environment on the first call
(`runtime.build_vendor`), against moto in-process (`mock_aws`). Four handlers are timed in
the same loop, one call of each per round, in rotating order, so that noise falls on all of
them alike:

- `bare`: returns a constant API Gateway response (the floor);
- `bare+decorators`: the same, under the same Tracer, Logger and Metrics decorators;
- `bare+decorators+metric`: the same, adding one metric as the vend handler does on a hit
  (so that the EMF document is serialized, as it is on every vend);
- `api.handle alone`: tokenvend's logic without the decorators (its metric accumulates and
  is flushed every 100 values);
- `vend`: the real handler.

AWS calls are counted with botocore's `before-call` event on the vend function's own clients,
in two states: the container's memory entry fresh (0 expected) and expired while the table
holds the token (1 GetItem expected; a container whose `MemoryCacheSeconds` is 0).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bench.common import (
    FUNCTION_PREFIX,
    TABLE,
    AwsCalls,
    LambdaContext,
    api_event,
    create_table,
    load_function,
    median,
    percentile,
    powertools_to_sink,
    ratio,
)

ROUNDS = 20_000
WARMUP = 1_000
TABLE_HIT_CALLS = 300
RESPONSE = {
    "statusCode": 200,
    "headers": {
        "Content-Type": "application/json",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
    },
    "body": '{"provider":"dingtalk","connection":"demo","access_token":"x"}',
    "isBase64Encoded": False,
}


def bare(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return RESPONSE


def _decorated() -> tuple[Any, Any]:
    from tokenvend_core.observability import MetricUnit, logger, metrics, tracer

    @tracer.capture_lambda_handler(capture_response=False, capture_error=False)
    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    def decorated(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return RESPONSE

    @tracer.capture_lambda_handler(capture_response=False, capture_error=False)
    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    def decorated_metric(event: dict[str, Any], context: Any) -> dict[str, Any]:
        metrics.add_metric(name="VendMemoryHit", unit=MetricUnit.Count, value=1)
        return RESPONSE

    return decorated, decorated_metric


def _seed(client: Any, provider: str, connection: str) -> None:
    expires_at = int(time.time()) + 3600
    client.put_item(
        TableName=TABLE,
        Item={
            "provider": {"S": provider},
            "connection": {"S": connection},
            "access_token": {"S": "bench-access-token-" + "x" * 600},  # JWT-sized
            "token_type": {"S": "Bearer"},
            "expires_at": {"N": str(expires_at)},
            "version": {"N": "1"},
            "refreshed_at": {"N": str(int(time.time()))},
            "ttl": {"N": str(expires_at + 86400)},
        },
    )


def run() -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    from tokenvend_core.settings import Settings
    from tokenvend_core.vend import api
    from tokenvend_core.vend.runtime import build_vendor

    provider, connection = "dingtalk", "demo"
    event = api_event(provider, connection)
    context = LambdaContext(f"{FUNCTION_PREFIX}vend")
    with mock_aws(), powertools_to_sink() as sink:
        ddb = boto3.client("dynamodb")
        create_table(ddb)
        _seed(ddb, provider, connection)

        vend_module = load_function("vend")
        first = vend_module.lambda_handler(event, context)  # builds the vendor; fills memory
        assert first["statusCode"] == 200, first
        answer_bytes = len(str(first["body"]).encode())
        vendor = vend_module._vendor
        calls = AwsCalls().watch(vendor._tokens._client, vendor._invoker._client)

        decorated, decorated_metric = _decorated()

        def logic_alone(event: dict[str, Any], context: Any) -> dict[str, Any]:
            return api.handle(event, vendor)

        handlers: list[tuple[str, Any]] = [
            ("bare", bare),
            ("bare+decorators", decorated),
            ("bare+decorators+metric", decorated_metric),
            ("api.handle alone", logic_alone),
            ("vend", vend_module.lambda_handler),
        ]
        for _ in range(WARMUP):
            for _, handler in handlers:
                handler(event, context)
        timings: dict[str, list[int]] = {name: [] for name, _ in handlers}
        timer: list[int] = []
        clock = time.perf_counter_ns
        count = len(handlers)
        calls.reset()
        for i in range(ROUNDS):
            for k in range(count):
                name, handler = handlers[(i + k) % count]
                t0 = clock()
                handler(event, context)
                timings[name].append(clock() - t0)
            t0 = clock()
            timer.append(clock() - t0)
        fresh_calls = calls.total()

        # What each hit writes to CloudWatch Logs: the EMF metrics document, and the audit
        # record (to standard output here, with no audit log group; deployed, to that group).
        chars_before = sink.chars
        for _ in range(1000):
            vend_module.lambda_handler(event, context)
        log_bytes_per_hit = (sink.chars - chars_before) / 1000

        # The memory entry expired, the table holds the token: one GetItem per vend.
        table_module = load_function("vend")
        table_module._vendor = build_vendor(replace(Settings.from_env(), memory_cache=0))
        table_calls = AwsCalls().watch(
            table_module._vendor._tokens._client, table_module._vendor._invoker._client
        )
        table_times: list[int] = []
        for _ in range(TABLE_HIT_CALLS):
            t0 = clock()
            answer = table_module.lambda_handler(event, context)
            table_times.append(clock() - t0)
            assert answer["statusCode"] == 200, answer
        table_ops = dict(table_calls.counts)

    stats = {
        name: {"median_ns": median(values), "p99_ns": percentile(values, 99)}
        for name, values in timings.items()
    }
    floor = stats["bare"]
    vend = stats["vend"]
    decorated_stats = stats["bare+decorators"]
    return {
        "rounds": ROUNDS,
        "handlers": stats,
        "timer_overhead_median_ns": median(timer),
        "vend_over_bare": {
            "median": ratio(vend["median_ns"], floor["median_ns"]),
            "p99": ratio(vend["p99_ns"], floor["p99_ns"]),
        },
        "vend_over_bare_decorated": {
            "median": ratio(vend["median_ns"], decorated_stats["median_ns"]),
            "p99": ratio(vend["p99_ns"], decorated_stats["p99_ns"]),
        },
        "decorated_over_bare": {
            "median": ratio(decorated_stats["median_ns"], floor["median_ns"]),
        },
        "logic_ns": vend["median_ns"] - stats["bare+decorators+metric"]["median_ns"],
        "aws_calls_per_vend_memory_fresh": fresh_calls / ROUNDS,
        "aws_calls_per_vend_memory_expired_table_hit": sum(table_ops.values()) / TABLE_HIT_CALLS,
        "memory_expired_operations": table_ops,
        "memory_expired_median_ns_moto_inprocess": median(table_times),
        "log_bytes_per_hit": log_bytes_per_hit,
        "answer_bytes": answer_bytes,
    }


if __name__ == "__main__":
    import json

    from bench.common import configure_environment

    configure_environment()
    print(json.dumps(run(), indent=2))
