"""What every benchmark shares: the environment, a sink for Powertools' output, the
functions loaded as Lambda loads them, AWS call counting, and the statistics."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import statistics
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tokenvend.awslocal import OFFLINE_ENV
from tokenvend.local import functions

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"
LAYER = ROOT / "layers" / "core"
EVENTS = ROOT / "events"
RESULTS = ROOT / "bench" / "results.json"
TABLE = "tokenvend-bench-TokenTable"
FUNCTION_PREFIX = "tokenvend-bench-"
CALLER = "arn:aws:iam::123456789012:user/workload"
# Lambda gives a function CPU in proportion to its memory: one vCPU at 1,769 MB.
LAMBDA_VCPU_AT_512MB = 512 / 1769

# Loopback only, fake credentials, X-Ray off (no daemon to reach), Powertools as deployed.
ENV = {
    **OFFLINE_ENV,
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "TABLE_NAME": TABLE,
    "PROVIDER_FUNCTION_PREFIX": FUNCTION_PREFIX,
}
UNSET = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_LAMBDA",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "TOKENVEND_API_URL",
    "AWS_LAMBDA_FUNCTION_NAME",
    "PROVIDER",
)


def configure_environment() -> None:
    """Before anything imports Powertools or boto3."""
    for name in UNSET:
        os.environ.pop(name, None)
    os.environ.update(ENV)
    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))  # the layer, as Lambda puts it on the path (/opt/python)
    import warnings

    warnings.filterwarnings("ignore", message="No application metrics to publish")


class NullSink:
    """A stream that keeps nothing: Powertools still formats every log line and serializes
    every EMF metrics document, as in Lambda, but printing them does not weigh on the figures.
    It counts what it was given."""

    def __init__(self) -> None:
        self.writes = 0
        self.chars = 0

    def write(self, text: str) -> int:
        self.writes += 1
        self.chars += len(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


SINK = NullSink()


@contextlib.contextmanager
def powertools_to_sink() -> Iterator[NullSink]:
    """Metrics print their EMF documents with print() (sys.stdout at call time); the Logger's
    handler holds the stdout of its creation: both are pointed at the sink for the duration."""
    from tokenvend_core.observability import logger

    handlers = [h for h in logger._logger.handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(SINK) for h in handlers]
    try:
        with contextlib.redirect_stdout(SINK):
            yield SINK
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            if stream is not None:
                handler.setStream(stream)


def load_function(folder: str, name: str | None = None) -> Any:
    """A function's app.py as its own module instance, as tests/support.py loads it (typed
    Any: the benchmarks set its `_vendor` / `_refresher`, as the tests do)."""
    name = name or f"bench_{folder}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, FUNCTIONS / folder / "app.py")
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LambdaContext(functions.LambdaContext):
    """The local stack's Lambda context with its clock stopped: a benchmark's calls all see
    the time left it gave."""

    def __init__(self, name: str, timeout_ms: int = 20_000) -> None:
        super().__init__(name, timeout_ms, log_stream_name="bench", clock=functions.stopped)


def api_event(provider: str, connection: str, min_ttl: int | None = None) -> dict[str, Any]:
    """events/vend-get.json pointed at another provider and connection."""
    data: dict[str, Any] = json.loads((EVENTS / "vend-get.json").read_text())
    data["pathParameters"] = {"provider": provider, "connection": connection}
    data["path"] = f"/tokens/{provider}/{connection}"
    query = None if min_ttl is None else {"min_ttl": str(min_ttl)}
    data["queryStringParameters"] = query
    data["multiValueQueryStringParameters"] = (
        None if query is None else {k: [v] for k, v in query.items()}
    )
    data["requestContext"]["identity"]["userArn"] = CALLER
    return data


def create_table(client: Any) -> None:
    from tokenvend.template import load_template, table_definition

    client.create_table(TableName=TABLE, **table_definition(load_template(ROOT / "template.yaml")))


class AwsCalls:
    """Counts the API calls boto3 clients make (botocore's before-call event: once per
    operation called, before any retry), by "service.Operation"."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def watch(self, *clients: Any) -> AwsCalls:
        for client in clients:
            client.meta.events.register("before-call.*.*", self._seen)
        return self

    def _seen(self, model: Any = None, **_: Any) -> None:
        service = model.service_model.service_name if model is not None else "?"
        with self._lock:
            self.counts[f"{service}.{model.name if model is not None else '?'}"] += 1

    def total(self, service: str | None = None) -> int:
        with self._lock:
            return sum(
                n for key, n in self.counts.items() if service is None or key.startswith(service)
            )

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()


# -- statistics -----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def fmt_ns(ns: float) -> str:
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def fmt_s(seconds: float) -> str:
    return fmt_ns(seconds * 1e9)
