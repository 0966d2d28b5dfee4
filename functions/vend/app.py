"""The vend function: GET /tokens/{provider}/{connection}, POST .../refresh, POST
/connections/{provider}/{connection}/connect and GET /connect/callback (the link flow)."""

from __future__ import annotations

from typing import Any

from tokenvend_core import audit
from tokenvend_core.observability import logger, metrics, tracer
from tokenvend_core.settings import Settings
from tokenvend_core.vend import api
from tokenvend_core.vend.runtime import build_vendor
from tokenvend_core.vend.vendor import Vendor

_vendor: Vendor | None = None


def vendor() -> Vendor:
    global _vendor
    if _vendor is None:
        _vendor = build_vendor(Settings.from_env())
    return _vendor


@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with audit.bind(request_id=context.aws_request_id):  # unless API Gateway's is given
        return api.handle(
            event, vendor(), remaining=lambda: context.get_remaining_time_in_millis() / 1000
        )
