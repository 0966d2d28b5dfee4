"""`tokenvend local`: the whole stack of template.yaml on this machine, with no Docker and no
AWS account.

- AWS on loopback (`--aws-port`): moto's server, in this process (stack.py, ../awslocal.py).
  The table, the queues, the keys and the log groups are created from the template's own
  definitions; the functions write their audit records into the audit log group.
- The template's functions, run in this process (functions.py), behind the Lambda Invoke
  API (`--lambda-port`, lambda_api.py) and behind API Gateway's REST API (`--api-port`,
  http_api.py), which verifies SigV4 signatures against the keys of the local IAM
  (sigv4.py) and writes the stage's access log in the template's format (access_log.py).
  Each function gets the environment the template gives it.
- The template's schedules (schedule.py), at their rate or every `--refresh-every` seconds,
  as asynchronous invocations: retried and sent to their failure destination (an SQS queue
  of the template) as the functions' EventInvokeConfig says. The template's SQS event source
  mappings (sources.py) feed their queues' batches to their functions.
- Unless `--no-sandbox`: the sandbox token endpoints and a ready `demo` connection per
  provider (demo.py).
- With `--docker-bridge`: every server on the docker bridge's address as well (bridge.py),
  where the functions that SAM CLI runs in containers reach it; loopback stays, and never
  0.0.0.0. Always: `.tokenvend/sam-env.json` (samenv.py), SAM CLI's `--env-vars` file that
  points those functions at this stack.

Standard output carries only the `ready` line and the `export` lines for a second shell;
everything else, the functions' Powertools JSON logs and metrics included, goes to standard
error. SIGINT or SIGTERM stops it cleanly (exit status 0).
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from traceback import format_exception
from types import FrameType

__all__ = ["run"]

_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


def run(
    *,
    stack: str = "tokenvend",
    region: str | None = None,
    api_port: int = 3000,
    lambda_port: int = 3001,
    aws_port: int = 4566,
    sandbox_port: int = 3002,
    sandbox: bool = True,
    refresh_every: float | None = None,
    parameters: Mapping[str, str] | None = None,
    template: Path | None = None,
    docker_bridge: str | None = None,
    workdir: Path | None = None,
    fresh: bool = False,
) -> int:
    """Serve until SIGINT or SIGTERM. Returns the exit status: 0 after a clean stop, 2 for
    bad input, 1 when the stack cannot start. A port of 0 picks a free one. `docker_bridge`:
    None (loopback only), "" (docker0's address), an interface name or an IP address.
    `workdir`: where .tokenvend/ goes (default: the current directory)."""
    import os

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    region = region or "us-east-1"
    problem = _check(stack, region, refresh_every, (api_port, lambda_port, aws_port, sandbox_port))
    if problem:
        print(f"tokenvend local: {problem}", file=sys.stderr, flush=True)
        return 2

    from ..template import TemplateError
    from .log import LineWriter, log
    from .stack import LocalStack, Options, StartError, logs_to_stderr, print_banner

    stop = threading.Event()
    previous = _on_signals(stop)
    out, err = sys.stdout, sys.stderr
    # The functions' logs and metrics go to stderr, one whole line at a time.
    sys.stdout = sys.stderr = LineWriter(err)
    local: LocalStack | None = None
    try:
        try:
            local = LocalStack(
                Options(
                    stack=stack,
                    region=region,
                    api_port=api_port,
                    lambda_port=lambda_port,
                    aws_port=aws_port,
                    sandbox_port=sandbox_port,
                    sandbox=sandbox,
                    refresh_every=refresh_every,
                    parameters=dict(parameters or {}),
                    template=template,
                    docker_bridge=docker_bridge,
                    workdir=workdir,
                    fresh=fresh,
                )
            )
        except (TemplateError, FileNotFoundError) as exc:
            print(f"tokenvend local: {exc}", file=sys.stderr, flush=True)
            return 2
        try:
            local.start()
        except (StartError, TemplateError) as exc:
            print(f"tokenvend local: {exc}", file=sys.stderr, flush=True)
            return 1
        except Exception as exc:  # a bug or an environment problem: the details to the log
            log("could not start", level="ERROR", exception="".join(format_exception(exc)))
            print(f"tokenvend local: could not start: {exc!r}", file=sys.stderr, flush=True)
            return 1
        logs_to_stderr(out, err)
        if not stop.is_set():
            print_banner(local.banner(), out)
        while not stop.wait(0.5):
            pass
        return 0
    except KeyboardInterrupt:  # before our handler was installed, or not in the main thread
        return 0
    finally:
        if local is not None:
            local.stop()
        sys.stdout, sys.stderr = out, err
        _restore_signals(previous)


def _check(
    stack: str, region: str, refresh_every: float | None, ports: tuple[int, ...]
) -> str | None:
    if not _STACK_NAME.match(stack):
        return f"--stack {stack!r}: a CloudFormation stack name (letters, digits, hyphens)"
    if not _REGION.match(region):
        return f"--region {region!r} is not an AWS region name"
    if refresh_every is not None and not 0 < refresh_every <= 86400:
        return "--refresh-every must be a number of seconds above 0"
    if any(not 0 <= port <= 65535 for port in ports):
        return "ports must be from 0 (pick a free one) to 65535"
    return None


_Handlers = dict[int, object]


def _on_signals(stop: threading.Event) -> _Handlers:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: _Handlers = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handle)
    return previous


def _restore_signals(previous: _Handlers) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]
