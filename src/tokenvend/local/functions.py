"""The template's functions, run in this process as Lambda would run them.

Each AWS::Serverless::Function is loaded from its CodeUri and Handler under a module name of
its own (`tokenvend_local_fn_<LogicalId>`), so that the five provider functions, which share
one app.py, are five module instances with five sets of globals, as five Lambda functions are.

Environment variables are process-wide, but every function has its own (PROVIDER differs).
A function reads them when its objects are built: the handlers build their objects from
`Settings.from_env()` on first use and keep them in module globals. So each function is
imported and its objects are built up front, under its own environment (a lock and a
temporary os.environ overlay), and nothing else is serialised: invocations run concurrently,
each against the objects built for its function. Anything a handler would read from the
environment later, at call time, finds the template's variables absent and fails loudly
rather than quietly reading another function's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from ..template import Stack, TemplateError
from .log import log

# What a function module keeps its objects in, and its function that builds them on first
# use from the environment; here they are built eagerly, each under its own function's
# environment.
_BUILDERS = {"_vendor": "vendor", "_refresher": "refresher"}
_ENV_LOCK = threading.Lock()
# What the local stack sets for every function itself, process-wide (stack.py): where AWS
# and the Lambda endpoint are, and which token URLs may be plain HTTP.
_STACK_SETTINGS = frozenset({"PLAIN_HTTP_HOSTS", "ALLOW_HTTP_LOOPBACK"})


def set_by_the_stack(name: str) -> bool:
    """True for a variable whose value the local stack decides, whatever the template says.
    The template declares these empty for deployment (botocore ignores an empty
    AWS_ENDPOINT_URL), and an empty one laid over the stack's own would send a function to
    AWS itself; a non-empty one would too."""
    return name.startswith("AWS_ENDPOINT_URL") or name in _STACK_SETTINGS


@contextmanager
def environment(overlay: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `overlay` on top, restored afterwards; one overlay at a time."""
    with _ENV_LOCK:
        saved = dict(os.environ)
        os.environ.update(overlay)
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)


@dataclass(frozen=True, slots=True)
class Invocation:
    payload: bytes
    error: str | None  # "Unhandled" when the handler raised, as Lambda's FunctionError
    request_id: str
    duration_ms: float


class LambdaContext:
    """What the Lambda Python runtime passes as `context`: the function's name, ARN, memory,
    the request's id, and the time left, which runs down on `clock` from `timeout_ms`.

    The one such object for the local stack, the tests and the benchmarks: those that need
    the time left to stay put (so that a run never defers for the machine's speed) pass
    `stopped` as the clock."""

    def __init__(
        self,
        function_name: str,
        timeout_ms: int = 60_000,
        *,
        arn: str | None = None,
        memory_limit_in_mb: int = 512,
        request_id: str | None = None,
        log_stream_name: str = "local",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = (
            arn or f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.identity = None
        self.client_context = None
        self._clock = clock
        self._deadline_ms = clock() * 1000 + timeout_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - self._clock() * 1000))


def stopped() -> float:
    """A clock that does not move: a LambdaContext on it keeps the time left it was given."""
    return 0.0


class LocalFunction:
    def __init__(
        self,
        *,
        logical_id: str,
        name: str,
        arn: str,
        source: Path,
        handler_name: str,
        timeout: int,
        memory_size: int,
        environment: dict[str, str],
        event_invoke_config: dict[str, Any] | None = None,
    ) -> None:
        self.logical_id = logical_id
        self.name = name
        self.arn = arn
        self.source = source
        self.handler_name = handler_name
        self.timeout = timeout
        self.memory_size = memory_size
        self.environment = environment
        self.event_invoke_config = event_invoke_config or {}
        self.log_stream = f"local/[$LATEST]{uuid.uuid4().hex}"
        self.module: ModuleType | None = None
        self._handler: Callable[[Any, Any], Any] | None = None

    def __repr__(self) -> str:
        return f"LocalFunction({self.name})"

    def lambda_environment(self) -> dict[str, str]:
        """The template's variables plus those the Lambda runtime sets, less those the local
        stack sets itself (`set_by_the_stack`): the process-wide ones stay in force."""
        return {
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream,
            **{
                name: value
                for name, value in self.environment.items()
                if not set_by_the_stack(name)
            },
        }

    def load(self) -> None:
        """Import the handler's module and build its objects, under this function's env."""
        module_name = f"tokenvend_local_fn_{self.logical_id}"
        spec = importlib.util.spec_from_file_location(module_name, self.source)
        if spec is None or spec.loader is None:
            raise TemplateError(f"{self.logical_id}: cannot load {self.source}")
        module = importlib.util.module_from_spec(spec)
        code_dir = str(self.source.parent)
        with environment(self.lambda_environment()):
            sys.modules[module_name] = module
            sys.path.insert(0, code_dir)  # as Lambda puts the code's folder on the path
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(code_dir)
            _build_objects(module)
        handler = getattr(module, self.handler_name, None)
        if not callable(handler):
            raise TemplateError(f"{self.logical_id}: {self.source} has no {self.handler_name}")
        self.module = module
        self._handler = handler

    def invoke(self, event: Any, request_id: str | None = None) -> Invocation:
        """One synchronous invocation; a handler's exception becomes Lambda's error payload."""
        if self._handler is None:
            raise RuntimeError(f"{self.name} is not loaded")
        request_id = request_id or str(uuid.uuid4())
        context = LambdaContext(
            self.name,
            self.timeout * 1000,
            arn=self.arn,
            memory_limit_in_mb=self.memory_size,
            request_id=request_id,
            log_stream_name=self.log_stream,
        )
        started = time.monotonic()
        error: str | None = None
        try:
            result = self._handler(event, context)
            payload = json.dumps(result).encode()
        except Exception as exc:
            error = "Unhandled"
            payload = json.dumps(
                {
                    "errorMessage": str(exc),
                    "errorType": type(exc).__name__,
                    "requestId": request_id,
                    "stackTrace": traceback.format_tb(exc.__traceback__),
                }
            ).encode()
            log(
                "the handler raised",
                level="ERROR",
                function_name=self.name,
                function_request_id=request_id,
                exception="".join(traceback.format_exception(exc)),
            )
        duration_ms = round((time.monotonic() - started) * 1000, 2)
        log(
            "invoked",
            function_name=self.name,
            function_request_id=request_id,
            duration_ms=duration_ms,
            function_error=error,
        )
        if duration_ms > self.timeout * 1000:
            log(
                "the invocation ran longer than the function's Timeout",
                level="WARNING",
                function_name=self.name,
                timeout_seconds=self.timeout,
            )
        return Invocation(payload, error, request_id, duration_ms)

    def invoke_async(self, event: Any, *, retry_delay: float = 1.0) -> threading.Thread:
        """An asynchronous invocation (InvocationType Event, EventBridge's schedule): run in
        the background, retried on failure as the function's EventInvokeConfig says
        (MaximumRetryAttempts, default 2, after 1 s, then 2 s, where Lambda waits minutes),
        then its outcome sent to the OnFailure / OnSuccess destination (SQS is served)."""
        thread = threading.Thread(
            target=self._run_async,
            args=(event, retry_delay),
            name=f"async-{self.name}",
            daemon=True,
        )
        thread.start()
        return thread

    def _run_async(self, event: Any, retry_delay: float) -> None:
        retries = int(self.event_invoke_config.get("MaximumRetryAttempts", 2))
        request_id = str(uuid.uuid4())
        attempts = 0
        while True:
            attempts += 1
            invocation = self.invoke(event, request_id)
            if invocation.error is None or attempts > retries:
                break
            time.sleep(retry_delay * attempts)
        destinations = self.event_invoke_config.get("DestinationConfig") or {}
        outcome = "OnSuccess" if invocation.error is None else "OnFailure"
        destination = destinations.get(outcome)
        if destination:
            self._send_record(destination, event, invocation, attempts)

    def _send_record(
        self, destination: dict[str, Any], event: Any, invocation: Invocation, attempts: int
    ) -> None:
        record = {
            "version": "1.0",
            "timestamp": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "requestContext": {
                "requestId": invocation.request_id,
                "functionArn": f"{self.arn}:$LATEST",
                "condition": "Success" if invocation.error is None else "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                **({"functionError": invocation.error} if invocation.error else {}),
            },
            "responsePayload": json.loads(invocation.payload or b"null"),
        }
        kind, arn = destination.get("Type"), str(destination.get("Destination", ""))
        if kind != "SQS" and ":sqs:" not in arn:
            log("destination not served locally", level="WARNING", destination=arn)
            return
        import boto3

        sqs = boto3.session.Session().client("sqs")
        try:
            queue_url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))
        except Exception as exc:
            log(
                "could not send to the destination", level="ERROR", destination=arn, error=repr(exc)
            )
            return
        log(
            "invocation record sent",
            function_name=self.name,
            function_request_id=invocation.request_id,
            destination=arn,
        )


def _build_objects(module: ModuleType) -> None:
    for attribute, builder in _BUILDERS.items():
        if hasattr(module, attribute) and getattr(module, attribute) is None:
            getattr(module, builder)()


def functions_of(stack: Stack, root: Path) -> dict[str, LocalFunction]:
    """Every AWS::Serverless::Function the stack creates (its Condition, if any, holding for
    the parameters), by function name, not yet loaded."""
    found: dict[str, LocalFunction] = {}
    for logical_id in stack.function_ids():
        runtime = str(stack.function_property(logical_id, "Runtime", ""))
        if runtime and not runtime.startswith("python3"):
            raise TemplateError(f"{logical_id}: runtime {runtime} cannot run in this process")
        code_uri = stack.function_property(logical_id, "CodeUri")
        handler = stack.function_property(logical_id, "Handler")
        if not isinstance(code_uri, str) or not isinstance(handler, str) or "." not in handler:
            raise TemplateError(
                f"{logical_id}: needs a local CodeUri and a module.function Handler"
            )
        module_path, _, function_name = handler.rpartition(".")
        source = (root / code_uri / (module_path.replace(".", "/") + ".py")).resolve()
        if not source.is_file():
            raise TemplateError(f"{logical_id}: {source} does not exist")
        name = stack.physical_id(logical_id)
        found[name] = LocalFunction(
            logical_id=logical_id,
            name=name,
            arn=stack.arn(logical_id),
            source=source,
            handler_name=function_name,
            timeout=int(stack.function_property(logical_id, "Timeout", 3)),
            memory_size=int(stack.function_property(logical_id, "MemorySize", 128)),
            environment=stack.function_environment(logical_id),
            event_invoke_config=stack.function_property(logical_id, "EventInvokeConfig"),
        )
    return found
