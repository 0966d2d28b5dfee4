"""Powertools Logger, Metrics and Tracer, configured once for every function.

Handlers apply the decorators in one order: tracer, then logger, then metrics. The tracer
never captures responses or errors' payloads: they may hold tokens.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "tokenvend"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=SERVICE, service=SERVICE)
tracer = Tracer(service=SERVICE)

__all__ = ["MetricUnit", "logger", "metrics", "tracer"]
