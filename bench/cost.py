"""The cost model: dollars per million vends, for each API type, from AWS's list prices and
what the benchmarks measured. `make bench` prints it and draws it; docs/performance.md
shows the same arithmetic.

Prices are AWS's published list prices for US East (N. Virginia), us-east-1, first tier.
The functions are arm64 at the template's 512 MB. Measured (bench.warm): the vend
function's time on a memory hit, the size of its answer and the bytes it logs per hit.
Assumed, and said so where printed: the billed time of a table hit (one GetItem) and of a
miss (the vend function waiting on the provider function), and the size of the Lambda
platform's own log lines.
"""

from __future__ import annotations

import math
from typing import Any

# -- list prices, us-east-1 ------------------------------------------------------------------
REST_API_PER_MILLION = 3.50  # API Gateway REST API, first 333 million requests a month
HTTP_API_PER_MILLION = 1.00  # API Gateway HTTP API, first 300 million a month
HTTP_API_METERING_BYTES = 512 * 1024  # an HTTP API request is metered per 512 KB
LAMBDA_PER_MILLION = 0.20  # Lambda requests
LAMBDA_ARM64_PER_GB_SECOND = 0.0000133334  # Lambda duration, arm64, first tier
DYNAMODB_READ_PER_MILLION_RRU = 0.125  # on-demand read request units
DYNAMODB_WRITE_PER_MILLION_WRU = 0.625  # on-demand write request units
SECRETS_MANAGER_PER_10K_CALLS = 0.05
LOGS_INGESTION_PER_GB = 0.50  # CloudWatch Logs, standard class
XRAY_PER_MILLION_TRACES = 5.00

MEMORY_GB = 512 / 1024  # the template's MemorySize
TARGET_HTTP = 1.5  # dollars per million vends with the HTTP API (issue 16)

# -- assumptions -------------------------------------------------------------------------------
TABLE_HIT_BILLED_MS = 5  # the vend function with one GetItem (not measured here: moto)
MISS_BILLED_MS = 300  # the vend function waiting for the provider function, and that one
PLATFORM_LOG_BYTES = 300  # Lambda's START, END and REPORT lines per invocation
REQUEST_BYTES = 2048  # a signed GET: the request line and its SigV4 headers, at most
XRAY_SAMPLED_SHARE = 0.059  # the default rule at 100 vends/s: 1 a second, then 5 %


def _duration(ms: float) -> float:
    """Dollars per million invocations of `ms` billed milliseconds at MEMORY_GB."""
    return ms / 1000 * MEMORY_GB * LAMBDA_ARM64_PER_GB_SECOND * 1e6


def billed_ms(measured_ms: float) -> int:
    """Lambda bills duration in 1 ms steps, rounded up."""
    return max(1, math.ceil(measured_ms))


def per_million(warm: dict[str, Any] | None) -> dict[str, Any]:
    """Dollars per million vends by API type and kind of vend, each item apart."""
    vend_ns = (warm or {}).get("handlers", {}).get("vend", {}).get("median_ns")
    answer_bytes = int((warm or {}).get("answer_bytes") or 1024)
    emf_bytes = float((warm or {}).get("log_bytes_per_hit") or 322)
    hit_ms = billed_ms(vend_ns / 1e6) if vend_ns else 1
    increments = math.ceil((REQUEST_BYTES + answer_bytes) / HTTP_API_METERING_BYTES)
    log_gb = (emf_bytes + PLATFORM_LOG_BYTES) / 1e9
    kinds: dict[str, dict[str, float]] = {
        "memory hit": {
            "vend function requests": LAMBDA_PER_MILLION,
            "vend function duration": _duration(hit_ms),
            "DynamoDB": 0.0,
        },
        "table hit": {
            "vend function requests": LAMBDA_PER_MILLION,
            "vend function duration": _duration(TABLE_HIT_BILLED_MS),
            # one eventually consistent GetItem of at most 4 KB: half a read unit
            "DynamoDB": 0.5 * DYNAMODB_READ_PER_MILLION_RRU,
        },
        "miss": {
            "vend function requests": LAMBDA_PER_MILLION,
            "vend function duration": _duration(MISS_BILLED_MS),
            # the vend function's read (1/2 unit), the provider's consistent read (1) and
            # the vend function's read of the new token (1); two writes of 2 units each
            "DynamoDB": 2.5 * DYNAMODB_READ_PER_MILLION_RRU + 4 * DYNAMODB_WRITE_PER_MILLION_WRU,
            "provider function": LAMBDA_PER_MILLION + _duration(MISS_BILLED_MS),
            "Secrets Manager": SECRETS_MANAGER_PER_10K_CALLS * 100,  # one GetSecretValue
        },
    }
    apis = {
        "REST": REST_API_PER_MILLION,
        "HTTP": HTTP_API_PER_MILLION * increments,
    }
    extras = {
        "CloudWatch Logs": log_gb * LOGS_INGESTION_PER_GB * 1e6,
        "X-Ray": XRAY_SAMPLED_SHARE * XRAY_PER_MILLION_TRACES,
    }
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for api, price in apis.items():
        table[api] = {}
        for kind, items in kinds.items():
            core = {"API Gateway": price, **items}
            total = sum(core.values())
            table[api][kind] = {
                "items": core,
                "total": total,
                "with_logs_and_traces": total + sum(extras.values()),
            }
    http_hits = [table["HTTP"][kind]["total"] for kind in ("memory hit", "table hit")]
    return {
        "per_million": table,
        "extras_per_million": extras,
        "inputs": {
            "measured": vend_ns is not None,  # False: bench.warm did not run, defaults used
            "vend_memory_hit_measured_ns": vend_ns,
            "vend_memory_hit_billed_ms": hit_ms,
            "table_hit_billed_ms_assumed": TABLE_HIT_BILLED_MS,
            "miss_billed_ms_assumed": MISS_BILLED_MS,
            "answer_bytes": answer_bytes,
            "http_api_increments_per_vend": increments,
            "log_bytes_per_vend": emf_bytes + PLATFORM_LOG_BYTES,
            "memory_gb": MEMORY_GB,
        },
        "prices": {
            "REST API per million": REST_API_PER_MILLION,
            "HTTP API per million": HTTP_API_PER_MILLION,
            "Lambda per million requests": LAMBDA_PER_MILLION,
            "Lambda arm64 per GB-second": LAMBDA_ARM64_PER_GB_SECOND,
            "DynamoDB per million RRU": DYNAMODB_READ_PER_MILLION_RRU,
            "DynamoDB per million WRU": DYNAMODB_WRITE_PER_MILLION_WRU,
            "Secrets Manager per 10,000 calls": SECRETS_MANAGER_PER_10K_CALLS,
            "CloudWatch Logs per GB": LOGS_INGESTION_PER_GB,
            "X-Ray per million traces": XRAY_PER_MILLION_TRACES,
        },
        "target_http": TARGET_HTTP,
        "http_hit_max": max(http_hits),
    }
