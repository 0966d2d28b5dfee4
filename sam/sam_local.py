"""`make sam-local`: the template's functions in SAM CLI's own Lambda emulation, against
`tokenvend local`, checked end to end. From a fresh clone, with root (or a Docker engine):

1. a Docker engine and the Lambda python3.11 image (sam/image.sh: the official image when it
   can be pulled, else one built offline and reused while its recipe is unchanged);
2. `sam build` for this machine's architecture (the template's `Architecture` parameter);
3. `tokenvend local --docker-bridge`, whose .tokenvend/sam-env.json points the functions at it;
4. `sam local invoke` of every function with every sample in events/, each answer checked;
5. `sam local start-lambda` on the bridge address, with the vend function's Lambda endpoint
   pointed at it: the vend function's invocation of a provider function goes through SAM's
   own Lambda endpoint;
6. `sam local start-api`: the same requests to SAM's API (which checks no SigV4 and so gives
   the function no caller identity) and, signed, to tokenvend local's, answered alike.

Bounded in time (--timeout); stops by itself and, whatever happens, stops what it started:
SAM CLI's servers, tokenvend local, the containers SAM CLI created, and the Docker engine if
it started one. Everything it writes goes under .aws-sam/sam-local/ (logs in logs/).

    .venv/bin/python sam/sam_local.py --sam .venv-sam/bin/sam
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tokenvend_core.vend.api import CALLBACK_ROUTE, CONNECT_ROUTE, as_rest

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
WORK = ROOT / ".aws-sam" / "sam-local"
LOGS = WORK / "logs"
SAM_CONTAINER_LABEL = "sam.cli.container.type=lambda"
PARALLEL_INVOKES = 3  # provider functions invoked side by side (step 4)
READY_TIMEOUT = 90  # seconds for tokenvend local, start-lambda or start-api to answer
INVOKE_TIMEOUT = 180  # one `sam local invoke` (a cold image build included)


class Failed(RuntimeError):
    """A check failed; the message says which and why."""


# -- progress --------------------------------------------------------------------------------


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.timings: list[tuple[str, float]] = []
        self.checks = 0
        self._lock = threading.Lock()

    def step(self, number: int, total: int, title: str) -> None:
        print(f"\n==> [{number}/{total}] {title}", flush=True)

    def ok(self, what: str, detail: str, seconds: float) -> None:
        with self._lock:
            self.checks += 1
            print(f"    ok   {what:<52} {detail}  ({seconds:.1f} s)", flush=True)

    def note(self, text: str) -> None:
        with self._lock:
            print(f"    {text}", flush=True)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.timings.append((name, time.monotonic() - began))

    def summary(self) -> None:
        print("\n    timings:", flush=True)
        for name, seconds in self.timings:
            print(f"      {name:<44} {seconds:7.1f} s", flush=True)
        print(f"      {'total':<44} {time.monotonic() - self.started:7.1f} s", flush=True)


# -- processes ---------------------------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise Failed("out of time (--timeout)")
        return left if cap is None else min(left, cap)


@dataclass
class Started:
    name: str
    process: subprocess.Popen[Any]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to its process group (it was started in a session of its own), then
        SIGKILL after `grace` seconds."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def start(name: str, command: list[str], env: Mapping[str, str], **kw: Any) -> Started:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own command lines
            command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=kw.pop("stdout", sink),
            stderr=sink,
            start_new_session=True,
            cwd=kw.pop("cwd", ROOT),
            **kw,
        )
    return Started(name, process, log)


def run(
    command: list[str],
    env: Mapping[str, str],
    timeout: float,
    *,
    log: Path,
    echo: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run to the end (killed, process group and all, after `timeout`); stdout returned,
    stderr written to `log` (and each line to `echo` as it comes)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(  # noqa: S603 - our own command lines
        command,
        env=dict(env),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )

    def copy_stderr() -> None:
        assert process.stderr is not None
        with log.open("w") as sink:
            for line in process.stderr:
                sink.write(line)
                sink.flush()
                if echo is not None:
                    echo(line.rstrip("\n"))

    out: list[str] = []

    def collect_stdout() -> None:
        assert process.stdout is not None
        out.append(process.stdout.read())

    readers = [
        threading.Thread(target=copy_stderr, daemon=True),
        threading.Thread(target=collect_stdout, daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise Failed(f"{shlex.join(command[:4])} ...: no answer in {timeout:.0f} s") from None
    finally:
        for reader in readers:
            reader.join(10)
    return subprocess.CompletedProcess(command, process.returncode, "".join(out), "")


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("      | " + line for line in text[-lines:])


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_http(url: str, server: Started, deadline: Deadline) -> None:
    """Until `url` gives any HTTP answer (SAM's start-api answers / with 403)."""
    import requests

    give_up = time.monotonic() + deadline.left(READY_TIMEOUT)
    while time.monotonic() < give_up:
        if not server.alive():
            raise Failed(f"{server.name} exited before answering:\n{tail(server.log)}")
        with contextlib.suppress(requests.RequestException):
            requests.get(url, timeout=2)
            return
        time.sleep(0.25)
    raise Failed(f"{server.name} did not answer at {url}:\n{tail(server.log)}")


def docker() -> str:
    found = shutil.which("docker")
    if not found:
        raise Failed("no docker command after sam/image.sh")
    return found


def sam_containers() -> set[str]:
    out = subprocess.run(  # noqa: S603
        [docker(), "ps", "-aq", "--no-trunc", "--filter", f"label={SAM_CONTAINER_LABEL}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return set(out.split())


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Local:
    """What `tokenvend local` told us: its export lines, its env file, its addresses."""

    process: Started
    exports: dict[str, str]
    env_file: Path
    bridge: str
    sandbox_url: str

    def client(self, service: str) -> Any:
        import boto3

        endpoint = self.exports[
            "AWS_ENDPOINT_URL_LAMBDA" if service == "lambda" else "AWS_ENDPOINT_URL"
        ]
        return boto3.session.Session().client(
            service,
            region_name=self.exports["AWS_REGION"],
            endpoint_url=endpoint,
            aws_access_key_id=self.exports["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.exports["AWS_SECRET_ACCESS_KEY"],
        )

    def log_mark(self) -> int:
        return self.process.log.stat().st_size

    def invocations(self, since: int) -> list[str]:
        """The functions tokenvend local ran in its own process since `since`."""
        with self.process.log.open("rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        names = []
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("message") == "invoked":
                    names.append(str(record.get("function_name")))
        return names

    def copy_connection(self, provider: str, source: str, target: str) -> None:
        """A connection `target` with the secret of `source` (as `tokenvend connections
        put` would store it)."""
        prefix = self.exports["TOKENVEND_SECRETS_PREFIX"]
        secrets = self.client("secretsmanager")
        value = secrets.get_secret_value(SecretId=f"{prefix}{provider}/{source}")["SecretString"]
        secrets.create_secret(Name=f"{prefix}{provider}/{target}", SecretString=value)

    def table_token(self, provider: str, connection: str) -> str | None:
        item = (
            self.client("dynamodb")
            .get_item(
                TableName=self.exports["TOKENVEND_TABLE"],
                Key={"provider": {"S": provider}, "connection": {"S": connection}},
                ConsistentRead=True,
            )
            .get("Item")
            or {}
        )
        token = item.get("access_token", {}).get("S")
        return str(token) if token else None

    def issued(self, provider: str, token: str) -> bool:
        """The sandbox issued `token` for `provider`, and it has not expired."""
        import requests

        answer = requests.post(
            f"{self.sandbox_url}/_sandbox/introspect", json={"token": token}, timeout=5
        ).json()
        return bool(answer.get("active")) and answer.get("provider") == provider

    def sandbox_calls(self, provider: str) -> int:
        import requests

        answer = requests.get(f"{self.sandbox_url}/_sandbox/calls", timeout=5)
        return int(answer.json()[provider])


@dataclass
class Run:
    sam: str
    deadline: Deadline
    progress: Progress
    arch: str = ""
    image: str = ""
    template: Path = WORK / "build" / "template.yaml"
    local: Local | None = None
    started: list[Started] = field(default_factory=list)
    containers_before: set[str] = field(default_factory=set)
    dockerd_pid: int | None = None
    stack: str = "tokenvend"

    # -- the environment of every SAM CLI command -------------------------------------------

    def sam_env(self) -> dict[str, str]:
        """This process's environment without AWS settings that could point elsewhere, plus
        what keeps SAM CLI offline and quick: no telemetry or version check; dummy keys,
        which stop boto3's credential chain before the instance-metadata address and which
        SAM passes to the functions (moto takes any); sts:GetCallerIdentity, which every
        command makes for AWS::AccountId, refused at once by a closed loopback port
        (otherwise seconds of DNS failures and retries; SAM then uses 123456789012). The
        functions never see AWS_ENDPOINT_URL_STS or AWS_MAX_ATTEMPTS: SAM passes a function
        only what its template declares."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AWS_", "TOKENVEND_", "POWERTOOLS_", "SAM_"))
            and name not in ("PLAIN_HTTP_HOSTS", "ALLOW_HTTP_LOOPBACK")
        }
        region = self.local.exports["AWS_REGION"] if self.local else "us-east-1"
        config = WORK / "sam-config"
        config.mkdir(parents=True, exist_ok=True)
        metadata = config / "metadata.json"
        if not metadata.exists():
            metadata.write_text('{"telemetryEnabled": false, "lastVersionCheck": 4102444800}')
        env.update(
            SAM_CLI_TELEMETRY="0",
            __SAM_CLI_APP_DIR=str(config),
            AWS_ACCESS_KEY_ID="sam-local",
            AWS_SECRET_ACCESS_KEY="sam-local",  # noqa: S106 - moto takes any key
            AWS_REGION=region,
            AWS_DEFAULT_REGION=region,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_ENDPOINT_URL_STS="http://127.0.0.1:9",
            AWS_MAX_ATTEMPTS="1",
        )
        return env

    def overrides(self) -> list[str]:
        """The host's architecture, and the stack name tokenvend local uses, so that SAM
        names the functions as it does (`tokenvend-dingtalk`, which the vend function
        invokes); SAM's own default stack name is `local`. In a file: SAM's command line
        takes no `:` in a parameter's name."""
        path = WORK / "parameters.yaml"
        path.write_text(f'Architecture: "{self.arch}"\n"AWS::StackName": "{self.stack}"\n')
        return ["--parameter-overrides", f"file://{path}"]

    def emulation(self) -> list[str]:
        """The options of every `sam local` command here."""
        return [
            "--template",
            str(self.template),
            *self.overrides(),
            "--invoke-image",
            self.image,
            "--skip-pull-image",
            # The env file names the bridge address, which needs no name; a function that
            # names host.docker.internal reaches the host too.
            "--add-host",
            "host.docker.internal:host-gateway",
            # No DNS beyond the bridge: a lookup inside a function fails at once, not after
            # seconds of timeouts (/etc/hosts still answers).
            "--container-dns",
            "127.0.0.1",
            "--layer-cache-basedir",
            str(WORK / "layer-cache"),
        ]

    # -- 1. engine and image ----------------------------------------------------------------

    def engine(self) -> None:
        began = time.monotonic()
        pid_file = WORK / "engine" / "dockerd.pid"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        bash = shutil.which("bash") or "/bin/bash"
        env = {**os.environ, "WORK": str(WORK / "engine"), "PYTHON": sys.executable}
        env["LAMBDA_ARCH"] = self.arch
        log = LOGS / "image.log"
        command = [bash, str(ROOT / "sam" / "image.sh")]
        done = run(command, env, self.deadline.left(1800), log=log, echo=self.progress.note)
        if pid_file.exists():
            self.dockerd_pid = int(pid_file.read_text().strip())
        if done.returncode != 0 or not done.stdout.strip():
            raise Failed(f"sam/image.sh failed ({done.returncode}):\n{tail(log)}")
        self.image = done.stdout.strip().splitlines()[-1]
        self.containers_before = sam_containers()
        detail = "dockerd started here" if self.dockerd_pid else "the running engine"
        self.progress.ok(f"image {self.image}", detail, time.monotonic() - began)

    # -- 2. build ---------------------------------------------------------------------------

    def build(self) -> None:
        began = time.monotonic()
        command = [
            self.sam, "build", "--template", str(ROOT / "template.yaml"),
            "--build-dir", str(WORK / "build"), "--cache-dir", str(WORK / "cache"),
            "--parameter-overrides", f"Architecture={self.arch}",
        ]  # fmt: skip
        log = LOGS / "sam-build.log"
        done = run(command, self.sam_env(), self.deadline.left(900), log=log)
        if done.returncode != 0:
            raise Failed(f"sam build failed:\n{tail(log)}")
        self.progress.ok(f"sam build (Architecture={self.arch})", str(self.template.parent),
                         time.monotonic() - began)  # fmt: skip

    # -- 3. tokenvend local -----------------------------------------------------------------

    def start_local(self) -> None:
        began = time.monotonic()
        tokenvend = Path(sys.executable).with_name("tokenvend")
        command = [
            str(tokenvend), "local", "--docker-bridge",
            "--api-port", "0", "--lambda-port", "0", "--aws-port", "0", "--sandbox-port", "0",
            # A new token may follow another at once (vend-refresh-nobody, then start-lambda).
            "--parameter-overrides", "CoolDownSeconds=0",
        ]  # fmt: skip
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AWS_", "TOKENVEND_", "POWERTOOLS_"))
        }
        env.update(PYTHONUNBUFFERED="1", AWS_EC2_METADATA_DISABLED="true")
        home = WORK / "tokenvend-local"  # its .tokenvend/ goes here
        home.mkdir(parents=True, exist_ok=True)
        server = start("tokenvend-local", command, env, stdout=subprocess.PIPE, text=True, cwd=home)
        self.started.append(server)
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert server.process.stdout is not None
            for line in server.process.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        banner: list[str] = []
        give_up = time.monotonic() + self.deadline.left(READY_TIMEOUT)
        while not any(line.startswith("# then") for line in banner):
            try:
                line = lines.get(timeout=max(0.1, give_up - time.monotonic()))
            except queue.Empty:
                raise Failed(f"tokenvend local not ready:\n{tail(server.log)}") from None
            if line is None:
                raise Failed(f"tokenvend local exited:\n{tail(server.log)}")
            banner.append(line)
        ready = next(line for line in banner if line.startswith("ready"))
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", "\n".join(banner), re.M))
        exports = {name: shlex.split(value)[0] for name, value in exports.items()}
        env_file = next(
            Path(shlex.split(line.split("--env-vars", 1)[1])[0])
            for line in banner
            if "--env-vars" in line
        )
        bridge = re.search(r"docker bridge ([\d.]+)", ready)
        sandbox = re.search(r"sandbox (http://[\d.:]+)", ready)
        if not (bridge and sandbox and env_file.is_file()):
            raise Failed(f"tokenvend local's banner lacks the bridge, sandbox or env file: {ready}")
        self.stack = exports.get("TOKENVEND_STACK", self.stack)
        self.local = Local(server, exports, env_file, bridge.group(1), sandbox.group(1))
        self.progress.ok(
            "tokenvend local --docker-bridge",
            f"on 127.0.0.1 and {bridge.group(1)}; {env_file}",
            time.monotonic() - began,
        )

    # -- 4. sam local invoke, every sample --------------------------------------------------

    def environments(self) -> dict[str, dict[str, str]]:
        assert self.local is not None
        content: dict[str, dict[str, str]] = json.loads(self.local.env_file.read_text())
        return content

    def samples(self) -> list[tuple[str, Path]]:
        """(function's logical id, sample) for every sample of events/: vend-* to the vend
        function, <provider>-* to that provider's function, provider-* to every provider
        function. A sample that fits no function is an error, never skipped."""
        functions = self.environments()
        providers = {
            env["PROVIDER"]: logical_id
            for logical_id, env in functions.items()
            if env.get("PROVIDER")
        }
        vend = [logical_id for logical_id, env in functions.items() if not env.get("PROVIDER")]
        if len(vend) != 1:
            raise Failed(f"expected one function without PROVIDER (vend), found {vend}")
        pairs: list[tuple[str, Path]] = []
        for sample in sorted(EVENTS.glob("*.json")):
            prefix = sample.name.split("-", 1)[0]
            if prefix == "vend":
                pairs.append((vend[0], sample))
            elif prefix == "provider":
                pairs += [(providers[p], sample) for p in sorted(providers)]
            elif prefix in providers:
                pairs.append((providers[prefix], sample))
            else:
                raise Failed(f"events/{sample.name}: no function of the template takes it")
        # The vend samples first, in an order whose answers each follow from the last.
        order = {"vend-get.json": 0, "vend-get-default.json": 1, "vend-refresh.json": 2}
        pairs.sort(
            key=lambda pair: (
                pair[1].name.split("-")[0] != "vend",
                order.get(pair[1].name, 9),
                pair[1].name,
                pair[0],
            )
        )
        return pairs

    def invoke(self, function: str, event: Path, env_file: Path | None = None) -> Any:
        assert self.local is not None
        env_file = env_file or self.local.env_file
        command = [
            self.sam, "local", "invoke", function, "--event", str(event),
            "--env-vars", str(env_file), *self.emulation(),
        ]  # fmt: skip
        log = LOGS / f"invoke-{function}-{event.stem}.log"
        done = run(command, self.sam_env(), self.deadline.left(INVOKE_TIMEOUT), log=log)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise Failed(f"sam local invoke {function} -e {event.name}: failed\n{tail(log)}")
        try:
            return json.loads(lines[-1])
        except ValueError:
            raise Failed(f"{function} {event.name}: not JSON: {lines[-1][:200]}") from None

    def invoke_samples(self) -> None:
        """The vend function's samples one after another (each answer follows from the
        last), then each provider function's, functions side by side: concurrent `sam local
        invoke`s share SAM's image build, which is most of an invocation's time."""
        assert self.local is not None
        groups: dict[str, list[Path]] = {}
        for function, sample in self.samples():
            groups.setdefault(function, []).append(sample)
        current: dict[str, str] = {}  # provider/connection -> the token last served
        vend = next(fn for fn, samples in groups.items() if samples[0].name.startswith("vend-"))
        for sample in groups.pop(vend):
            self.invoke_sample(vend, sample, current)

        def run_group(function: str) -> None:
            for sample in groups[function]:
                self.invoke_sample(function, sample, current)

        with ThreadPoolExecutor(max_workers=PARALLEL_INVOKES) as pool:
            for done in [pool.submit(run_group, function) for function in groups]:
                done.result(timeout=self.deadline.left())

    def invoke_sample(self, function: str, sample: Path, current: dict[str, str]) -> None:
        began = time.monotonic()
        event = json.loads(sample.read_text())
        answer = self.invoke(function, sample)
        if sample.name.startswith("vend-"):
            # Either payload format (REST 1.0, HTTP API 2.0) as the vend function reads it.
            event = as_rest(event)
        if sample.name.startswith("vend-") and event["resource"] == CONNECT_ROUTE:
            detail = check_connect(event, answer)
        elif sample.name.startswith("vend-") and event["resource"] == CALLBACK_ROUTE:
            detail = check_callback(answer)
        elif sample.name.startswith("vend-"):
            detail = self.check_vend(event, answer, current)
        elif sample.name.startswith("provider-"):
            detail = check_schedule(answer)
        elif event.get("action") == "authorize":
            detail = self.check_authorize_sample(function, answer)
        else:
            detail = self.check_refresh(function, event, answer)
        self.progress.ok(f"{function} -e {sample.name}", detail, time.monotonic() - began)
        if event.get("action") == "authorize":
            began = time.monotonic()
            detail = self.authorize_for_real(function, event)
            what = f"{function} -e {sample.name} (a real code)"
            self.progress.ok(what, detail, time.monotonic() - began)

    def check_vend(self, event: dict[str, Any], answer: Any, current: dict[str, str]) -> str:
        params = event["pathParameters"]
        key = f"{params['provider']}/{params['connection']}"
        body = _proxy_body(answer, 200, key)
        token = body.get("access_token")
        if not token or body.get("provider") != params["provider"]:
            raise Failed(f"{key}: no token in {body}")
        rejected = json.loads(event["body"]).get("rejected_token_sha256") if event["body"] else None
        if event["httpMethod"] == "POST" and rejected:
            # The sample reports a token never issued: the current one is served as it is.
            if hashlib.sha256(token.encode()).hexdigest() == rejected:
                raise Failed(f"{key}: served the very token reported as refused")
            if key in current and token != current[key]:
                raise Failed(f"{key}: a new token, where the current one was to be served")
            detail = "the current token (the refused one is not it)"
        elif event["httpMethod"] == "POST":
            # A new token, unless the last refresh was within the cool-down (kept by the
            # clock skew more): then the current one.
            detail = "the current token (cool-down)" if token == current.get(key) else "a new token"
        else:
            detail = f"a token, {body['expires_in']} s left"
        assert self.local is not None
        if not self.local.issued(params["provider"], token):
            raise Failed(f"{key}: the sandbox never issued that token, or it expired")
        current[key] = token
        return f"200, {detail}, live at the sandbox"

    def check_refresh(self, function: str, event: dict[str, Any], answer: Any) -> str:
        assert self.local is not None
        provider = self.environments()[function]["PROVIDER"]
        if not (isinstance(answer, dict) and answer.get("ok") is True):
            raise Failed(f"{function} refresh: {answer}")
        item = self.local.client("dynamodb").get_item(
            TableName=self.local.exports["TOKENVEND_TABLE"],
            Key={"provider": {"S": provider}, "connection": {"S": event["connection"]}},
            ConsistentRead=True,
        )["Item"]
        if int(answer["version"]) != int(item["version"]["N"]) or "access_token" not in item:
            raise Failed(f"{function}: answered version {answer['version']}, table {item}")
        if item["access_token"]["S"] in json.dumps(answer):
            raise Failed(f"{function}: the answer holds the token")
        return f"ok, version {answer['version']} (the table's; no token in the answer)"

    def check_authorize_sample(self, function: str, answer: Any) -> str:
        # The sample's code and redirect_uri are placeholders: refused, as any redirect_uri
        # other than the connection's own is.
        error = answer.get("error") if isinstance(answer, dict) else None
        if answer.get("ok") is not False or not isinstance(error, dict):
            raise Failed(f"{function}: the sample's placeholder authorization was not refused")
        if error.get("code") != "invalid_request" or "redirect_uri" not in error.get("message", ""):
            raise Failed(f"{function}: refused for another reason: {error}")
        return "refused: redirect_uri is not the connection's own"

    def authorize_for_real(self, function: str, sample: dict[str, Any]) -> str:
        """The sample again with a code from the sandbox's consent page and the
        connection's own redirect_uri: redeemed."""
        import requests

        assert self.local is not None
        env = self.environments()[function]
        secret = json.loads(
            self.local.client("secretsmanager").get_secret_value(
                SecretId=f"{env['SECRETS_PREFIX']}{env['PROVIDER']}/{sample['connection']}"
            )["SecretString"]
        )
        query = urlencode(
            {
                "client_id": secret["client_id"],
                "redirect_uri": secret["redirect_uri"],
                "response_type": "code",
            }
        )
        consent = requests.get(
            f"{self.local.sandbox_url}/wps365/oauth2/auth?{query}",
            allow_redirects=False,
            timeout=5,
        )
        code = parse_qs(urlsplit(consent.headers.get("Location", "")).query).get("code")
        if consent.status_code != 302 or not code:
            raise Failed(f"the sandbox gave no authorization code ({consent.status_code})")
        event = {**sample, "code": code[0], "redirect_uri": secret["redirect_uri"]}
        path = WORK / "events" / "wps365-authorize-real.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(event))
        answer = self.invoke(function, path)
        if not (isinstance(answer, dict) and answer.get("ok") is True and answer.get("expires_at")):
            raise Failed(f"{function}: a real code was not redeemed: {answer}")
        return f"ok, authorized until {answer['expires_at']}"

    # -- 5. start-lambda --------------------------------------------------------------------

    def start_lambda(self) -> None:
        """The vend function, invoked through SAM's start-lambda, invokes the dingtalk
        function through SAM's start-lambda too (its AWS_ENDPOINT_URL_LAMBDA names it), for
        a new connection's first token."""
        import boto3
        from botocore.config import Config

        assert self.local is not None
        began = time.monotonic()
        host = self.local.bridge  # the containers, and this host, reach SAM there
        port = free_port(host)
        url = f"http://{host}:{port}"
        environments = self.environments()
        vend = next(fn for fn, env in environments.items() if "AWS_ENDPOINT_URL_LAMBDA" in env)
        environments[vend]["AWS_ENDPOINT_URL_LAMBDA"] = url
        env_file = WORK / "sam-env-start-lambda.json"
        env_file.write_text(json.dumps(environments, indent=2))
        command = [
            self.sam, "local", "start-lambda", "--host", host, "--port", str(port),
            "--env-vars", str(env_file), "--warm-containers", "LAZY", *self.emulation(),
        ]  # fmt: skip
        server = start("sam-start-lambda", command, self.sam_env())
        self.started.append(server)
        wait_http(url + "/", server, self.deadline)
        self.progress.ok("sam local start-lambda", f"{url} (vend's Lambda endpoint)",
                         time.monotonic() - began)  # fmt: skip

        began = time.monotonic()
        client = boto3.session.Session().client(
            "lambda",
            endpoint_url=url,
            region_name=self.local.exports["AWS_REGION"],
            aws_access_key_id="sam-local",
            aws_secret_access_key="sam-local",  # noqa: S106 - SAM checks no signature
            config=Config(read_timeout=INVOKE_TIMEOUT, retries={"total_max_attempts": 1}),
        )
        # A new connection, the demo's credentials under another name: it has no token yet,
        # so the vend function must invoke the provider function to serve one.
        event = json.loads((EVENTS / "vend-get.json").read_text())
        provider, connection = event["pathParameters"]["provider"], "sam-start-lambda"
        event["pathParameters"]["connection"] = connection
        event["path"] = f"/tokens/{provider}/{connection}"
        self.local.copy_connection(provider, "demo", connection)
        calls, mark = self.local.sandbox_calls(provider), self.local.log_mark()
        answer = client.invoke(
            FunctionName=f"{self.stack}-vend", Payload=json.dumps(event).encode()
        )
        payload = json.loads(answer["Payload"].read())
        if answer.get("FunctionError"):
            raise Failed(f"start-lambda: the vend function failed: {payload}")
        body = _proxy_body(payload, 200, f"{provider}/{connection} via start-lambda")
        ran_locally = self.local.invocations(mark)
        token = body.get("access_token")
        if not token or token != self.local.table_token(provider, connection):
            raise Failed(f"start-lambda: no first token ({body})")
        if self.local.sandbox_calls(provider) != calls + 1:
            raise Failed("start-lambda: the provider's token endpoint was not called once")
        if ran_locally:
            raise Failed(f"start-lambda: tokenvend local ran {ran_locally}, not SAM")
        log = server.log.read_text(errors="replace")
        if log.count("Invoking app.lambda_handler") < 2:
            raise Failed(f"start-lambda ran fewer than two functions:\n{tail(server.log)}")
        self.progress.ok(
            f"{self.stack}-vend -> {self.stack}-{provider}, both in SAM",
            "200, a first token; tokenvend local's Lambda endpoint unused",
            time.monotonic() - began,
        )
        server.stop()

    # -- 6. start-api -----------------------------------------------------------------------

    def start_api(self) -> None:
        assert self.local is not None
        began = time.monotonic()
        port = free_port("127.0.0.1")
        sam_url = f"http://127.0.0.1:{port}"
        command = [
            self.sam, "local", "start-api", "--host", "127.0.0.1", "--port", str(port),
            "--env-vars", str(self.local.env_file), "--warm-containers", "LAZY",
            *self.emulation(),
        ]  # fmt: skip
        server = start("sam-start-api", command, self.sam_env())
        self.started.append(server)
        wait_http(sam_url + "/", server, self.deadline)
        self.progress.ok("sam local start-api", sam_url, time.monotonic() - began)

        for method, path, body in API_REQUESTS:
            began = time.monotonic()
            sam = _answer(method, sam_url + path, body)
            local = self.local_api(method, path, body)
            what = f"{method} {path}" + (f" {body[:14]}" if body else "")
            if local.status == 200:
                # Signed, tokenvend local gives a token. SAM's local API checks no signature
                # and gives no caller identity, which the vend function requires.
                if sam.status != 403 or sam.body.get("error", {}).get("code") != "forbidden":
                    raise Failed(f"{what}: SAM's API gave {sam}, not 403 forbidden")
                if "caller identity" not in sam.body["error"]["message"]:
                    raise Failed(f"{what}: refused for another reason: {sam.body}")
                unsigned = self.without_identity(method, path, body)
                if unsigned != sam:
                    raise Failed(f"{what}: SAM {sam} but tokenvend local {unsigned}")
                detail = "local 200; SAM 403 no caller identity, as local without one"
            elif sam != local:
                raise Failed(f"{what}: SAM's API {sam}, tokenvend local's {local}")
            else:
                detail = f"{sam.status} {sam.body.get('error', {}).get('code')} from both"
            self.progress.ok(what, detail, time.monotonic() - began)
        server.stop()

    def local_api(self, method: str, path: str, body: str | None) -> Answer:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        assert self.local is not None
        exports = self.local.exports
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = AWSRequest(
            method=method, url=exports["TOKENVEND_API_URL"] + path, data=body, headers=headers
        )
        credentials = Credentials(exports["AWS_ACCESS_KEY_ID"], exports["AWS_SECRET_ACCESS_KEY"])
        SigV4Auth(credentials, "execute-api", exports["AWS_REGION"]).add_auth(request)
        prepared = request.prepare()
        return _answer(method, str(prepared.url), body, dict(prepared.headers))

    def without_identity(self, method: str, path: str, body: str | None) -> Answer:
        """The vend function in tokenvend local, given tokenvend local's own form of the
        request with no caller identity (the sample event, reshaped): what SAM's API
        gives it."""
        assert self.local is not None
        sample = "vend-get.json" if method == "GET" else "vend-refresh.json"
        event = json.loads((EVENTS / sample).read_text())
        parts = urlsplit(path)
        segments = parts.path.strip("/").split("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        event.update(
            path=parts.path,
            pathParameters={"provider": segments[1], "connection": segments[2]},
            queryStringParameters=query or None,
            multiValueQueryStringParameters=parse_qs(parts.query) or None,
            body=body,
        )
        event["requestContext"]["identity"].update(
            userArn=None, user=None, caller=None, accessKey=None, accountId=None
        )
        answer = self.local.client("lambda").invoke(
            FunctionName=f"{self.stack}-vend", Payload=json.dumps(event).encode()
        )
        result = json.loads(answer["Payload"].read())
        return Answer(
            int(result["statusCode"]), json.loads(result["body"]), _kept(result["headers"])
        )

    # -- the end ----------------------------------------------------------------------------

    def cleanup(self) -> None:
        for server in reversed(self.started):
            try:
                server.stop()
            except Exception as exc:  # keep cleaning up
                print(f"    could not stop {server.name}: {exc!r}", file=sys.stderr)
        if shutil.which("docker"):
            with contextlib.suppress(Exception):
                leftover = sam_containers() - self.containers_before
                if leftover:
                    subprocess.run(  # noqa: S603
                        [docker(), "rm", "-f", *sorted(leftover)],
                        capture_output=True,
                        timeout=60,
                        check=False,
                    )
        if self.dockerd_pid:
            # It stops its containers; its images stay for the next run.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.dockerd_pid, signal.SIGTERM)
            give_up = time.monotonic() + 30
            while time.monotonic() < give_up and _running(self.dockerd_pid):
                time.sleep(0.2)


def _running(pid: int) -> bool:
    """True while `pid` runs (a zombie, waiting for its parent, has stopped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def check_schedule(answer: Any) -> str:
    report = answer.get("schedule") if isinstance(answer, dict) else None
    if answer.get("ok") is not True or not isinstance(report, dict):
        raise Failed(f"the scheduled run failed: {answer}")
    if report["failed"] or report["connections"] < 1:
        raise Failed(f"the scheduled run: {report}")
    return f"ok, {report['connections']} connection(s), {report['failed']} failed"


# The API requests of step 6: (method, path, body or None). The first ones reach the vend
# function's caller check; the others are refused before it, the same with or without one.
API_REQUESTS: list[tuple[str, str, str | None]] = [
    ("GET", "/tokens/dingtalk/demo?min_ttl=300", None),
    ("GET", "/tokens/azure/demo", None),
    ("POST", "/tokens/oauth2/demo/refresh", json.dumps({"rejected_token_sha256": "0" * 64})),
    ("GET", "/tokens/dingtalk/demo?min_ttl=abc", None),
    ("GET", "/tokens/dingtalk/demo?min_ttl=3601", None),
    # API Gateway's queryStringParameters keeps the last of repeated parameters.
    ("GET", "/tokens/dingtalk/demo?min_ttl=300&min_ttl=abc", None),
    ("GET", "/tokens/nosuch/demo", None),
    ("GET", "/tokens/dingtalk/-demo", None),
    ("POST", "/tokens/dingtalk/demo/refresh", "{not json"),
    ("POST", "/tokens/dingtalk/demo/refresh", json.dumps({"rejected_token_sha256": "xyz"})),
]
_KEPT_HEADERS = ("content-type", "cache-control", "pragma", "retry-after")


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def _kept(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() in _KEPT_HEADERS}


def _answer(
    method: str, url: str, body: str | None, headers: dict[str, str] | None = None
) -> Answer:
    import requests

    response = requests.request(method, url, data=body, headers=headers, timeout=INVOKE_TIMEOUT)
    try:
        parsed = response.json()
    except ValueError:
        parsed = {"text": response.text[:200]}
    return Answer(response.status_code, parsed, _kept(response.headers))


def check_connect(event: dict[str, Any], answer: Any) -> str:
    """A link from the provider function through SAM's containers: the demo connection's
    authorization page (the sandbox's), with a state; the provider function signed it with
    the stack's link key."""
    params = event["pathParameters"]
    key = f"{params['provider']}/{params['connection']}"
    body = _proxy_body(answer, 200, key)
    url, expires_at = body.get("url"), body.get("expires_at")
    if not isinstance(url, str) or "state=" not in url or not isinstance(expires_at, str):
        raise Failed(f"{key}: no link in {body}")
    return f"200, a link until {expires_at}"


def check_callback(answer: Any) -> str:
    """The sample's state was never made by this stack's key: the invalid-link page, with
    the link flow's headers, showing neither the code nor the state."""
    if not isinstance(answer, dict) or answer.get("statusCode") != 400:
        raise Failed(f"callback: expected the 400 page, got {str(answer)[:300]}")
    headers, page = answer.get("headers") or {}, str(answer.get("body"))
    if "frame-ancestors 'none'" not in headers.get("Content-Security-Policy", ""):
        raise Failed("callback: no Content-Security-Policy on the page")
    if 'data-outcome="link_invalid"' not in page or "c0de-from-the-provider" in page:
        raise Failed("callback: not the invalid-link page, or the code is on it")
    return "400, the invalid-link page (a state this stack never made)"


def _proxy_body(answer: Any, status: int, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict) or answer.get("statusCode") != status:
        raise Failed(f"{what}: expected {status}, got {str(answer)[:300]}")
    headers = answer.get("headers") or {}
    if headers.get("Cache-Control") != "no-store":
        raise Failed(f"{what}: no Cache-Control: no-store")
    body: dict[str, Any] = json.loads(answer["body"])
    return body


def host_architecture() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise Failed(f"no Lambda architecture for this machine ({machine})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam", default=str(ROOT / ".venv-sam" / "bin" / "sam"))
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds for the whole run (default 1800)"
    )
    args = parser.parse_args(argv)
    progress = Progress()
    if not Path(args.sam).is_file():
        print(f"sam-local: no SAM CLI at {args.sam} (make sam-local installs it)", file=sys.stderr)
        return 2
    if not sys.platform.startswith("linux"):
        print("sam-local: needs Linux (the docker bridge)", file=sys.stderr)
        return 2
    sam_run = Run(sam=str(Path(args.sam).resolve()), deadline=Deadline(args.timeout),
                  progress=progress)  # fmt: skip
    interrupted: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("Docker engine and Lambda image (sam/image.sh)", sam_run.engine),
        ("sam build for this machine", sam_run.build),
        ("tokenvend local --docker-bridge", sam_run.start_local),
        ("sam local invoke: every function, every sample in events/", sam_run.invoke_samples),
        ("sam local start-lambda: vend invokes a provider through SAM", sam_run.start_lambda),
        ("sam local start-api: SAM's API event against tokenvend local's", sam_run.start_api),
    ]
    status = 1
    try:
        sam_run.arch = host_architecture()
        WORK.mkdir(parents=True, exist_ok=True)
        for number, (title, step) in enumerate(steps, 1):
            progress.step(number, len(steps), title)
            with progress.timed(title.split(":")[0].split(" (")[0]):
                step()
        status = 0
    except Failed as exc:
        print(f"\nsam-local: FAILED: {exc}\n    logs: {LOGS}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\nsam-local: interrupted", file=sys.stderr, flush=True)
    except Exception as exc:  # a bug here, or an answer of an unexpected shape
        traceback.print_exc()
        print(f"\nsam-local: FAILED: {exc!r}\n    logs: {LOGS}", file=sys.stderr, flush=True)
    finally:
        print("\n==> cleaning up (SAM CLI's servers and containers, tokenvend local"
              + (", dockerd" if sam_run.dockerd_pid else "") + ")", flush=True)  # fmt: skip
        sam_run.cleanup()
        progress.summary()
    if status == 0:
        print(f"\nsam-local: PASSED ({progress.checks} checks, image {sam_run.image})", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
