"""The world the model drives: vend and provider "containers" of the real functions, each
with its own memory, AWS clients and clock, on moto and the sandbox's token endpoints.

Time is virtual. One reference clock (the token endpoints' own, so the provider's) moves
only when the model moves it, when a function sleeps (a lease wait, a retry's backoff: the
sleep advances the clock instead of waiting), or when a token request times out (a scripted
slow answer: the timeout's length in virtual seconds). Every container reads the reference
clock plus its own offset. So nothing here waits on wall time, and a run is reproducible.

What the world records for the model's invariants, without changing what the functions do:
- every refresh attempt (one `TokenEndpoint.fetch`) with the reference time of each HTTP
  request it sent, and the connection it was for;
- every token a token endpoint answered with, when, and what the answer said its lifetime
  was (the sandbox's own records say when its tokens expire; scripted answers say it in their
  body);
- what the functions logged (Powertools' formatter) and printed (EMF metrics).

Faults: AWS errors at the n-th call a container makes (botocore's `before-parameter-build`,
as `support.AwsFault`), a container's process ending (`Crash`, a BaseException: nothing
after it runs, and every later call of that container fails too), and a holder paused at a
chosen point of its attempt while the model goes on (a real thread, blocked on an event).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

import boto3
import requests
from botocore.exceptions import ClientError

from support import (
    ROOT,
    TABLE,
    AuditRecords,
    LambdaContext,
    api_event,
    load_function,
    redeem_out_of_band,
    secret_forms,
)
from tokenvend.sandbox import Sandbox
from tokenvend.template import load_template, table_definition
from tokenvend_core.audit import Trail, fingerprint
from tokenvend_core.aws.secrets import SecretStore
from tokenvend_core.aws.store import TokenStore
from tokenvend_core.catalogue.request import TokenRequest
from tokenvend_core.catalogue.spec import ProviderSpec, spec_for
from tokenvend_core.refresh.endpoint import RetryPolicy, TokenEndpoint
from tokenvend_core.refresh.refresher import Refresher
from tokenvend_core.settings import Settings
from tokenvend_core.tokens import jwt_exp
from tokenvend_core.vend.invoker import LambdaInvoker
from tokenvend_core.vend.vendor import Vendor

PREFIX = "tokenvend-test-"
SECRETS_PREFIX = "tokenvend/"
START = 1_800_000_000.0  # the reference clock's first reading (2027)

# Callers. The worker is an assumed-role session of the role the access lists name; the
# outsider is in no list the operator ever writes; nobody has no identity at all.
WORKER = "arn:aws:sts::123456789012:assumed-role/worker/session-1"
OUTSIDER = "arn:aws:iam::123456789012:user/outsider"
CALLERS: dict[str, str | None] = {"worker": WORKER, "outsider": OUTSIDER, "nobody": None}
# The access lists an operator may put in a secret (None: no list, anyone).
LISTS: dict[str, list[str] | None] = {
    "none": None,
    "role": ["arn:aws:iam::123456789012:role/worker"],
    "session": ["arn:aws:sts::123456789012:assumed-role/worker/*"],
    "two": ["arn:aws:iam::123456789012:user/someone-else", "arn:aws:iam::123456789012:role/w*"],
}

# The functions' settings: their defaults (the template's), one schedule worker (so that a
# run is deterministic), and plain HTTP on loopback for the sandbox.
SETTINGS = Settings(
    table_name=TABLE,
    secrets_prefix=SECRETS_PREFIX,
    provider_function_prefix=PREFIX,
    schedule_concurrency=1,
    allow_http_loopback=True,
)
# Real timeouts are far longer than loopback ever takes, even on a loaded machine: a spurious
# one would make a run irreproducible. A slow provider is a sandbox answer marked SLOW: the
# session turns it into the read timeout a slow answer would cause, at once, and the
# reference clock moves by VIRTUAL_TIMEOUT (the attempt's whole deadline).
POLICY = RetryPolicy(base=0.25, cap=4.0, max_tries=4, connect_timeout=10.0, read_timeout=10.0)
VIRTUAL_TIMEOUT = float(SETTINGS.attempt_deadline)
SLOW = "X-Model-Slow"


@functools.cache
def _table() -> dict[str, Any]:
    """The token table of template.yaml (read once: the template takes a while to parse)."""
    return table_definition(load_template(ROOT / "template.yaml"))


class Crash(BaseException):
    """The container's process ends: nothing after this line runs in it."""


class RefClock:
    """The reference clock; the sandbox's clock, and every container's plus an offset."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += max(0.0, seconds)


# ------------------------------------------------------------------------- what is recorded


@dataclass
class Attempt:
    """One refresh attempt (or code exchange) a provider container made: one fetch."""

    number: int
    connection: str
    kind: str  # "refresh" or "code"
    container: str
    offset: float  # the container's clock, against the reference
    step: int
    began: float
    sends: list[float] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)  # access tokens in the answers
    rotated: list[str] = field(default_factory=list)  # refresh tokens in the answers


@dataclass
class Issued:
    """An access token a token endpoint answered with (first step seen, latest answer)."""

    token: str
    connection: str
    step: int  # the step in which the attempt that fetched it first began
    at: float  # reference time of the latest answer that carried it
    expires_in: float | None
    jwt_exp: int | None


class Fault:
    """A fault for one step. `where`: the vend container or the provider container the step
    uses; `operation`: an AWS operation name, "*" for any, or "send" (a token request);
    `nth`: which matching call (0 = the first); `every`: that call and every later one.
    `code`: an AWS error code; for "send", "crash" (before sending) or "crash-after" (the
    provider answered, the process ends before anything else); "crash" on an AWS call ends
    the process instead of failing the call; "lost-answer" lets the AWS call succeed and
    fails it afterwards (a timeout after AWS applied a write)."""

    def __init__(
        self, where: str, operation: str, *, nth: int, code: str, every: bool = False
    ) -> None:
        self.where = where
        self.operation = operation
        self.nth = nth
        self.code = code
        self.every = every
        self.seen = 0
        self.fired = 0

    def __repr__(self) -> str:
        every = ", every=True" if self.every else ""
        return (
            f"Fault({self.where!r}, {self.operation!r}, nth={self.nth}, code={self.code!r}{every})"
        )

    def matches(self, operation: str) -> bool:
        if self.operation != operation and not (self.operation == "*" and operation != "send"):
            return False
        n = self.seen
        self.seen += 1
        hit = n == self.nth or (self.every and n > self.nth)
        self.fired += hit
        return hit


@dataclass
class Pause:
    """A holder stopped at `point` ("before_fetch": holding the lease, before its attempt's
    deadline starts; "after_answer": the provider answered, nothing stored yet)."""

    point: str
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    armed: bool = True
    attempt: Attempt | None = None


# --------------------------------------------------------------------------- the containers


class RecordingSession(requests.Session):
    """The token endpoint's HTTP session: records each request's reference time and each
    answer's tokens; injects crashes and pauses around the request."""

    def __init__(self, container: ProviderContainer) -> None:
        super().__init__()
        self._container = container

    def send(self, request: Any, **kwargs: Any) -> Any:
        container = self._container
        world = container.world
        container.check_alive("send")
        attempt = world.current_attempt()
        if attempt is not None:
            attempt.sends.append(world.clock())
        try:
            response = super().send(request, **kwargs)
            if response.headers.get(SLOW):
                raise requests.ReadTimeout("the token endpoint is slow (scripted)")
        except requests.Timeout:
            world.clock.advance(VIRTUAL_TIMEOUT)
            raise
        if attempt is not None:
            world.record_answer(attempt, response)
        container.after_answer()
        return response


class ObservedEndpoint(TokenEndpoint):
    """The real TokenEndpoint; each fetch is recorded as one attempt."""

    def __init__(self, container: ProviderContainer, **kwargs: Any) -> None:
        self.session = RecordingSession(container)
        super().__init__(self.session, **kwargs)
        self._container = container

    def fetch(self, spec: ProviderSpec, request: TokenRequest, **kwargs: Any) -> Any:
        world = self._container.world
        attempt = world.begin_attempt(self._container, request)
        try:
            self._container.pause_here("before_fetch", attempt)
            return super().fetch(spec, request, **kwargs)
        finally:
            world.end_attempt()


class Container:
    """What a Lambda execution environment keeps: its memory, its clients, its clock."""

    def __init__(self, world: World, name: str, offset: float) -> None:
        self.world = world
        self.name = name
        self.offset = offset
        self.dead = False
        self.busy = False
        self.faults: list[Fault] = []

    def clock(self) -> float:
        return self.world.clock.now + self.offset

    def client(self, service: str) -> Any:
        made = boto3.client(service)
        made.meta.events.register("before-parameter-build", self._aws_call)
        made.meta.events.register("after-call", self._aws_answered)
        return made

    def _aws_call(self, event_name: str = "", **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        self.check_alive(operation)

    def _aws_answered(self, event_name: str = "", **_: Any) -> None:
        """A "lost-answer" fault: AWS did what was asked, and the caller never heard so."""
        operation = event_name.rsplit(".", 1)[-1]
        for fault in self.faults:
            if fault.code == "lost-answer" and fault.matches(operation):
                raise ClientError(
                    {"Error": {"Code": "RequestTimeout", "Message": "injected: answer lost"}},
                    operation,
                )

    def check_alive(self, operation: str) -> None:
        if self.dead:
            raise Crash(f"{self.name} is gone")
        if operation in self.world.outages and isinstance(self, ProviderContainer):
            raise ClientError(
                {"Error": {"Code": "ServiceUnavailable", "Message": "injected outage"}}, operation
            )
        for fault in self.faults:
            if fault.code in ("crash-after", "lost-answer") or not fault.matches(operation):
                continue
            if fault.code == "crash":
                self.dead = True
                raise Crash(f"{self.name} ended at {operation}")
            raise ClientError({"Error": {"Code": fault.code, "Message": "injected"}}, operation)

    def after_answer(self) -> None:
        for fault in self.faults:
            if fault.code == "crash-after" and fault.matches("send"):
                self.dead = True
                raise Crash(f"{self.name} ended after the provider answered")


class ProviderContainer(Container):
    def __init__(self, world: World, provider: str, index: int, offset: float) -> None:
        super().__init__(world, f"{provider}#{index}", offset)
        self.provider = provider
        self.pause: Pause | None = None
        self.endpoint = ObservedEndpoint(
            self,
            policy=POLICY,
            clock=self.clock,
            monotonic=self.clock,
            sleep=world.sleep,
            jitter=lambda: 0.5,
        )
        self.refresher = Refresher(
            spec_for(provider),
            replace(SETTINGS, provider=provider),
            SecretStore(self.client("secretsmanager"), SECRETS_PREFIX),
            TokenStore(self.client("dynamodb"), TABLE),
            self.endpoint,
            owner=self.name,
            clock=self.clock,
            monotonic=self.clock,
            sleep=world.sleep,
            audit=Trail(world.audit, function=self.name),
        )
        # The function's module, its container-wide refresher set as a cold start would.
        self.module: Any = cast(
            Any, load_function("provider", f"model_{provider}_{uuid.uuid4().hex[:8]}")
        )
        self.module._refresher = self.refresher

    def pause_here(self, point: str, attempt: Attempt | None) -> None:
        pause = self.pause
        if pause is None or not pause.armed or pause.point != point:
            return
        pause.armed = False
        pause.attempt = attempt
        pause.reached.set()
        if not pause.release.wait(600):
            raise Crash("a paused holder was never released")

    def after_answer(self) -> None:
        super().after_answer()
        self.pause_here("after_answer", self.world.current_attempt())

    def handle(self, event: dict[str, Any]) -> Any:
        return self.module.lambda_handler(event, LambdaContext(f"{PREFIX}{self.provider}"))


class RoutedInvoker(LambdaInvoker):
    """The vend function's invoker, with the Lambda service replaced by a direct call into
    the provider container the step routes to: same event, same JSON, same error handling."""

    def __init__(self, world: World) -> None:
        super().__init__(client=None, function_prefix=PREFIX)
        self._world = world

    def _invoke(self, function_name: str, payload: str) -> tuple[str | None, bytes]:
        provider = function_name.removeprefix(PREFIX)
        container = self._world.routed(provider)
        try:
            answer = container.handle(json.loads(payload))
        except Crash:
            container.dead = True
            return "Unhandled", b'{"errorType": "Runtime.ExitError"}'
        except Exception as exc:  # what Lambda reports for an unhandled error
            return "Unhandled", json.dumps({"errorType": type(exc).__name__}).encode()
        return None, json.dumps(answer).encode()


class VendContainer(Container):
    def __init__(self, world: World, index: int, offset: float) -> None:
        super().__init__(world, f"vend#{index}", offset)
        self.vendor = Vendor(
            TokenStore(self.client("dynamodb"), TABLE),
            RoutedInvoker(world),
            memory_seconds=SETTINGS.memory_cache,
            skew=SETTINGS.clock_skew,
            clock=self.clock,
            monotonic=self.clock,
            audit=Trail(world.audit, function=self.name),
        )
        self.module: Any = cast(Any, load_function("vend", f"model_vend_{uuid.uuid4().hex[:8]}"))
        self.module._vendor = self.vendor

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self.module.lambda_handler(
            event, LambdaContext(f"{PREFIX}vend", 20_000)
        )
        return answer


# ------------------------------------------------------------------------------- the world


@dataclass
class Response:
    """One API answer, as the caller saw it, at a reference time."""

    method: str
    connection: str
    caller: str | None
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    min_ttl: int | None = None
    rejected: str | None = None  # the access token the caller reported as refused
    raw: str = ""  # the body as sent

    def texts(self) -> list[str]:
        """Everything a caller reads: the raw body, every string in it once decoded, the
        headers."""
        found = [self.raw, *(f"{k}: {v}" for k, v in self.headers.items())]

        def walk(value: Any) -> None:
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(self.body)
        return found


class World:
    def __init__(self, vend_offsets: list[float], provider_offsets: list[float]) -> None:
        self.clock = RefClock()
        self.sandbox = Sandbox(clock=self.clock).start()
        self.step = 0
        self.attempts: list[Attempt] = []
        self.issued: dict[str, Issued] = {}
        self.secret_owner: dict[str, str] = {}  # client secret -> connection
        self.providers: dict[str, str] = {}  # connection -> provider
        self._local = threading.local()
        self._lock = threading.Lock()
        self._route: dict[str, int] = {}
        self.outages: set[str] = set()  # AWS operations failing for every provider function
        self.provider_offsets = provider_offsets
        self.audit = AuditRecords()  # every container's audit records
        self.ddb = boto3.client("dynamodb")  # the model's own, never faulted
        self.ddb.create_table(TableName=TABLE, **_table())
        self.sm = boto3.client("secretsmanager")
        self.vends = [VendContainer(self, i, off) for i, off in enumerate(vend_offsets)]
        self.provider_containers: dict[str, list[ProviderContainer]] = {}
        self.logs = io.StringIO()
        self.output = io.StringIO()
        self._log_handler: logging.Handler | None = None
        self._start_logs()

    # -- lifecycle ---------------------------------------------------------------------------

    def _start_logs(self) -> None:
        from tokenvend_core.observability import logger

        handler = logging.StreamHandler(self.logs)
        handler.setFormatter(logger.registered_formatter)
        logger._logger.addHandler(handler)
        self._log_handler = handler

    def close(self) -> None:
        from tokenvend_core.observability import logger

        if self._log_handler is not None:
            logger._logger.removeHandler(self._log_handler)
            self._log_handler = None
        for containers in self.provider_containers.values():
            for container in containers:
                container.endpoint.session.close()
        self.sandbox.stop()

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """What the functions print (EMF metrics, stray tracebacks) while a step runs. A
        schedule worker thread that a Crash ends is the process ending: not an error."""
        previous = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            if args.exc_type is not None and issubclass(args.exc_type, Crash):
                return
            previous(args)

        threading.excepthook = hook
        try:
            with contextlib.redirect_stdout(self.output), contextlib.redirect_stderr(self.output):
                yield
        finally:
            threading.excepthook = previous

    # -- time ------------------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- containers ------------------------------------------------------------------------

    def add_provider(self, provider: str) -> None:
        if provider not in self.provider_containers:
            self.provider_containers[provider] = [
                ProviderContainer(self, provider, i, off)
                for i, off in enumerate(self.provider_offsets)
            ]

    def replace_dead(self) -> list[str]:
        """Lambda starts a new container where one ended (a cold start: empty memory)."""
        replaced = []
        for provider, containers in self.provider_containers.items():
            for i, container in enumerate(containers):
                if container.dead:
                    container.endpoint.session.close()
                    containers[i] = ProviderContainer(self, provider, i, container.offset)
                    replaced.append(container.name)
        for i, vend in enumerate(self.vends):
            if vend.dead:
                self.vends[i] = VendContainer(self, i, vend.offset)
                replaced.append(vend.name)
        return replaced

    def cold_start(self, kind: str, index: int) -> str:
        if kind == "vend":
            free = [i for i, v in enumerate(self.vends) if not v.busy]
            i = free[index % len(free)]
            self.vends[i] = VendContainer(self, i, self.vends[i].offset)
            return self.vends[i].name
        provider = sorted(self.provider_containers)[index % len(self.provider_containers)]
        containers = self.provider_containers[provider]
        free = [i for i, c in enumerate(containers) if not c.busy]
        i = free[(index // len(self.provider_containers)) % len(free)]
        containers[i].endpoint.session.close()
        containers[i] = ProviderContainer(self, provider, i, containers[i].offset)
        return containers[i].name

    def vend_container(self, index: int) -> VendContainer:
        free = [v for v in self.vends if not v.busy]
        return free[index % len(free)]

    def provider_container(self, provider: str, index: int) -> ProviderContainer:
        free = [c for c in self.provider_containers[provider] if not c.busy]
        return free[index % len(free)]

    def route(self, provider: str, index: int) -> ProviderContainer:
        container = self.provider_container(provider, index)
        self._route[provider] = self.provider_containers[provider].index(container)
        return container

    def routed(self, provider: str) -> ProviderContainer:
        return self.provider_containers[provider][self._route.get(provider, 0)]

    def arm(self, container: Container, fault: Fault | None) -> None:
        for other in self.all_containers():
            other.faults = []
        if fault is not None:
            container.faults = [fault]

    def disarm(self) -> int:
        fired = 0
        for container in self.all_containers():
            fired += sum(f.fired for f in container.faults)
            container.faults = []
        return fired

    def all_containers(self) -> list[Container]:
        found: list[Container] = list(self.vends)
        for containers in self.provider_containers.values():
            found.extend(containers)
        return found

    # -- attempts and answers -------------------------------------------------------------

    def current_attempt(self) -> Attempt | None:
        attempt: Attempt | None = getattr(self._local, "attempt", None)
        return attempt

    def begin_attempt(self, container: ProviderContainer, request: TokenRequest) -> Attempt:
        owner = next((self.secret_owner[s] for s in request.secrets if s in self.secret_owner), "?")
        grants = {
            (params or {}).get("grant_type")
            for params in (request.form, request.query, request.json_body)
        }
        kind = "code" if "authorization_code" in grants else "refresh"
        with self._lock:
            attempt = Attempt(
                number=len(self.attempts),
                connection=owner,
                kind=kind,
                container=container.name,
                offset=container.offset,
                step=self.step,
                began=self.clock(),
            )
            self.attempts.append(attempt)
        self._local.attempt = attempt
        return attempt

    def end_attempt(self) -> None:
        self._local.attempt = None

    def record_answer(self, attempt: Attempt, response: requests.Response) -> None:
        try:
            data = response.json()
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        token = data.get("access_token")
        if isinstance(token, str) and token:
            attempt.answered.append(token)
            lifetime = data.get("expires_in")
            try:
                expires_in = float(lifetime) if lifetime is not None else None
            except (TypeError, ValueError):
                expires_in = None
            with self._lock:
                known = self.issued.get(token)
                self.issued[token] = Issued(
                    token=token,
                    connection=attempt.connection,
                    step=min(attempt.step, known.step) if known else attempt.step,
                    at=self.clock(),
                    expires_in=expires_in,
                    jwt_exp=jwt_exp(token),
                )
        rotated = data.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            attempt.rotated.append(rotated)

    def expiry(self, token: str) -> float | None:
        """When the provider says the token expires: the sandbox's record of its own tokens,
        else what the (scripted) answer said: expires_in, or the JWT's exp."""
        info = self.sandbox.token_info(token)
        if info is not None:
            return info.expires_at
        issued = self.issued.get(token)
        if issued is None:
            return None
        if issued.expires_in is not None:
            return issued.at + issued.expires_in
        if issued.jwt_exp is not None:
            return float(issued.jwt_exp)
        return None

    # -- calls -----------------------------------------------------------------------------

    def api(
        self,
        vend: VendContainer,
        method: str,
        connection: str,
        caller: str | None,
        *,
        min_ttl: int | None = None,
        body: str | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str], str]:
        event = api_event(
            method, self.providers[connection], connection, min_ttl=min_ttl, body=body,
            caller=caller or "",
        )  # fmt: skip
        if caller is None:
            event["requestContext"]["identity"]["userArn"] = None
        event["requestContext"]["requestId"] = request_id = uuid.uuid4().hex
        answer = vend.handle(event)
        raw = answer["body"]
        data = json.loads(raw)
        self._check_audit(request_id, method, answer["statusCode"], data, caller)
        return answer["statusCode"], data, answer["headers"], raw

    def _check_audit(
        self, request_id: str, method: str, status: int, data: dict[str, Any], caller: str | None
    ) -> None:
        """Every answer of the API leaves exactly one audit record of the vend function, which
        says what the caller got: the token's fingerprint and where it came from, or the
        refusal's code."""
        answers = [
            r for r in self.audit.records
            if r["request_id"] == request_id and r["action"] in ("vend", "refresh")
        ]  # fmt: skip
        assert len(answers) == 1, answers
        (record,) = answers
        assert record["action"] == ("vend" if method == "GET" else "refresh")
        assert record["caller"] == (caller or None)
        if status == 200:
            assert record["fingerprint"] == fingerprint(data["access_token"])
            assert record["expires_at"] == data["expires_at"]
            assert (record["outcome"] == "stale") == bool(data.get("stale"))
            assert record["outcome"] in ("memory", "table", "provider", "stale")
        else:
            assert (record["outcome"], record["error_code"]) == ("refused", data["error"]["code"])
            assert record["fingerprint"] is None

    # -- the outside: AWS as the operator and the model see it ---------------------------

    def secret_name(self, connection: str) -> str:
        return f"{SECRETS_PREFIX}{self.providers[connection]}/{connection}"

    def read_secret(self, connection: str) -> tuple[dict[str, Any], str] | None:
        try:
            answer = self.sm.get_secret_value(SecretId=self.secret_name(connection))
        except ClientError:
            return None
        return json.loads(answer["SecretString"]), str(answer["VersionId"])

    def put_secret(self, connection: str, value: dict[str, Any]) -> None:
        name = self.secret_name(connection)
        try:
            self.sm.create_secret(Name=name, SecretString=json.dumps(value))
        except self.sm.exceptions.ResourceExistsException:
            self.sm.put_secret_value(SecretId=name, SecretString=json.dumps(value))

    def read_item(self, connection: str) -> dict[str, Any] | None:
        from boto3.dynamodb.types import TypeDeserializer

        answer = self.ddb.get_item(
            TableName=TABLE,
            Key={"provider": {"S": self.providers[connection]}, "connection": {"S": connection}},
            ConsistentRead=True,
        )
        raw = answer.get("Item")
        if not raw:
            return None
        de = TypeDeserializer()
        return {name: de.deserialize(value) for name, value in raw.items()}

    def redeem_out_of_band(self, client_id: str, client_secret: str) -> str:
        """An operator's own authorization, outside tokenvend: a fresh grant's refresh token."""
        return redeem_out_of_band(self.sandbox, client_id, client_secret)


def encodings(value: str, client_id: str | None = None) -> set[str]:
    """The forms of a secret the invariants look for (and, to be safe, Basic credentials of
    the unescaped pair too), less those too short to tell apart from ordinary text."""
    found = secret_forms(value, client_id)
    if client_id is not None:
        found.add(base64.b64encode(f"{client_id}:{value}".encode()).decode("ascii"))
    return {form for form in found if len(form) >= 8}


def threads_call(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `target` in a daemon thread; its result or exception lands in the dict."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:  # a Crash included: the thread's container ended
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="model-holder", daemon=True)
    thread.start()
    return thread, outcome


__all__ = [
    "CALLERS",
    "LISTS",
    "OUTSIDER",
    "PREFIX",
    "SETTINGS",
    "SLOW",
    "WORKER",
    "Attempt",
    "Container",
    "Crash",
    "Fault",
    "Issued",
    "Pause",
    "ProviderContainer",
    "Response",
    "VendContainer",
    "World",
    "encodings",
    "threads_call",
]
