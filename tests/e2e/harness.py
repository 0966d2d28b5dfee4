"""The end-to-end harness: `tokenvend local` as a subprocess, and what a second shell does
with its export lines (signed HTTP, boto3 at the local endpoints, the sandbox's control
surface)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tokenvend_core.names import PROVIDERS

__all__ = ["PROVIDERS", "LocalProcess"]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 45  # seconds: three stacks start at once on a small CI machine
STOP_TIMEOUT = 15
PORTS = ["--api-port", "0", "--lambda-port", "0", "--aws-port", "0", "--sandbox-port", "0"]

MODULE = [sys.executable, "-m", "tokenvend.local"]


def console_script() -> str | None:
    """The `tokenvend` console script of this interpreter's environment, if installed."""
    candidate = Path(sys.executable).with_name("tokenvend")
    return str(candidate) if candidate.exists() else None


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without any AWS or tokenvend setting that could point elsewhere."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "TOKENVEND_", "POWERTOOLS_"))
    }
    env.update(PYTHONUNBUFFERED="1", AWS_EC2_METADATA_DISABLED="true", **extra)
    return env


class LocalProcess:
    """One `tokenvend local` subprocess; its stdout and stderr read as they come."""

    def __init__(
        self, command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.command = command
        self.process = subprocess.Popen(
            command,
            cwd=cwd or ROOT,
            env=clean_environment(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        for stream, lines in (
            (self.process.stdout, self.stdout),
            (self.process.stderr, self.stderr),
        ):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()
        self.env: dict[str, str] = {}
        self.sandbox_url = ""

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._lock:
                lines.append(line.rstrip("\n"))
                if lines is self.stdout and line.startswith("#"):
                    self._ready.set()  # the hint line closes the export block

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> LocalProcess:
        give_up = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the readers drain
                pytest.fail(
                    f"tokenvend local exited with {self.process.returncode} before ready:\n"
                    + "\n".join(self.stderr[-20:])
                )
            if time.monotonic() > give_up:
                pytest.fail(
                    f"tokenvend local not ready in {timeout} s:\n" + "\n".join(self.stderr[-20:])
                )
        ready = [line for line in self.stdout if line.startswith("ready")]
        assert len(ready) == 1, self.stdout
        self.env = dict(re.findall(r"^export (\w+)=(\S+)$", "\n".join(self.stdout), re.M))
        found = re.search(r"sandbox (http://[\d.:]+)", ready[0])
        self.sandbox_url = found.group(1) if found else ""
        return self

    # -- what the stack wrote ---------------------------------------------------------------

    def mark(self) -> int:
        with self._lock:
            return len(self.stderr)

    def log_records(self, since: int = 0) -> list[dict[str, Any]]:
        """The JSON lines of stderr (the functions' and the local stack's), from `since`."""
        with self._lock:
            lines = self.stderr[since:]
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def invocations(self, function: str, since: int = 0) -> list[dict[str, Any]]:
        return [
            r
            for r in self.log_records(since)
            if r.get("message") == "invoked" and r.get("function_name") == function
        ]

    # -- the second shell -------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.env["TOKENVEND_API_URL"]

    @property
    def region(self) -> str:
        return self.env["AWS_REGION"]

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.env["AWS_ACCESS_KEY_ID"], self.env["AWS_SECRET_ACCESS_KEY"])

    def client(self, service: str, credentials: Credentials | None = None) -> Any:
        creds = credentials or self.credentials
        endpoint = self.env[
            "AWS_ENDPOINT_URL_LAMBDA" if service == "lambda" else "AWS_ENDPOINT_URL"
        ]
        return boto3.session.Session().client(
            service,
            region_name=self.region,
            endpoint_url=endpoint,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            aws_session_token=creds.token,
        )

    def shell_env(self) -> dict[str, str]:
        """The environment of a second shell that ran the export lines."""
        return clean_environment(**self.env)

    def signed(
        self,
        method: str,
        path: str,
        *,
        credentials: Credentials | None = None,
        body: bytes | None = None,
        signed_at: datetime | None = None,
    ) -> tuple[str, dict[str, str]]:
        """(URL, headers) of a request to the API, SigV4-signed for execute-api by botocore,
        as of `signed_at` (default now)."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = AWSRequest(method=method, url=self.api_url + path, data=body, headers=headers)
        signer = SigV4Auth(credentials or self.credentials, "execute-api", self.region)
        if signed_at is None:
            signer.add_auth(request)
        else:
            with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
                signer.add_auth(request)
        prepared = request.prepare()
        return prepared.url, dict(prepared.headers)

    def call(
        self,
        method: str,
        path: str,
        *,
        credentials: Credentials | None = None,
        body: bytes | None = None,
        signed_at: datetime | None = None,
        sign: bool = True,
    ) -> requests.Response:
        """A request to the API, signed unless `sign` is false."""
        if sign:
            url, headers = self.signed(
                method, path, credentials=credentials, body=body, signed_at=signed_at
            )
        else:
            url, headers = self.api_url + path, {}
        return requests.request(method, url, headers=headers, data=body, timeout=30)

    def sandbox(self, method: str, path: str, body: Any = None) -> Any:
        """The sandbox's control surface (/_sandbox/...)."""
        answer = requests.request(
            method, f"{self.sandbox_url}/_sandbox/{path}", json=body, timeout=10
        )
        answer.raise_for_status()
        return answer.json()

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


# -- helpers the tests share ----------------------------------------------------------------


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def secret_of(stack: LocalProcess, provider: str, connection: str) -> dict[str, Any]:
    name = f"{stack.env['TOKENVEND_SECRETS_PREFIX']}{provider}/{connection}"
    answer = stack.client("secretsmanager").get_secret_value(SecretId=name)
    return dict(json.loads(answer["SecretString"]))


def put_secret(stack: LocalProcess, provider: str, connection: str, value: dict[str, Any]) -> None:
    name = f"{stack.env['TOKENVEND_SECRETS_PREFIX']}{provider}/{connection}"
    stack.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(value))


def table_item(stack: LocalProcess, provider: str, connection: str) -> dict[str, Any] | None:
    """The token table's item of a connection as it is (consistent read), or None."""
    answer = stack.client("dynamodb").get_item(
        TableName=stack.env["TOKENVEND_TABLE"],
        Key={"provider": {"S": provider}, "connection": {"S": connection}},
        ConsistentRead=True,
    )
    item = answer.get("Item")
    if item is None:
        return None
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in item.items()}


def token_item(stack: LocalProcess, provider: str, connection: str) -> dict[str, Any] | None:
    """The token table's item of a connection once it holds a token, else None (a refresher's
    lease is written before the first token, and is no token)."""
    item = table_item(stack, provider, connection)
    return item if item is not None and "access_token" in item else None


def log_lines(stack: LocalProcess, group: str) -> list[dict[str, Any]]:
    """Every event of a log group in the local AWS, each a JSON line (the audit records, the
    access log)."""
    logs = stack.client("logs")
    lines: list[dict[str, Any]] = []
    token = None
    while True:
        page = logs.filter_log_events(logGroupName=group, **({"nextToken": token} if token else {}))
        lines += [json.loads(event["message"]) for event in page["events"]]
        token = page.get("nextToken")
        if not token:
            return lines


def access_lines(stack: LocalProcess) -> list[dict[str, Any]]:
    """Every line of the local API's access log (the template's ApiAccessLog group)."""
    return log_lines(stack, f"/tokenvend/{stack.env['TOKENVEND_STACK']}/access")


def invoke_the_api(stack: LocalProcess) -> str:
    """An identity policy allowing execute-api:Invoke on every route of the local API."""
    api = f"arn:aws:execute-api:{stack.region}:123456789012:local"
    statement = {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": f"{api}/*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def new_user(stack: LocalProcess) -> tuple[str, Credentials]:
    """A user created through IAM at the local endpoint, with an access key and a grant to
    invoke the API."""
    iam = stack.client("iam")
    name = f"workload-{uuid.uuid4().hex[:8]}"
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    iam.put_user_policy(UserName=name, PolicyName="invoke", PolicyDocument=invoke_the_api(stack))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return arn, Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def introspect(stack: LocalProcess, token: str) -> dict[str, Any]:
    """What the sandbox says of a token it issued (RFC 7662-shaped)."""
    return dict(stack.sandbox("POST", "introspect", {"token": token}))


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    give_up = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > give_up:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
