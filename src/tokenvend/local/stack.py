"""The whole stack on loopback: moto for AWS (with the template's table, queues, KMS keys and
log groups: the audit records', the API's access log), the functions behind a Lambda Invoke
API and behind API Gateway's REST API, the schedules, and the sandbox with its demo connections;
with `--docker-bridge`, on the docker bridge's address as well (bridge.py), and always SAM
CLI's environment file for the template's functions (samenv.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..awslocal import MotoKeys, MotoServer, WsgiServer
from ..template import (
    ACCOUNT_ID,
    LOG_GROUP,
    Stack,
    TemplateError,
    find_template,
    load_template,
    table_definition,
)
from ..template import ttl_attribute as template_ttl_attribute
from . import demo, samenv
from .access_log import AccessLogWriter
from .bridge import BridgeError, Relay, bridge_address
from .functions import LocalFunction, functions_of
from .http_api import API_ID, HttpApi, routes_of
from .iam import ACTION, Authorizer, api_arn, warn_at_start
from .lambda_api import LambdaApi
from .log import log
from .schedule import Scheduler, schedules_of
from .sigv4 import Verifier
from .sources import SqsPollers, sources_of
from .state import STATE_DIR, LocalState, StateInUse, active_access_key

HOST = "127.0.0.1"
LOCAL_USER = "tokenvend-local"
# The functions' own credentials: moto takes any key it did not issue as its default account.
# moto's fake keys, not a credential.
FUNCTION_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # nosec B105
# Settings from the calling shell that would point boto3 elsewhere or change what it signs.
_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
)


_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
)


class StartError(RuntimeError):
    """The stack could not start; the message is the one line to show."""


@dataclass
class Options:
    stack: str = "tokenvend"
    region: str = "us-east-1"
    api_port: int = 3000
    lambda_port: int = 3001
    aws_port: int = 4566
    sandbox_port: int = 3002
    sandbox: bool = True
    refresh_every: float | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    template: Path | None = None
    # `--docker-bridge [VALUE]`: None (loopback only), "" (docker0's address), an interface
    # name or an address.
    docker_bridge: str | None = None
    # Where .tokenvend/ goes: the directory `tokenvend local` was started from.
    workdir: Path | None = None
    fresh: bool = False


class LocalStack:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.template_path = options.template or find_template()
        self.stack = Stack(
            load_template(self.template_path),
            name=options.stack,
            region=options.region,
            parameters=options.parameters,
        )
        self.functions: dict[str, LocalFunction] = {}
        self.moto: MotoServer | None = None
        self.lambda_server: WsgiServer | None = None
        self.api_server: WsgiServer | None = None
        self.sandbox: Any = None
        self.scheduler: Scheduler | None = None
        self.pollers: SqsPollers | None = None
        self.user_key: dict[str, str] = {}
        self.demo_providers: list[str] = []
        self.bridge: str | None = None  # the bridge address listened on, if any
        self.relays: list[Relay] = []
        self.sam_env_path: Path | None = None
        self.access_log: AccessLogWriter | None = None
        self._saved_env: dict[str, str] | None = None
        self.state: LocalState | None = None
        self.restored = False
        self.api_is_http = False  # ApiType HTTP: the template's HTTP API is served

    # -- start --------------------------------------------------------------------------

    def start(self) -> None:
        options, stack = self.options, self.stack
        _route_warnings()
        self._check_catalogue()
        self.functions = functions_of(stack, self.template_path.parent)
        routes, api = routes_of(stack, self.functions)
        self.api_is_http = api.http
        schedules = schedules_of(stack, self.functions, options.refresh_every)
        sources = sources_of(stack, self.functions)
        if options.docker_bridge is not None:
            try:
                self.bridge = bridge_address(options.docker_bridge)
            except BridgeError as exc:
                raise StartError(str(exc)) from None
        self.moto = _listen("--aws-port", options.aws_port, MotoServer, HOST, options.aws_port)
        self.state = LocalState((options.workdir or Path.cwd()) / STATE_DIR)
        self.state.attach(self.moto)
        self.moto.start()
        try:
            self.restored = self.state.restore(fresh=options.fresh)
        except StateInUse as exc:
            raise StartError(str(exc)) from None
        self.state.start_saving()
        lambda_app = LambdaApi(self.functions, region=options.region, account_id=ACCOUNT_ID)
        self.lambda_server = _listen(
            "--lambda-port", options.lambda_port, WsgiServer, lambda_app, HOST,
            options.lambda_port, name="lambda",
        )  # fmt: skip
        verifier = Verifier(MotoKeys(), region=options.region)
        authorizer = Authorizer(
            api.resource_policy, region=options.region, account_id=ACCOUNT_ID, api_id=API_ID,
            stage=api.stage,
        )  # fmt: skip
        warn_at_start(authorizer)
        if api.access_log is not None:
            self.access_log = AccessLogWriter(api.access_log.log_group)
        api_app = HttpApi(
            routes, api, verifier, authorizer, account_id=ACCOUNT_ID, api_id=API_ID,
            access_log=self.access_log,
        )  # fmt: skip
        self.api_server = _listen(
            "--api-port", options.api_port, WsgiServer, api_app, HOST, options.api_port,
            name="api",
        )  # fmt: skip
        self._relay("--aws-port", self.moto.port, "aws")
        self._relay("--lambda-port", self.lambda_server.port, "lambda")
        self._relay("--api-port", self.api_server.port, "api")
        self._set_environment()
        self._create_table()
        self._create_queues()
        self._create_keys()
        self._create_log_groups()
        if self.access_log is not None:
            self.access_log.start()
        for function in self.functions.values():
            # Now that every resource has its physical id (a key's is chosen by KMS), the
            # functions' environment as the template resolves it (LINK_KEY_ID: !Ref LinkKey).
            function.environment = stack.function_environment(function.logical_id)
            function.load()
        self.lambda_server.start()
        self.api_server.start()
        self._create_user()
        if options.sandbox:
            self._start_sandbox()
        self.scheduler = Scheduler(schedules, region=options.region, account_id=ACCOUNT_ID)
        self.scheduler.start()
        self.pollers = SqsPollers(sources, region=options.region).start()
        self.sam_env_path = self._write_sam_environment()
        log(
            "serving",
            stack=options.stack,
            functions=sorted(self.functions),
            routes=[f"{route.method} {route.path}" for route in routes],
            schedules={s.rule_name: s.interval for s in schedules},
            queues={source.queue_name: source.function.name for source in sources},
            docker_bridge=self.bridge,
            sam_env_vars=str(self.sam_env_path),
        )

    def _relay(self, flag: str, port: int, name: str) -> None:
        """With `--docker-bridge`, `port` on the bridge address too."""
        if self.bridge is None:
            return
        try:
            relay = Relay(self.bridge, port, port, name=name)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartError(
                f"cannot listen on {self.bridge}:{port} ({flag}, --docker-bridge): {reason}"
            ) from None
        self.relays.append(relay.start())

    def _url(self, port: int) -> str:
        """Where the in-process functions and the containers alike reach `port` (the bridge
        address with --docker-bridge, else loopback)."""
        return samenv.endpoint(self.bridge or HOST, port)

    def _write_sam_environment(self) -> Path:
        assert self.moto is not None and self.lambda_server is not None
        host = self.bridge or samenv.DOCKER_HOST_NAME
        content = samenv.container_environment(
            self.functions.values(),
            aws_url=samenv.endpoint(host, self.moto.port),
            lambda_url=samenv.endpoint(host, self.lambda_server.port),
            plain_http_hosts=[self.bridge] if self.bridge else [],
        )
        return samenv.write(self.options.workdir or Path.cwd(), content)

    def _set_environment(self) -> None:
        """What the functions' boto3 clients (and Powertools) read, process-wide."""
        assert self.moto is not None and self.lambda_server is not None
        self._saved_env = dict(os.environ)
        for name in list(os.environ):
            if name in _CLEARED or name.startswith("AWS_ENDPOINT_URL_"):
                del os.environ[name]
        os.environ.update(
            {
                **FUNCTION_CREDENTIALS,
                "AWS_REGION": self.options.region,
                "AWS_DEFAULT_REGION": self.options.region,
                "AWS_ENDPOINT_URL": self.moto.url,
                "AWS_ENDPOINT_URL_LAMBDA": self.lambda_server.url,
                # No profile file from this machine may add settings (an endpoint, a role).
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
                "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
                # The sandbox's token URLs are plain HTTP on loopback: allowed here only;
                # with --docker-bridge they name the bridge address, allowed here only too.
                "ALLOW_HTTP_LOOPBACK": "true",
                "PLAIN_HTTP_HOSTS": self.bridge or "",
                # Every function here runs on this one machine's clock: no two clocks to
                # allow for, so tokens last to their expiry and the cool-down is as set.
                "CLOCK_SKEW_SECONDS": "0",
            }
        )

    def _client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session().client(service)

    def _create_table(self) -> None:
        """The token table from the template's own definition."""
        template = self.stack.template
        for logical_id, resource in self.stack.resources.items():
            if not isinstance(resource, dict) or resource.get("Type") != "AWS::DynamoDB::Table":
                continue
            name = self.stack.physical_id(logical_id)
            dynamodb = self._client("dynamodb")
            try:
                dynamodb.create_table(TableName=name, **table_definition(template, logical_id))
            except dynamodb.exceptions.ResourceInUseException:
                log("table restored", table=name)
                continue
            dynamodb.get_waiter("table_exists").wait(
                TableName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
            )
            props = resource.get("Properties") or {}
            recovery = self.stack.resolve(props.get("PointInTimeRecoverySpecification") or {})
            if recovery.get("PointInTimeRecoveryEnabled"):
                dynamodb.update_continuous_backups(
                    TableName=name,
                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
                )
            ttl = template_ttl_attribute(template, logical_id)
            if ttl:
                dynamodb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl},
                )
            log("table created", table=name, ttl_attribute=ttl)

    def _create_queues(self) -> None:
        """The template's queues with their attributes; redrive policies once every queue
        (the dead-letter ones too) exists."""
        sqs = self._client("sqs")
        redrives: dict[str, str] = {}
        for logical_id, resource in self.stack.resources.items():
            if not isinstance(resource, dict) or resource.get("Type") != "AWS::SQS::Queue":
                continue
            props = self.stack.resolve(resource.get("Properties") or {})
            attributes = {
                name: str(value)
                for name, value in props.items()
                if name in _QUEUE_ATTRIBUTES and value is not None
            }
            name = self.stack.physical_id(logical_id)
            try:
                url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            except sqs.exceptions.QueueNameExists:  # restored, with other attributes
                url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
                sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
            if props.get("RedrivePolicy"):
                redrives[url] = json.dumps(props["RedrivePolicy"])
            log("queue created", queue=name)
        for url, policy in redrives.items():
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": policy})

    def _create_keys(self) -> None:
        """The template's KMS keys (the link key), with their KeySpec, KeyUsage and key
        policy. Each gets the alias `alias/<stack>-<LogicalId>`, by which a restart finds the
        key kept in the saved state and uses it again: links made before still work."""
        kms = self._client("kms")
        for logical_id, resource in self.stack.resources.items():
            if not isinstance(resource, dict) or resource.get("Type") != "AWS::KMS::Key":
                continue
            alias = f"alias/{self.options.stack}-{logical_id}"
            try:
                key_id = str(kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"])
                log("key restored", key=logical_id, key_id=key_id)
            except kms.exceptions.NotFoundException:
                props = self.stack.resolve(resource.get("Properties") or {})
                options: dict[str, Any] = {
                    "KeySpec": str(props.get("KeySpec", "SYMMETRIC_DEFAULT")),
                    "KeyUsage": str(props.get("KeyUsage", "ENCRYPT_DECRYPT")),
                    "Description": str(props.get("Description", "")),
                }
                if props.get("KeyPolicy"):
                    options["Policy"] = json.dumps(props["KeyPolicy"])
                key_id = str(kms.create_key(**options)["KeyMetadata"]["KeyId"])
                kms.create_alias(AliasName=alias, TargetKeyId=key_id)
                log("key created", key=logical_id, key_id=key_id, key_spec=options["KeySpec"])
            self.stack.register(logical_id, key_id)

    def _create_log_groups(self) -> None:
        """The template's log groups (the audit records', the API's access log, the
        functions'), with their retention; one kept in the saved state keeps its events."""
        logs = self._client("logs")
        for logical_id, resource in self.stack.resources.items():
            if not isinstance(resource, dict) or resource.get("Type") != LOG_GROUP:
                continue
            if not self.stack.exists(logical_id):
                continue
            name = self.stack.physical_id(logical_id)
            props = self.stack.resolve(resource.get("Properties") or {})
            options = {"kmsKeyId": str(props["KmsKeyId"])} if props.get("KmsKeyId") else {}
            try:
                logs.create_log_group(logGroupName=name, **options)
                log("log group created", log_group=name)
            except logs.exceptions.ResourceAlreadyExistsException:
                log("log group restored", log_group=name)
            if props.get("RetentionInDays"):
                logs.put_retention_policy(
                    logGroupName=name, retentionInDays=int(props["RetentionInDays"])
                )

    @property
    def audit_log_group(self) -> str | None:
        """What the command line reads from a deployed stack's AuditLogGroup output."""
        try:
            return self.stack.output("AuditLogGroup") or None
        except TemplateError:
            return None

    def _create_user(self) -> None:
        """The user whose keys the banner exports, allowed to invoke the whole API (the
        local API authorizes as API Gateway does: without a policy, it would be refused)."""
        iam = self._client("iam")
        with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
            iam.create_user(UserName=LOCAL_USER)  # unless restored from .tokenvend/state/
        api = api_arn(self.options.region, ACCOUNT_ID, API_ID)
        statement = {"Effect": "Allow", "Action": ACTION, "Resource": f"{api}/*"}
        iam.put_user_policy(
            UserName=LOCAL_USER,
            PolicyName="invoke-the-api",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        )
        key = active_access_key(LOCAL_USER, ACCOUNT_ID)
        if key is None:
            created = iam.create_access_key(UserName=LOCAL_USER)["AccessKey"]
            key = (created["AccessKeyId"], created["SecretAccessKey"])
        self.user_key = {"id": key[0], "secret": key[1]}

    @property
    def table_name(self) -> str:
        return self.stack.physical_id("TokenTable")

    @property
    def secrets_prefix(self) -> str:
        """The prefix as the template resolves it for the functions (an empty SecretsPrefix
        means "<stack name>/")."""
        for function in self.functions.values():
            prefix = function.environment.get("SECRETS_PREFIX")
            if prefix:
                return prefix
        return f"{self.options.stack}/"

    def _check_catalogue(self) -> None:
        """A checkout's template.yaml must be the one its catalogue makes (a provider added to
        providers.toml needs `make template`), and the functions must run the same catalogue."""
        from tokenvend_core.names import PROVIDERS, deployed_providers

        from ..catalogue_template import SOURCE, catalogue_text, render

        root = self.template_path.parent
        if not (root / SOURCE).is_file():
            return  # a template of the user's own: nothing to compare it with
        if render(root) != self.template_path.read_text("utf-8"):
            raise StartError(
                f"{self.template_path} is out of step with the provider catalogue: "
                "run `make template`"
            )
        if deployed_providers(catalogue_text(root)) != PROVIDERS:
            raise StartError(
                f"the functions' provider catalogue is not the one of {root}: install this "
                "checkout (`pip install -e .`) or put its layers/core first on PYTHONPATH"
            )

    def _forget_token(self, provider: str, connection: str) -> None:
        """Drop a connection's item from the token table (a demo connection kept from an
        earlier start holds a token of the earlier sandbox)."""
        self._client("dynamodb").delete_item(
            TableName=self.table_name,
            Key={"provider": {"S": provider}, "connection": {"S": connection}},
        )

    def provider_functions(self) -> dict[str, str]:
        """provider -> function name, for the functions whose environment names a PROVIDER."""
        return {
            function.environment["PROVIDER"]: name
            for name, function in self.functions.items()
            if function.environment.get("PROVIDER")
        }

    def _start_sandbox(self) -> None:
        from ..sandbox import Sandbox

        port = self.options.sandbox_port
        self.sandbox = _listen("--sandbox-port", port, lambda: Sandbox(HOST, port).start())
        sandbox_port = int(self.sandbox.url.rsplit(":", 1)[1])
        self._relay("--sandbox-port", sandbox_port, "sandbox")
        served = set(self.sandbox.providers)
        providers = {p: f for p, f in self.provider_functions().items() if p in served}
        try:
            self.demo_providers = demo.set_up(
                self.sandbox,
                provider_functions=providers,
                secrets_prefix=self.secrets_prefix,
                secretsmanager=self._client("secretsmanager"),
                lambda_client=self._client("lambda"),
                forget=self._forget_token,
                base_url=self._url(sandbox_port),
            )
        except demo.DemoError as exc:
            raise StartError(str(exc)) from None

    # -- what to tell the user ----------------------------------------------------------

    def banner(self) -> list[str]:
        assert self.api_server and self.lambda_server and self.moto
        parts = [
            f"API {self.api_server.url} ({'an HTTP API' if self.api_is_http else 'a REST API'})",
            f"Lambda {self.lambda_server.url}",
            f"AWS {self.moto.url}",
        ]
        if self.sandbox is not None:
            parts.append(f"sandbox {self.sandbox.url}")
        if self.bridge is not None:
            parts.append(f"also on the docker bridge {self.bridge}")
        lines = [
            f'ready: tokenvend local is serving the stack "{self.options.stack}" '
            f"({self.options.region}): {', '.join(parts)}",
        ]
        exports = {
            "AWS_ACCESS_KEY_ID": self.user_key["id"],
            "AWS_SECRET_ACCESS_KEY": self.user_key["secret"],
            "AWS_REGION": self.options.region,
            "AWS_DEFAULT_REGION": self.options.region,
            "AWS_ENDPOINT_URL": self.moto.url,
            "AWS_ENDPOINT_URL_LAMBDA": self.lambda_server.url,
            "TOKENVEND_STACK": self.options.stack,
            "TOKENVEND_API_URL": self.api_server.url,
            # What the command line would read from the stack's outputs, which no local
            # CloudFormation holds.
            "TOKENVEND_TABLE": self.table_name,
            "TOKENVEND_SECRETS_PREFIX": self.secrets_prefix,
        }
        if self.audit_log_group:
            exports["TOKENVEND_AUDIT_LOG_GROUP"] = self.audit_log_group
        lines += [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
        if self.sam_env_path is not None:
            lines.append(f"# SAM CLI: --env-vars {shlex.quote(str(self.sam_env_path))}")
        if "dingtalk" in self.demo_providers:
            lines.append("# then: tokenvend token dingtalk demo")
        elif self.demo_providers:
            lines.append(f"# then: tokenvend token {self.demo_providers[0]} demo")
        else:
            lines.append("# then: tokenvend connections put PROVIDER CONNECTION --file secret.json")
        return lines

    # -- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started, newest first; safe after a partial start."""
        for runner in (self.scheduler, self.pollers):
            if runner is not None:
                runner.stop()
        for relay in self.relays:
            relay.stop()
        if self.api_server is not None:
            try:
                self.api_server.stop()
            except Exception as exc:  # keep stopping the others
                log("could not stop cleanly", level="WARNING", error=repr(exc))
        if self.access_log is not None:
            self.access_log.stop()  # its last lines, while moto still answers
        for server in (self.lambda_server, self.sandbox, self.moto):
            if server is not None:
                try:
                    server.stop()
                except Exception as exc:  # keep stopping the others
                    log("could not stop cleanly", level="WARNING", error=repr(exc))
        if self.state is not None:
            self.state.stop()  # the last snapshot: no request can come any more
        if self._saved_env is not None:
            os.environ.clear()
            os.environ.update(self._saved_env)


def _listen(flag: str, port: int, factory: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return factory(*args, **kwargs)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StartError(f"cannot listen on {HOST}:{port} ({flag}): {reason}") from None


def logs_to_stderr(*streams: TextIO) -> None:
    """Log handlers bound to `streams` (the process's stdout and stderr, by loggers created
    before run() replaced them) write to the current sys.stderr instead, whole lines only:
    stdout carries only the banner."""
    import logging

    replaced = (*streams, sys.__stdout__, sys.__stderr__)
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and any(
                handler.stream is stream for stream in replaced
            ):
                handler.setStream(sys.stderr)


def _route_warnings() -> None:
    """Python warnings become JSON lines on stderr like every other line there, except two
    that only running every function in one process causes: Powertools' Metrics is one
    object per process here, where in Lambda it is one per container, so concurrent
    invocations of different functions see each other's dimensions, and an invocation that
    adds no metric is the rule for the vend function's cache hits."""
    import logging

    warnings.filterwarnings("ignore", message="No application metrics to publish")
    warnings.filterwarnings("ignore", message=r"Dimension '.*' has already been added")

    class ToJson(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log(record.getMessage().strip(), level="WARNING", source="py.warnings")

    logging.captureWarnings(True)
    captured = logging.getLogger("py.warnings")
    captured.handlers = [ToJson()]
    captured.propagate = False


def print_banner(lines: list[str], out: TextIO) -> None:
    out.write("\n".join(lines) + "\n")
    out.flush()
