"""Powertools Logger, Metrics and Tracer, configured once for every function.

Handlers apply the decorators in one order: tracer, then logger, then metrics. The tracer
never captures responses or errors' payloads: they may hold tokens. Metrics go through
`emit`, which the schedule's worker threads share safely; every metric has the dimensions
`service` and, once a handler knows it, `provider`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = "tokenvend"

# Timestamps in RFC 3339, UTC, to the millisecond ("2026-11-30T07:47:27.842+00:00"), not
# Powertools' default ("2026-11-30 07:47:27,842+0000", local time): one format that
# datetime.fromisoformat, jq and log viewers read, the one tokenvend local's own lines use
# (src/tokenvend/local/log.py) and the one Powertools means to make its default.
logger = Logger(service=SERVICE, utc=True, use_rfc3339=True)
metrics = Metrics(namespace=SERVICE, service=SERVICE)
# botocore is patched at once; requests only where it is used (runtime.build_refresher).
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))
# urllib3 would log request lines (with query strings) at DEBUG: never let it.
logging.getLogger("urllib3").setLevel(logging.WARNING)

_lock = threading.RLock()
# Powertools' metric set is one object per process. In Lambda one invocation runs at a
# time; where several overlap in one process (the schedule's workers; tokenvend local; the
# tests), adding and flushing must not interleave, so the flush takes the same lock.
_flush = metrics.provider.flush_metrics


def _locked_flush(*args: Any, **kwargs: Any) -> None:
    with _lock:
        _flush(*args, **kwargs)


metrics.provider.flush_metrics = _locked_flush  # type: ignore[method-assign]


def emit(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    with _lock:
        metrics.add_metric(name=name, unit=unit, value=value)


def dimension(name: str, value: str) -> None:
    with _lock:
        metrics.add_dimension(name=name, value=value)


def emit_for_connection(
    name: str, value: float, unit: MetricUnit, *, provider: str, connection: str
) -> None:
    """A metric of one connection, with `connection` as a further dimension: only for the few
    connections whose cardinality allows it (wps365 users' refresh grants)."""
    with (
        _lock,
        single_metric(
            name=name,
            unit=unit,
            value=value,
            namespace=SERVICE,
            default_dimensions={"service": SERVICE, "provider": provider},
        ) as metric,
    ):
        metric.add_dimension(name="connection", value=connection)


__all__ = ["MetricUnit", "dimension", "emit", "emit_for_connection", "logger", "metrics", "tracer"]
