"""The state machines: hypothesis draws sequences of rules, runs each against the real
handlers (world.py), and checks every promise of the reference model (reference.py) after
every step.

Rules: GET and POST refresh from three callers (allowed, outside the access list, no
identity) through any vend container and any provider container; scheduled runs; fan-out
batches; wps365 authorization with good, bad and reused codes; the clock moving; the provider
changing behaviour (slow, 5xx, 429 with Retry-After, refusing, echoing the request, zero and
negative lifetimes, an expired JWT, revoking the grant); an operator putting new secret
versions (access list, client secret, refresh token), deleting and restoring a secret; AWS
outages, AWS errors and process ends at a chosen call of a step; a holder paused inside its
attempt while the clock and other containers go on (its lease taken over); cold starts.

Four machines draw from these rules, each around the promises its rules can break, so that
one defect found does not hide the others (each is its own test):
- ClockMachine: container clocks up to MAX_OFFSET apart from the providers'; expiry, min_ttl,
  the lease and the cool-down (promises 1 and 2);
- AccessMachine: callers, access lists and their changes, holders whose lease is taken over
  (security: allowed_principals, no identity);
- GrantMachine: one wps365 connection; rotation, the fallback place, authorization, AWS
  failures and crashes at every step of an attempt (promise 3), permanent failures (4);
- FullMachine: every rule at once (make soak).

Each rule that runs a function is one "step": the model injects the provider behaviours,
arms the step's fault, runs it, and checks every invariant. A step's checks run inside the
rule, so a sequence printed by hypothesis replays as plain Python (test_regressions.py).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from moto import mock_aws

from model.reference import Connection, Reference, StepRecord
from model.world import (
    CALLERS,
    LISTS,
    SETTINGS,
    SLOW,
    Container,
    Crash,
    Fault,
    Pause,
    ProviderContainer,
    Response,
    VendContainer,
    World,
    threads_call,
)
from support import REDIRECT_URI, connection_secret, event
from tokenvend.sandbox import Fault as SandboxFault
from tokenvend_core.tokens import sha256_hex

# Container clocks: offsets from the reference (the providers') clock, in seconds. The brief
# is "within ±30 s of the reference": two containers may then be 60 s apart.
MAX_OFFSET = float(os.environ.get("TOKENVEND_MODEL_MAX_OFFSET", "30"))
OFFSETS = tuple(o for o in (0, -30, 30, -15, 15, -5, 5) if abs(o) <= MAX_OFFSET)
EXTRA_PROVIDERS = ("oauth2", "aspose", "azure", "dingtalk")
MIN_TTLS = (None, 0, 300, 900, 3600)
ADVANCES = (1, 5, 25, 31, 61, 121, 299, 301, 600, 901, 1800, 2900, 3300, 3599, 3601, 7200)
LIFETIMES = (3600, 600, 120)
ECHO = getattr(SandboxFault, "echo_request", None)
ECHO_PARTS = ("request", "authorization", "body", "decoded")
ECHOES = tuple(f"echo:{part}" for part in (*ECHO_PARTS, "all", "redirect"))
FAILING = ("5xx", "5xx-once", "slow", "429", "429-long", "refuse")
LIFETIME_ODDITIES = ("zero", "negative", "past-jwt")
ALL_BEHAVIOURS = ("normal", *FAILING, *ECHOES, *LIFETIME_ODDITIES, "revoke")
CALLER_KEYS = ("worker", "outsider", "nobody")
# What a run leaves out while a known defect is being fixed (comma-separated):
# - "stale-holder-write": no authorization or operator edit while a paused holder holds a
#   rotated grant;
# - "delete": no secret is deleted;
# - "skewed-cool-down": the cool-down is checked as each container counts it, on its own
#   clock (up to two offsets shorter than on the reference clock);
# - a caller ("nobody", "outsider": the worker asks instead), or a provider behaviour.
AVOID = frozenset(filter(None, os.environ.get("TOKENVEND_MODEL_AVOID", "").split(",")))
INDEX = st.integers(0, 3)


def kept(choices: Sequence[str], fallback: str) -> st.SearchStrategy[str]:
    """The choices a run draws from: those not left out by TOKENVEND_MODEL_AVOID."""
    return st.sampled_from(tuple(c for c in choices if c not in AVOID) or (fallback,))


# -------------------------------------------------------------------------------- faults

# The faults worth a step: the n-th call of each kind a holder makes, a process ending at
# each of them or around the token request, and the vend function's table read.
STEP_FAULTS: tuple[Fault, ...] = (
    Fault("provider", "PutSecretValue", nth=0, code="ServiceUnavailable", every=True),
    Fault("provider", "PutSecretValue", nth=0, code="InternalServiceError"),
    *(Fault("provider", "UpdateItem", nth=n, code="InternalServerError") for n in range(4)),
    Fault(
        "provider", "UpdateItem", nth=0, code="ProvisionedThroughputExceededException", every=True
    ),
    Fault("provider", "GetItem", nth=0, code="ThrottlingException"),
    Fault("provider", "GetSecretValue", nth=0, code="InternalServiceError"),
    Fault("provider", "ListSecrets", nth=0, code="ThrottlingException"),
    Fault("provider", "Query", nth=0, code="InternalServerError"),
    Fault("provider", "DeleteItem", nth=0, code="InternalServerError"),
    Fault("provider", "*", nth=0, code="AccessDeniedException"),
    *(Fault("provider", "*", nth=n, code="crash") for n in range(8)),
    *(Fault("provider", "*", nth=n, code="InternalServerError") for n in range(8)),
    Fault("provider", "PutSecretValue", nth=0, code="lost-answer"),
    *(Fault("provider", "UpdateItem", nth=n, code="lost-answer") for n in range(4)),
    Fault("provider", "send", nth=0, code="crash"),
    Fault("provider", "send", nth=0, code="crash-after"),
    Fault("vend", "GetItem", nth=0, code="ProvisionedThroughputExceededException"),
    Fault("vend", "GetItem", nth=1, code="InternalServerError"),
    Fault("vend", "*", nth=0, code="InternalServerError", every=True),
)
CRASHES = tuple(f for f in STEP_FAULTS if f.code.startswith("crash"))
# Where the grant is at stake: Secrets Manager refusing the rotated refresh token weighs as
# much as every other fault together.
GRANT_FAULTS = STEP_FAULTS + (STEP_FAULTS[0],) * 12 + (STEP_FAULTS[1],) * 4
VEND_FAULTS = tuple(f for f in STEP_FAULTS if f.where == "vend")


def faults(choices: Sequence[Fault]) -> st.SearchStrategy[Fault | None]:
    """Three steps in four run without a fault; the rest get a fresh copy of one of these."""
    if not choices:
        return st.none()

    def fresh(f: Fault) -> Fault:
        return Fault(f.where, f.operation, nth=f.nth, code=f.code, every=f.every)

    return st.integers(0, 3).flatmap(
        lambda n: st.none() if n < 3 else st.sampled_from(choices).map(fresh)
    )


# ---------------------------------------------------------------------- provider behaviours


def past_jwt(now: float) -> str:
    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"exp": int(now) - 120, "iat": int(now) - 3720, "jti": f"model-{now}"}
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{part({'sig': 'x'})}"


def refusal(provider: str) -> SandboxFault:
    if provider == "azure":
        return SandboxFault.azure_error(7000215, "invalid_client", 401)
    if provider == "dingtalk":
        return SandboxFault.dingtalk_error("invalid.client")
    if provider == "wps365":
        return SandboxFault.wps_error("invalid_client", 40000002, "client authentication failed")
    return SandboxFault.oauth_error("invalid_client", 401, "client authentication failed")


def echo(provider: str, part: str, c: Connection, refresh_token: str | None) -> SandboxFault:
    """An error answer that repeats the request (the sandbox's echo_request), or, with a
    sandbox that has none, one that repeats the connection's secrets in the encodings a
    request carries them."""
    parts = ECHO_PARTS if part in ("all", "redirect") else (part,)
    status = 302 if part == "redirect" else 400
    body: dict[str, Any]
    if provider == "azure":
        body, fields = {"error": "invalid_request", "error_codes": [900144]}, ("error_description",)
    elif provider == "dingtalk":
        body, fields = {"code": "InvalidParameter"}, ("message",)
    elif provider == "wps365":
        body, fields = {"code": 40000001, "msg": "invalid_request"}, ("debug.desc",)
    else:
        body, fields = {"error": "invalid_request"}, ("error_description",)
    if ECHO is not None:
        fault: SandboxFault = ECHO(status=status, fields=fields, parts=parts, body=body)
        return fault
    secret, client = c.client_secret, c.client_id
    basic = base64.b64encode(f"{quote_plus(client)}:{quote_plus(secret)}".encode()).decode()
    texts = {
        "request": f"POST /token?client_id={quote_plus(client)}&client_secret={quote_plus(secret)}",
        "authorization": f"Authorization: Basic {basic}",
        "body": f"Body: {json.dumps({'client_secret': secret, 'refresh_token': refresh_token})}",
        "decoded": f"client_secret={secret} refresh_token={refresh_token} path={quote(secret)}",
    }
    text = " ".join(texts[p] for p in parts)
    if status == 302:
        return SandboxFault.redirect(f"https://echo.invalid/{quote(text, safe='')}")
    for dotted in fields:
        target = body
        *path, last = dotted.split(".")
        for name in path:
            target = target.setdefault(name, {})
        target[last] = text
    return SandboxFault.success(body, status=status)


def behaviour_faults(c: Connection, now: float, refresh_token: str | None) -> list[SandboxFault]:
    """What the connection's token endpoint answers during one step, in order."""
    b = c.behaviour
    if b == "slow":
        return [SandboxFault(status=200, body="{}", headers={SLOW: "1"})] * 4
    if b == "5xx":
        return [
            SandboxFault.plain(503),
            SandboxFault.html(502),
            SandboxFault.success({"error": "server_error"}, status=500),
        ] * 2
    if b == "5xx-once":
        return [SandboxFault.plain(503)]
    if b == "429":
        return [SandboxFault.throttle(retry_after=2)] * 6
    if b == "429-long":
        return [SandboxFault.throttle(retry_after=40)] * 6
    if b == "refuse":
        return [refusal(c.provider)] * 6
    if b.startswith("echo:"):
        return [echo(c.provider, b.removeprefix("echo:"), c, refresh_token)] * 6
    if b == "past-jwt":
        return [
            SandboxFault.success({"access_token": past_jwt(now + i), "token_type": "Bearer"})
            for i in range(6)
        ]
    return []


# ------------------------------------------------------------------------------ the base


@dataclass
class Holder:
    """A vend request whose provider function is paused inside its attempt."""

    thread: Any
    outcome: dict[str, Any]
    pause: Pause
    vend: VendContainer
    provider: ProviderContainer
    connection: str
    caller: str
    step: int  # the step it began in


@dataclass
class Step:
    label: str
    vend: VendContainer | None = None
    provider: ProviderContainer | None = None
    caller: str | None = None
    connection: str | None = None
    extra_faults: dict[str, list[SandboxFault]] = field(default_factory=dict)
    admitted_at: int | None = None


class ModelMachine(RuleBasedStateMachine):
    """The world, the reference model and the step procedure every machine shares."""

    MAX_OFFSET = MAX_OFFSET
    COOL_DOWN_SLACK = 0.0  # set by run() for "skewed-cool-down"; a replayed test has none

    def __init__(self) -> None:
        super().__init__()
        self.mock: Any = None
        self.world: World | None = None
        self.ref: Reference | None = None
        self.conns: list[Connection] = []
        self.holder: Holder | None = None
        self.last_token: dict[tuple[str, str], str] = {}
        self.log_seen = 0
        self.output_seen = 0

    def _setup(
        self,
        providers: Sequence[str],
        vend_offsets: Sequence[float],
        provider_offsets: Sequence[float],
        lifetimes: Sequence[int],
        access: Sequence[str],
        authorized: bool,
    ) -> None:
        self.mock = mock_aws()
        self.mock.start()
        world = self.world = World(
            [float(o) for o in vend_offsets], [float(o) for o in provider_offsets]
        )
        ref = self.ref = Reference(world, self.MAX_OFFSET)
        ref.cool_down_slack = self.COOL_DOWN_SLACK
        for i, provider in enumerate(providers):
            name = "w" if provider == "wps365" else f"c{i}"
            value = connection_secret(world.sandbox, provider, name)
            keep = ("tenant_id", "scope", "corp_id", "redirect_uri")
            connection = Connection(
                name=name,
                provider=provider,
                client_id=value["client_id"],
                client_secret=self._secret_for(name, 0),
                lifetime=lifetimes[i % len(lifetimes)],
                extra={k: v for k, v in value.items() if k not in ("client_id", "client_secret")},
                attrs={k: v for k, v in value.items() if k in keep},
                lists=[(0, access[i % len(access)])],
            )
            ref.add(connection)
            self.conns.append(connection)
            world.add_provider(provider)
            self._register(connection)
            world.put_secret(name, self._secret_value(connection))
        if authorized and self.conns[0].provider == "wps365":
            self._authorize("good", 0, None)

    @staticmethod
    def _secret_for(name: str, version: int) -> str:
        # Characters that every encoding changes: form, path and JSON escapes all differ.
        return f'S3c/r+t {name}=&"v{version}"\\x-do-not-leak'

    def _secret_value(self, c: Connection) -> dict[str, Any]:
        value = dict(c.extra)
        value.update(client_id=c.client_id, client_secret=c.client_secret)
        patterns = LISTS[c.access]
        if patterns is not None:
            value["allowed_principals"] = list(patterns)
        return value

    def _register(self, c: Connection) -> None:
        assert self.world is not None
        lifetime = {"zero": 0, "negative": -1}.get(c.behaviour, c.lifetime)
        self.world.sandbox.register(
            c.provider, c.client_id, c.client_secret, lifetime=lifetime, **c.attrs
        )

    def teardown(self) -> None:
        if self.holder is not None:
            self.holder.pause.release.set()
            self.holder.thread.join(30)
            self.holder = None
        if self.world is not None:
            self.world.outages.clear()
            self.world.close()
        if self.mock is not None:
            self.mock.stop()

    # -- the step procedure -------------------------------------------------------------------

    def _conn(self, index: int) -> Connection:
        return self.conns[index % len(self.conns)]

    def _inject(self, step: Step) -> None:
        assert self.world is not None
        sandbox = self.world.sandbox
        for c in self.conns:
            live = sandbox.refresh_token_of(c.client_id) if c.provider == "wps365" else None
            extra = step.extra_faults.get(c.provider)
            scripted = extra if extra is not None else behaviour_faults(c, self.world.clock(), live)
            if scripted:
                sandbox.inject(c.provider, *scripted)

    def _step(
        self, step: Step, fault: Fault | None, action: Callable[[StepRecord], list[Response]]
    ) -> StepRecord:
        world, ref = self.world, self.ref
        assert world is not None and ref is not None
        world.step += 1
        record = StepRecord(
            number=world.step,
            label=step.label,
            started=world.clock(),
            caller=step.caller,
            connection=step.connection,
            vend_call=step.label in ("get", "refresh", "slow_holder_starts", "holder_finishes"),
            admitted_at=step.admitted_at,
        )
        ref.observe_refresh_tokens()
        world.sandbox.reset()  # what happened between steps (an operator's own requests)
        before = ref.last or ref.snapshot()
        record.blocked = ref.blocked(before)
        if step.connection is not None:
            record.before_item = before.items[step.connection]
            secret = before.secrets[step.connection]
            record.before_secret_version = secret[1] if secret else None
        self._inject(step)
        target: Container | None = step.provider
        if fault is not None and fault.where == "vend" and step.vend is not None:
            target = step.vend
        if fault is not None and target is not None:
            world.arm(target, fault)
            record.vend_fault = target is step.vend
        with world.capture():
            record.responses = action(record)
        record.fired = world.disarm()
        if fault is not None:
            record.notes.append(f"{fault!r} fired {record.fired} time(s)")
        record.crashed = any(c.dead for c in world.all_containers())
        record.http_calls = world.sandbox.calls()
        after = ref.snapshot()
        ref.observe_refresh_tokens(after)
        world.sandbox.reset()
        world.replace_dead()
        logs, output = world.logs.getvalue(), world.output.getvalue()
        record.logs, record.output = logs[self.log_seen :], output[self.output_seen :]
        self.log_seen, self.output_seen = len(logs), len(output)
        ref.check(record, after)
        ref.last = after
        return record

    def _call(
        self,
        vend: VendContainer,
        method: str,
        c: Connection,
        caller_key: str,
        *,
        min_ttl: int | None = None,
        body_kind: str = "none",
    ) -> Response:
        world = self.world
        assert world is not None
        caller = CALLERS[caller_key]
        body = None
        rejected = None
        if method == "POST":
            last = self.last_token.get((caller_key, c.name))
            if body_kind == "current" and last is not None:
                rejected = last
                body = json.dumps({"rejected_token_sha256": sha256_hex(last)})
            elif body_kind == "other":
                body = json.dumps({"rejected_token_sha256": sha256_hex("an older token")})
        status, data, headers, raw = world.api(
            vend, method, c.name, caller, min_ttl=min_ttl, body=body
        )
        if status == 200:
            self.last_token[(caller_key, c.name)] = data["access_token"]
        return Response(
            method, c.name, caller, status, data, headers, world.clock(), min_ttl, rejected, raw
        )

    def _invoke(self, container: ProviderContainer, payload: dict[str, Any]) -> Any:
        try:
            return container.handle(payload)
        except Crash:
            container.dead = True
            return {"ok": False, "error": {"code": "crashed"}}
        except Exception as exc:  # a scheduled run raises what fails it: Lambda retries it
            return {"ok": False, "error": {"code": type(exc).__name__}}

    # -- the actions the rules share ------------------------------------------------------

    def _vend(
        self,
        method: str,
        conn: int,
        caller: str,
        vend: int,
        via: int,
        fault: Fault | None,
        *,
        min_ttl: int | None = None,
        body: str = "none",
        wait: bool = False,
    ) -> None:
        world = self.world
        assert world is not None
        c = self._conn(conn)
        if wait:  # past the cool-down, whichever containers' clocks count it
            world.clock.advance(SETTINGS.cool_down + 2 * self.MAX_OFFSET + 1)
        v = world.vend_container(vend)
        p = world.route(c.provider, via)
        step = Step(method.lower() if method == "GET" else "refresh", v, p, CALLERS[caller], c.name)
        self._step(
            step,
            fault,
            lambda _: [self._call(v, method, c, caller, min_ttl=min_ttl, body_kind=body)],
        )

    def _authorize(self, code: str, via: int, fault: Fault | None) -> None:
        world = self.world
        assert world is not None
        c = self.conns[0]
        p = world.provider_container("wps365", via)
        if code == "good":
            value = world.sandbox.authorize(c.client_id, REDIRECT_URI)
        elif code == "reused" and c.codes:
            value = c.codes[-1]
        else:
            value = "sbx-wps365-code-never-issued"
        c.codes.append(value)

        def run(record: StepRecord) -> list[Response]:
            answer = self._invoke(p, {"action": "authorize", "connection": c.name, "code": value})
            record.authorize_failed = not (isinstance(answer, dict) and answer.get("ok"))
            record.notes.append(f"authorize {code}: {answer}")
            return []

        self._step(Step("authorize", provider=p, connection=c.name), fault, run)

    def _provider_event(
        self, label: str, provider: str, via: int, payload: dict[str, Any], fault: Fault | None
    ) -> None:
        assert self.world is not None
        p = self.world.provider_container(provider, via)

        def run(record: StepRecord) -> list[Response]:
            record.notes.append(f"{label}: {self._invoke(p, payload)}")
            return []

        self._step(Step(label, provider=p), fault, run)

    def _behave(self, conn: int, behaviour: str) -> None:
        c = self._conn(conn)
        if behaviour == "revoke":  # the provider revokes every grant of the app, once
            if c.provider == "wps365" and self.world is not None:
                self.world.sandbox.revoke_refresh_tokens(c.client_id)
            behaviour = "normal"
        c.behaviour = behaviour
        self._register(c)

    def _operator_puts(self, conn: int, change: str) -> None:
        world, ref = self.world, self.ref
        assert world is not None and ref is not None
        ref.last = None
        c = self._conn(conn)
        current = world.read_secret(c.name)
        if c.deleted or current is None:
            return
        value = dict(current[0])  # the operator edits what is there (and keeps the grant)
        if change.startswith("list:"):
            key = change.removeprefix("list:")
            c.lists.append((world.step + 1, key))
            if LISTS[key] is None:
                value.pop("allowed_principals", None)
            else:
                value["allowed_principals"] = list(LISTS[key] or [])
        elif change == "rotate-secret":
            secret = self._secret_for(c.name, len(ref.client_secrets))
            ref.rotate_secret(c, secret)
            self._register(c)
            value["client_secret"] = secret
        elif c.provider == "wps365":  # an operator's own authorization, seeded
            grant = world.redeem_out_of_band(c.client_id, c.client_secret)
            ref.refresh_tokens.add(grant)
            value["refresh_token"] = grant
            value.pop("refresh_expires_at", None)
        world.put_secret(c.name, value)

    def _holder_starts(
        self, conn: int, caller: str, vend: int, via: int, method: str, point: str
    ) -> None:
        world, ref = self.world, self.ref
        assert world is not None and ref is not None
        c = self._conn(conn)
        v = world.vend_container(vend)
        p = world.route(c.provider, via)
        pause = p.pause = Pause(point)

        def start(record: StepRecord) -> list[Response]:
            thread, outcome = threads_call(lambda: self._call(v, method, c, caller))
            deadline = time.monotonic() + 30
            while not pause.reached.wait(0.005):
                if not thread.is_alive() or time.monotonic() > deadline:
                    break
            if pause.reached.is_set():
                v.busy = p.busy = True
                self.holder = Holder(thread, outcome, pause, v, p, c.name, caller, record.number)
                if pause.attempt is not None and pause.attempt.rotated:
                    ref.paused_rotation.add(c.name)
                return []
            thread.join(30)
            p.pause = None
            return [outcome["result"]] if "result" in outcome else []

        self._step(Step("slow_holder_starts", v, p, CALLERS[caller], c.name), None, start)

    def _takeover(self, vend: int, via: int, fails: bool) -> None:
        """The clock passes the paused holder's lease (and any clock offset); the allowed
        caller then forces a refresh through other containers, which succeeds or fails."""
        world, holder = self.world, self.holder
        assert world is not None and holder is not None
        world.clock.advance(SETTINGS.lease_seconds + 2 * self.MAX_OFFSET + 1)
        c = next(x for x in self.conns if x.name == holder.connection)
        v = world.vend_container(vend)
        p = world.route(c.provider, via)
        step = Step("refresh", v, p, CALLERS["worker"], c.name)
        if fails:
            step.extra_faults[c.provider] = [SandboxFault.plain(503)] * 6
        self._step(step, None, lambda _: [self._call(v, "POST", c, "worker")])

    def _holder_finishes(self, next_caller: str | None, next_min_ttl: int | None) -> None:
        """The paused holder goes on; then, optionally, its vend container serves another
        caller (what it keeps in memory is what that caller may get)."""
        holder, ref = self.holder, self.ref
        assert holder is not None and ref is not None
        c = next(x for x in self.conns if x.name == holder.connection)

        def finish(record: StepRecord) -> list[Response]:
            holder.pause.release.set()
            holder.thread.join(60)
            holder.vend.busy = holder.provider.busy = False
            holder.provider.pause = None
            self.holder = None
            ref.paused_rotation.discard(holder.connection)
            if "error" in holder.outcome and not isinstance(holder.outcome["error"], Crash):
                raise holder.outcome["error"]
            answers = [holder.outcome["result"]] if "result" in holder.outcome else []
            return answers

        step = Step("holder_finishes", caller=CALLERS[holder.caller], connection=c.name)
        step.admitted_at = holder.step
        self._step(step, None, finish)
        if next_caller is not None:
            v = holder.vend
            p = self.world.route(c.provider, 0) if self.world else None
            step = Step("get", v, p, CALLERS[next_caller], c.name)
            self._step(
                step, None, lambda _: [self._call(v, "GET", c, next_caller, min_ttl=next_min_ttl)]
            )


# ------------------------------------------------------------------------ rule factories
# Each machine assembles its rules from these, with the strategies its promises need.


def setup_rule(
    *,
    extra: bool,
    offsets: Sequence[float],
    access: Sequence[str],
    authorized: st.SearchStrategy[bool],
) -> Any:
    @initialize(
        extra=st.lists(st.sampled_from(EXTRA_PROVIDERS), min_size=1, max_size=2, unique=True)
        if extra
        else st.just([]),
        vend_offsets=st.lists(st.sampled_from(tuple(offsets)), min_size=2, max_size=3),
        provider_offsets=st.lists(st.sampled_from(tuple(offsets)), min_size=2, max_size=2),
        lifetimes=st.lists(st.sampled_from(LIFETIMES), min_size=3, max_size=3),
        access=st.lists(st.sampled_from(tuple(access)), min_size=3, max_size=3),
        authorized=authorized,
    )
    def setup(
        self: ModelMachine,
        extra: list[str],
        vend_offsets: list[float],
        provider_offsets: list[float],
        lifetimes: list[int],
        access: list[str],
        authorized: bool,
    ) -> None:
        self._setup(
            ("wps365", *extra), vend_offsets, provider_offsets, lifetimes, access, authorized
        )

    return setup


def get_rule(callers: Sequence[str], fault_choices: Sequence[Fault]) -> Any:
    @rule(
        conn=INDEX,
        caller=kept(callers, "worker"),
        vend=INDEX,
        via=INDEX,
        min_ttl=st.sampled_from(MIN_TTLS),
        fault=faults(fault_choices),
    )
    def get(
        self: ModelMachine,
        conn: int,
        caller: str,
        vend: int,
        via: int,
        min_ttl: int | None,
        fault: Fault | None,
    ) -> None:
        self._vend("GET", conn, caller, vend, via, fault, min_ttl=min_ttl)

    return get


def refresh_rule(callers: Sequence[str], fault_choices: Sequence[Fault]) -> Any:
    @rule(
        conn=INDEX,
        caller=kept(callers, "worker"),
        vend=INDEX,
        via=INDEX,
        body=st.sampled_from(("none", "current", "other")),
        wait=st.sampled_from((True, False)),
        fault=faults(fault_choices),
    )
    def refresh(
        self: ModelMachine,
        conn: int,
        caller: str,
        vend: int,
        via: int,
        body: str,
        wait: bool,
        fault: Fault | None,
    ) -> None:
        self._vend("POST", conn, caller, vend, via, fault, body=body, wait=wait)

    return refresh


def schedule_rule(fault_choices: Sequence[Fault]) -> Any:
    @rule(conn=INDEX, via=INDEX, fault=faults(fault_choices))
    def scheduled_run(self: ModelMachine, conn: int, via: int, fault: Fault | None) -> None:
        """The provider's next scheduled run: a schedule interval later."""
        if self.world is not None:
            self.world.clock.advance(SETTINGS.schedule_interval)
            c = self._conn(conn)
            payload = event("provider-schedule.json")
            self._provider_event("schedule", c.provider, via, payload, fault)

    return scheduled_run


def batch_rule(fault_choices: Sequence[Fault]) -> Any:
    @rule(
        conn=INDEX,
        via=INDEX,
        min_ttl=st.sampled_from((1200, 0, 3600)),
        newer=st.booleans(),
        twice=st.booleans(),
        fault=faults(fault_choices),
    )
    def fanout_batch(
        self: ModelMachine,
        conn: int,
        via: int,
        min_ttl: int,
        newer: bool,
        twice: bool,
        fault: Fault | None,
    ) -> None:
        assert self.world is not None
        c = self._conn(conn)
        item = self.world.read_item(c.name) or {}
        entry: dict[str, Any] = {"connection": c.name, "min_ttl": min_ttl}
        if newer and item.get("version"):
            entry["newer_than"] = int(item["version"])
        body = json.dumps({"action": "refresh_batch", "connections": [entry]})
        records = [{"messageId": f"m{i}", "body": body} for i in range(2 if twice else 1)]
        self._provider_event("batch", c.provider, via, {"Records": records}, fault)

    return fanout_batch


def no_stale_holder(self: ModelMachine) -> bool:
    """False while a paused holder holds a rotated grant and that case is to be left out."""
    return "stale-holder-write" not in AVOID or self.ref is None or not self.ref.paused_rotation


def authorize_rule(codes: Sequence[str], fault_choices: Sequence[Fault]) -> Any:
    @precondition(no_stale_holder)
    @rule(code=st.sampled_from(tuple(codes)), via=INDEX, fault=faults(fault_choices))
    def authorize(self: ModelMachine, code: str, via: int, fault: Fault | None) -> None:
        self._authorize(code, via, fault)

    return authorize


def behaves_rule(behaviours: Sequence[str]) -> Any:
    @rule(conn=INDEX, behaviour=kept(behaviours, "normal"))
    def provider_behaves(self: ModelMachine, conn: int, behaviour: str) -> None:
        self._behave(conn, behaviour)

    return provider_behaves


def operator_rule(changes: Sequence[str]) -> Any:
    @precondition(no_stale_holder)
    @rule(conn=INDEX, change=st.sampled_from(tuple(changes)))
    def operator_puts(self: ModelMachine, conn: int, change: str) -> None:
        self._operator_puts(conn, change)

    return operator_puts


def holder_rules(callers: Sequence[str], points: Sequence[str]) -> tuple[Any, Any, Any]:
    @precondition(lambda self: self.holder is None)
    @rule(
        conn=INDEX,
        caller=kept(callers, "worker"),
        vend=INDEX,
        via=INDEX,
        method=st.sampled_from(("GET", "POST")),
        point=st.sampled_from(tuple(points)),
    )
    def slow_holder_starts(
        self: ModelMachine, conn: int, caller: str, vend: int, via: int, method: str, point: str
    ) -> None:
        self._holder_starts(conn, caller, vend, via, method, point)

    @precondition(lambda self: self.holder is not None)
    @rule(vend=INDEX, via=INDEX, fails=st.sampled_from((True, False)))
    def lease_taken_over(self: ModelMachine, vend: int, via: int, fails: bool) -> None:
        self._takeover(vend, via, fails)

    @precondition(lambda self: self.holder is not None)
    @rule(
        next_caller=kept(callers, "worker"),
        next_min_ttl=st.sampled_from((None, 0)),
        taken_over=st.sampled_from(("no", "and-failing", "and-refreshed")),
    )
    def slow_holder_finishes(
        self: ModelMachine,
        next_caller: str | None,
        next_min_ttl: int | None,
        taken_over: str = "no",
    ) -> None:
        """The paused holder goes on (its lease taken over first, or not); then its vend
        container serves `next_caller`."""
        if taken_over != "no":
            self._takeover(0, 0, fails=taken_over == "and-failing")
        self._holder_finishes(next_caller, next_min_ttl)

    return slow_holder_starts, lease_taken_over, slow_holder_finishes


class TimeRules(ModelMachine):
    """The rule every machine has: the clock moves."""

    @rule(seconds=st.sampled_from(ADVANCES))
    def advance_clock(self, seconds: int) -> None:
        if self.world is not None:
            self.world.clock.advance(seconds)


class ContainerRules(ModelMachine):
    """Containers come and go: a cold start has an empty memory."""

    @rule(kind=st.sampled_from(("vend", "provider")), index=INDEX)
    def cold_start(self, kind: str, index: int) -> None:
        if self.world is not None:
            self.world.cold_start(kind, index)


class OperatorLifecycle(ModelMachine):
    """An operator deletes a secret (scheduled deletion) and restores it."""

    @precondition(lambda self: "delete" not in AVOID)
    @rule(conn=INDEX)
    def operator_deletes(self, conn: int) -> None:
        c = self._conn(conn)
        if self.world is not None and not c.deleted:
            self.world.sm.delete_secret(
                SecretId=self.world.secret_name(c.name), RecoveryWindowInDays=7
            )
            c.deleted = True
            if self.ref is not None:
                self.ref.last = None

    @rule(conn=INDEX)
    def operator_restores(self, conn: int) -> None:
        c = self._conn(conn)
        if self.world is not None and c.deleted:
            self.world.sm.restore_secret(SecretId=self.world.secret_name(c.name))
            c.deleted = False
            if self.ref is not None:
                self.ref.last = None


class OutageRules(ModelMachine):
    """AWS operations fail for every provider function for as long as an outage lasts."""

    @rule(operation=st.sampled_from((None, "PutSecretValue", "UpdateItem", "GetSecretValue")))
    def aws_outage(self, operation: str | None) -> None:
        """Until the next outage rule: every call of `operation` from a provider function
        fails (None: AWS is back)."""
        if self.world is not None:
            self.world.outages = {operation} if operation else set()


# ---------------------------------------------------------------------------- the machines

LIST_CHANGES = tuple(f"list:{key}" for key in sorted(LISTS))


class ClockMachine(TimeRules, ContainerRules):
    """Containers whose clocks are up to MAX_OFFSET off the providers': no expired token,
    min_ttl, one attempt per cool-down by the reference clock, never two at once."""

    setup = setup_rule(extra=True, offsets=OFFSETS, access=("none",), authorized=st.just(True))
    get = get_rule(("worker",), CRASHES)
    refresh = refresh_rule(("worker",), CRASHES)
    scheduled_run = schedule_rule(())
    fanout_batch = batch_rule(())
    provider_behaves = behaves_rule(("normal", *FAILING, *LIFETIME_ODDITIES))
    slow_holder_starts, lease_taken_over, slow_holder_finishes = holder_rules(
        ("worker",), ("after_answer", "before_fetch")
    )


class AccessMachine(TimeRules, ContainerRules, OperatorLifecycle):
    """Callers allowed, outside the list, and with no identity; access lists that change;
    holders whose lease is taken over; providers that fail or echo the request."""

    MAX_OFFSET = 0
    setup = setup_rule(
        extra=True,
        offsets=(0,),
        access=("role", "none", "session", "two"),
        authorized=st.booleans(),
    )
    get = get_rule(CALLER_KEYS, VEND_FAULTS)
    refresh = refresh_rule(CALLER_KEYS, VEND_FAULTS)
    scheduled_run = schedule_rule(())
    provider_behaves = behaves_rule(("normal", "5xx", "refuse", *ECHOES))
    operator_puts = operator_rule((*LIST_CHANGES, "rotate-secret"))
    slow_holder_starts, lease_taken_over, slow_holder_finishes = holder_rules(
        CALLER_KEYS, ("after_answer", "before_fetch")
    )


class GrantMachine(TimeRules, OperatorLifecycle):
    """One wps365 connection: rotation with the old grant revoked, the fallback place,
    authorization with good, bad and reused codes, AWS failures and crashes at every step of
    an attempt, operators seeding grants, deleting and restoring."""

    MAX_OFFSET = 0
    setup = setup_rule(extra=False, offsets=(0,), access=("none", "role"), authorized=st.just(True))
    get = get_rule(("worker",), GRANT_FAULTS)
    refresh = refresh_rule(("worker",), GRANT_FAULTS)
    scheduled_run = schedule_rule(GRANT_FAULTS)
    fanout_batch = batch_rule(GRANT_FAULTS)
    authorize = authorize_rule(("good", "bad", "good", "reused"), GRANT_FAULTS)
    provider_behaves = behaves_rule(
        ("normal", "5xx", "normal", "refuse", "echo:all", "echo:body", "revoke")
    )

    @rule(operation=st.sampled_from((None, "PutSecretValue")))
    def secrets_manager_outage(self, operation: str | None) -> None:
        """Until the next such rule: Secrets Manager refuses every new secret version."""
        if self.world is not None:
            self.world.outages = {operation} if operation else set()

    operator_puts = operator_rule(("new-grant", "list:role", "list:none", "rotate-secret"))
    slow_holder_starts, lease_taken_over, slow_holder_finishes = holder_rules(
        ("worker",), ("after_answer", "before_fetch")
    )


class FullMachine(TimeRules, ContainerRules, OperatorLifecycle, OutageRules):
    """Every rule at once, with the clock offsets of ClockMachine."""

    setup = setup_rule(
        extra=True,
        offsets=OFFSETS,
        access=("none", "role", "session", "two"),
        authorized=st.booleans(),
    )
    get = get_rule(CALLER_KEYS, STEP_FAULTS)
    refresh = refresh_rule(CALLER_KEYS, STEP_FAULTS)
    scheduled_run = schedule_rule(STEP_FAULTS)
    fanout_batch = batch_rule(STEP_FAULTS)
    authorize = authorize_rule(("good", "bad", "reused"), STEP_FAULTS)
    provider_behaves = behaves_rule(ALL_BEHAVIOURS)
    operator_puts = operator_rule((*LIST_CHANGES, "rotate-secret", "new-grant"))
    slow_holder_starts, lease_taken_over, slow_holder_finishes = holder_rules(
        CALLER_KEYS, ("after_answer", "before_fetch")
    )


SOAKED = (ClockMachine, AccessMachine, GrantMachine, FullMachine)

# ---------------------------------------------------------------------------------- profiles


def profile(examples: int, steps: int) -> settings:
    """`make test`: a fixed, reproducible sample that fits the test budget, reporting the
    first failing sequence as found (TOKENVEND_MODEL_SHRINK=1 shrinks it). `make soak`
    (TOKENVEND_SOAK=1): random seeds, longer sequences, shrunk on failure (no target phase:
    below 1000 examples hypothesis' optimiser runs unbounded)."""
    common: dict[str, Any] = {
        "deadline": None,
        "suppress_health_check": list(HealthCheck),
        "database": None,
    }
    if os.environ.get("TOKENVEND_SOAK"):
        return settings(
            max_examples=int(os.environ.get("TOKENVEND_SOAK_EXAMPLES", "20")),
            stateful_step_count=int(os.environ.get("TOKENVEND_SOAK_STEPS", "80")),
            derandomize=False,
            print_blob=True,
            phases=(Phase.explicit, Phase.generate, Phase.shrink),
            **common,
        )
    # No target phase here: below 1000 examples hypothesis' optimiser runs unbounded.
    shrink = (Phase.shrink,) if os.environ.get("TOKENVEND_MODEL_SHRINK") else ()
    return settings(
        max_examples=int(os.environ.get("TOKENVEND_MODEL_EXAMPLES", str(examples))),
        stateful_step_count=int(os.environ.get("TOKENVEND_MODEL_STEPS", str(steps))),
        derandomize=True,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, *shrink),
        **common,
    )


def run(machine: type[ModelMachine], *, examples: int, steps: int) -> None:
    """`make test`: one fixed sample. `make soak`: random samples of `machine`, one after the
    other, until its share of TOKENVEND_SOAK_SECONDS is spent (each sample a separate
    hypothesis run, so that the time limit never changes what an example does)."""
    if "skewed-cool-down" in AVOID:  # each container counts the cool-down on its clock
        machine.COOL_DOWN_SLACK = 2 * machine.MAX_OFFSET
    try:
        _run(machine, examples=examples, steps=steps)
    finally:
        machine.COOL_DOWN_SLACK = 0.0


def _run(machine: type[ModelMachine], *, examples: int, steps: int) -> None:
    if not os.environ.get("TOKENVEND_SOAK"):
        run_state_machine_as_test(machine, settings=profile(examples, steps))
        return
    from hypothesis.internal.conjecture import engine

    # Shrinking a failure is bounded by hypothesis at 5 minutes; a soak bounds it further.
    if hasattr(engine, "MAX_SHRINKING_SECONDS"):
        engine.MAX_SHRINKING_SECONDS = int(os.environ.get("TOKENVEND_SOAK_SHRINK_SECONDS", "120"))
    share = float(os.environ.get("TOKENVEND_SOAK_SECONDS", "600")) / len(SOAKED)
    until = time.monotonic() + share
    took = 0.0
    while (started := time.monotonic()) + took <= until or not took:
        run_state_machine_as_test(machine, settings=profile(examples, steps))
        took = time.monotonic() - started
