"""`.tokenvend/sam-env.json`: SAM CLI's `--env-vars` file that points the template's
functions, run in SAM CLI's own containers, at this local stack.

    sam build --parameter-overrides Architecture=x86_64
    tokenvend local --docker-bridge
    sam local invoke VendFunction -e events/vend-get.json --env-vars .tokenvend/sam-env.json

The file is `{"<LogicalId>": {"NAME": "value", ...}}` for every function of template.yaml.
Each holds every variable the template declares for that function, with the value the local
stack gives its own copy of the function (its stack name and parameters: the table, the
secrets' prefix, the queues), except the ones a container needs told otherwise: the AWS and
Lambda endpoints (the bridge address, or host.docker.internal without `--docker-bridge`)
and the hosts the demo connections' plain-HTTP token URLs name. SAM CLI passes a function
only the variables its template declares (and its own AWS_*), and lets a variable of the
calling shell override a declared default but not this file: so every declared one is here,
and nothing else (template.yaml declares the endpoints and PLAIN_HTTP_HOSTS, empty).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .functions import LocalFunction, set_by_the_stack

FILE = Path(".tokenvend") / "sam-env.json"
# What a container on Docker Desktop (and on Linux with SAM CLI's
# `--add-host host.docker.internal:host-gateway`) calls the host.
DOCKER_HOST_NAME = "host.docker.internal"


def container_environment(
    functions: Iterable[LocalFunction],
    *,
    aws_url: str,
    lambda_url: str,
    plain_http_hosts: Iterable[str] = (),
) -> dict[str, dict[str, str]]:
    """{LogicalId: its variables} for SAM CLI, given the URLs at which a container reaches
    the local stack's AWS and Lambda endpoints."""
    hosts = ",".join(plain_http_hosts)
    content: dict[str, dict[str, str]] = {}
    for function in sorted(functions, key=lambda f: f.logical_id):
        variables: dict[str, str] = {}
        for name, value in function.environment.items():
            if not set_by_the_stack(name):
                variables[name] = value
            elif name == "AWS_ENDPOINT_URL_LAMBDA":
                variables[name] = lambda_url
            elif name.startswith("AWS_ENDPOINT_URL"):
                variables[name] = aws_url
            elif name == "PLAIN_HTTP_HOSTS":
                variables[name] = hosts
            else:  # ALLOW_HTTP_LOOPBACK: a container's own loopback serves nothing of ours
                variables[name] = ""
        content[function.logical_id] = variables
    return content


def endpoint(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write(directory: Path, content: Mapping[str, Mapping[str, str]]) -> Path:
    """Write the file under `directory` (replacing it whole, never half-written); its path."""
    path = (directory / FILE).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path
