"""A provider function: one deployed per provider from this one entry point; the
environment variable PROVIDER says which. Shared because the providers differ only in data
(tokenvend_core/providers.toml), so five copies of this file would differ in nothing."""

from __future__ import annotations

from typing import Any

from tokenvend_core import audit
from tokenvend_core.observability import dimension, logger, metrics, tracer
from tokenvend_core.refresh import events
from tokenvend_core.refresh.refresher import Refresher
from tokenvend_core.refresh.runtime import build_refresher
from tokenvend_core.settings import Settings

_refresher: Refresher | None = None


def refresher() -> Refresher:
    global _refresher
    if _refresher is None:
        _refresher = build_refresher(Settings.from_env())
    return _refresher


@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    current = refresher()
    dimension("provider", current.provider)
    with audit.bind(request_id=context.aws_request_id):  # unless the vend function's is given
        return events.handle(event, current, context.get_remaining_time_in_millis)
