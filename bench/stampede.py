"""3. Stampede: many concurrent cold vends, through the real handlers, on moto's server.

AWS is moto's server on loopback (`tokenvend.awslocal.MotoServer`: one request at a time,
which is what makes a conditional write atomic there, as it is in DynamoDB); the token
endpoint is the sandbox (`tokenvend.sandbox.Sandbox`, provider `oauth2`).

A simulated container is what one Lambda execution environment holds: the vend function's
module with its own Vendor (its own memory), the provider function's module with its own
Refresher, each with its own boto3 clients (configured as `tokenvend_core.aws.clients.client` does),
and the vend function invoking the provider function in-process (same event, same JSON).
Like a Lambda container it serves one request at a time: each of up to 64 worker threads
owns one container and takes vends from a shared queue. Every row starts from an empty
table item and empty memories (new connection names), all workers released at once.

Counted: requests reaching the token endpoint, per connection (the only right answer is 1);
the functions' AWS calls (botocore's before-call), per vend.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    FUNCTION_PREFIX,
    TABLE,
    AwsCalls,
    LambdaContext,
    api_event,
    create_table,
    load_function,
    powertools_to_sink,
)

WORKERS = 64
ROW_TIMEOUT = 120.0
ROWS: list[tuple[str, int, int]] = [  # label, connections, vends per connection
    ("1 vend, 1 connection", 1, 1),
    ("10 vends, 1 connection", 1, 10),
    ("100 vends, 1 connection", 1, 100),
    ("1,000 vends, 1 connection", 1, 1000),
    ("1,000 vends, 100 connections x 10", 100, 10),
]


def _client(service: str) -> Any:
    """A client as tokenvend_core.aws.clients.client configures it, from the default session (the
    runtime's own makes a Session per client, which costs ~50 ms each: too slow for 64
    containers set up in a benchmark; the configuration is the same)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=2,
        read_timeout=5,
        retries={"mode": "standard", "max_attempts": 3},
        tcp_keepalive=True,
    )
    return boto3.client(service, config=config)


class Container:
    """One Lambda execution environment's worth of the vend and provider functions."""

    def __init__(self, index: int, settings: Any) -> None:
        from tokenvend_core.aws.secrets import SecretStore
        from tokenvend_core.aws.store import TokenStore
        from tokenvend_core.catalogue.spec import spec_for
        from tokenvend_core.refresh.endpoint import TokenEndpoint
        from tokenvend_core.refresh.refresher import Refresher
        from tokenvend_core.vend.invoker import LambdaInvoker
        from tokenvend_core.vend.vendor import Vendor

        vend_ddb, provider_ddb, provider_sm = (
            _client("dynamodb"),
            _client("dynamodb"),
            _client("secretsmanager"),
        )
        self.vend_calls = AwsCalls().watch(vend_ddb)
        self.provider_calls = AwsCalls().watch(provider_ddb, provider_sm)
        self.provider_module = load_function("provider")
        self.provider_module._refresher = Refresher(
            spec_for("oauth2"),
            settings,
            SecretStore(provider_sm, settings.secrets_prefix),
            TokenStore(provider_ddb, TABLE),
            TokenEndpoint(),
            owner=f"bench-container-{index}",
        )
        provider_module = self.provider_module
        container = self

        class InProcessInvoker(LambdaInvoker):
            """The vend function's invoker, with the Lambda service replaced by a direct call
            into the provider function's handler: same event, same JSON, same errors."""

            def _invoke(self, function_name: str, payload: str) -> tuple[str | None, bytes]:
                container.invocations += 1
                try:
                    answer = provider_module.lambda_handler(
                        json.loads(payload), LambdaContext(function_name, 60_000)
                    )
                except Exception as exc:  # what Lambda reports for an unhandled error
                    return "Unhandled", json.dumps({"errorType": type(exc).__name__}).encode()
                return None, json.dumps(answer).encode()

        self.invocations = 0
        self.vendor = Vendor(
            TokenStore(vend_ddb, TABLE),
            InProcessInvoker(None, FUNCTION_PREFIX),
            memory_seconds=settings.memory_cache,
            skew=settings.clock_skew,
        )
        self.vend_module = load_function("vend")
        self.vend_module._vendor = self.vendor
        self.context = LambdaContext(f"{FUNCTION_PREFIX}vend", 20_000)

    def vend(self, connection: str) -> tuple[int, str]:
        """(status, the token served or the error's code)."""
        answer = self.vend_module.lambda_handler(api_event("oauth2", connection), self.context)
        body = json.loads(answer["body"])
        return answer["statusCode"], body.get("access_token") or body["error"]["code"]

    def reset(self) -> None:
        self.vendor.forget()
        self.vend_calls.reset()
        self.provider_calls.reset()
        self.invocations = 0


@contextlib.contextmanager
def _metrics_serialized() -> Iterator[None]:
    """Powertools' Metrics is one object per process, and Lambda runs one request per
    process at a time; threads standing in for separate containers share it here, and its
    flush iterates dictionaries that another thread's add would change ("dictionary changed
    size during iteration"). So its add, dimension and flush calls take one lock, as
    separate processes would never interleave them. What is counted is not affected."""
    from tokenvend_core.observability import metrics

    provider = metrics.provider  # the EMF provider holds the state; the decorator calls it
    lock = threading.RLock()
    names = ("add_metric", "add_dimension", "add_dimensions", "add_metadata", "flush_metrics")
    for name in names:
        method = getattr(provider, name)

        def locked(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            with lock:
                return _method(*args, **kwargs)

        setattr(provider, name, locked)
    try:
        yield
    finally:
        for name in names:
            delattr(provider, name)


def _put_connections(sandbox: Any, secrets_client: Any, prefix: str, names: list[str]) -> None:
    for name in names:
        client_id = f"bench-{name}"
        secret = f"bench-secret-{name}"
        sandbox.register("oauth2", client_id, secret, scope="read write")
        secrets_client.create_secret(
            Name=f"{prefix}oauth2/{name}",
            SecretString=json.dumps(
                {
                    "token_url": sandbox.token_url("oauth2"),
                    "client_id": client_id,
                    "client_secret": secret,
                    "scope": "read write",
                }
            ),
        )


def _run_row(
    containers: list[Container], jobs: list[str], timeout: float
) -> tuple[list[tuple[str, int, str]], float, int]:
    """Each worker owns one container; all start together. Returns ((connection, status,
    token or error) for every vend done, seconds, vends unfinished at the timeout)."""
    work: queue.SimpleQueue[str] = queue.SimpleQueue()
    for job in jobs:
        work.put(job)
    results: list[tuple[str, int, str]] = []
    lock = threading.Lock()
    workers = containers[: min(len(containers), len(jobs))]
    start = threading.Barrier(len(workers) + 1)

    def serve(container: Container) -> None:
        start.wait()
        while True:
            try:
                connection = work.get_nowait()
            except queue.Empty:
                return
            try:
                status, token = container.vend(connection)
            except Exception as exc:
                where = traceback.extract_tb(exc.__traceback__)[-1]
                status, token = (
                    0,
                    (
                        f"crash: {type(exc).__name__}: {exc} "
                        f"({Path(where.filename).name}:{where.lineno})"
                    ),
                )
            with lock:
                results.append((connection, status, token))

    threads = [
        threading.Thread(target=serve, args=(c,), name=f"container-{i}", daemon=True)
        for i, c in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    deadline = began + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    seconds = time.perf_counter() - began
    with lock:
        done = list(results)
    return done, seconds, len(jobs) - len(done)


def run() -> dict[str, Any]:
    import boto3

    from tokenvend.awslocal import MotoServer
    from tokenvend.sandbox import Sandbox
    from tokenvend_core.settings import Settings

    settings = Settings(  # the template's defaults; one provider function, oauth2
        table_name=TABLE,
        provider="oauth2",
        provider_function_prefix=FUNCTION_PREFIX,
        allow_http_loopback=True,  # the sandbox is plain HTTP on loopback
    )
    rows = []
    saved = os.environ.get("AWS_ENDPOINT_URL")
    with MotoServer() as moto, Sandbox() as sandbox, powertools_to_sink(), _metrics_serialized():
        os.environ["AWS_ENDPOINT_URL"] = moto.url
        try:
            create_table(boto3.client("dynamodb"))
            setup_secrets = boto3.client("secretsmanager")
            containers = [Container(i, settings) for i in range(WORKERS)]
            for r, (label, connections, per_connection) in enumerate(ROWS):
                names = [f"row{r}-c{i:03d}" for i in range(connections)]
                _put_connections(sandbox, setup_secrets, settings.secrets_prefix, names)
                jobs = [name for name in names for _ in range(per_connection)]
                for container in containers:
                    container.reset()
                sandbox.reset()
                results, seconds, unfinished = _run_row(containers, jobs, ROW_TIMEOUT)
                per_connection_calls = Counter(
                    (rec.basic_auth or ("?", ""))[0].removeprefix("bench-")
                    for rec in sandbox.requests("oauth2")
                )
                vend_ddb = sum(c.vend_calls.total("dynamodb") for c in containers)
                provider_ddb = sum(c.provider_calls.total("dynamodb") for c in containers)
                provider_sm = sum(c.provider_calls.total("secretsmanager") for c in containers)
                operations: Counter[str] = Counter()
                for c in containers:
                    operations.update(c.vend_calls.counts)
                    operations.update(c.provider_calls.counts)
                statuses = Counter(status for _, status, _ in results)
                served: dict[str, set[str]] = {}
                for name, status, token in results:
                    if status == 200:
                        served.setdefault(name, set()).add(token)
                vends = len(jobs)
                rows.append(
                    {
                        "row": label,
                        "connections": connections,
                        "vends": vends,
                        "containers": min(WORKERS, vends),
                        "seconds": seconds,
                        "unfinished": unfinished,
                        "statuses": {str(k): v for k, v in sorted(statuses.items())},
                        "errors": dict(Counter(t for _, s, t in results if s != 200)),
                        "token_endpoint_calls": sandbox.calls("oauth2"),
                        "token_endpoint_calls_per_connection_min": min(
                            (per_connection_calls.get(n, 0) for n in names), default=0
                        ),
                        "token_endpoint_calls_per_connection_max": max(
                            (per_connection_calls.get(n, 0) for n in names), default=0
                        ),
                        "exactly_one_per_connection": all(
                            per_connection_calls.get(n, 0) == 1 for n in names
                        )
                        and sandbox.calls("oauth2") == connections,
                        "distinct_tokens_per_connection_max": max(
                            (len(tokens) for tokens in served.values()), default=0
                        ),
                        "provider_invocations": sum(c.invocations for c in containers),
                        "dynamodb_calls_per_vend": (vend_ddb + provider_ddb) / vends,
                        "dynamodb_calls_per_vend_vend_function": vend_ddb / vends,
                        "dynamodb_calls_per_vend_provider_function": provider_ddb / vends,
                        "secretsmanager_calls_per_vend": provider_sm / vends,
                        "operations": dict(sorted(operations.items())),
                    }
                )
        finally:
            if saved is None:
                os.environ.pop("AWS_ENDPOINT_URL", None)
            else:
                os.environ["AWS_ENDPOINT_URL"] = saved
    return {
        "aws": "moto server on loopback, one request at a time (tokenvend.awslocal.MotoServer)",
        "token_endpoint": "tokenvend.sandbox.Sandbox, provider oauth2",
        "workers": WORKERS,
        "rows": rows,
    }


if __name__ == "__main__":
    from bench.common import configure_environment

    configure_environment()
    print(json.dumps(run(), indent=2))
