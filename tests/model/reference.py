"""The reference model: what the promises allow, and the invariants checked after every step.

The model does not predict which answer a caller gets; it keeps what an answer may be:
- which access lists were in force for a connection, and since which step (the operator's
  intent, whatever the secret or the table hold meanwhile);
- which tokens each provider issued, when, and until when (the provider's clock);
- every refresh attempt, with the reference time of each request it sent;
- where the refresh token live at the provider must be (the secret or the fallback place);
- every secret and refresh token that ever existed, to be searched for in everything written.

Each invariant failure names the promise it breaks (contract.md, docs/reliability.md,
docs/security.md), so that a shrunk sequence reads as a defect report.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from model.world import (
    LISTS,
    SETTINGS,
    Attempt,
    Response,
    World,
    encodings,
)

DEFAULT_MIN_TTL = 300
STATUS_CODES = {
    403: "forbidden",
    404: "unknown_connection",
    409: "authorization_required",
    500: "internal",
    502: "provider_rejected",
    503: "provider_unavailable",
}


ASSUMED_ROLE = re.compile(r"arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/[^/]+")


def list_allows(caller: str | None, patterns: list[str] | None) -> bool:
    """The contract's matching, written again from contract.md: `*` is any run of characters
    (nothing else is special), an assumed-role session also matches its role's ARN, and no
    list admits anyone."""
    if patterns is None:
        return True
    if caller is None:
        return False
    identities = [caller]
    if match := ASSUMED_ROLE.fullmatch(caller):
        partition, account, role = match.groups()
        identities.append(f"arn:{partition}:iam::{account}:role/{role}")
    for identity in identities:
        for pattern in patterns:
            escaped = "".join("[" + ch + "]" if ch in "[]?" else ch for ch in pattern)
            if fnmatch.fnmatchcase(identity, escaped):
                return True
    return False


@dataclass
class Connection:
    name: str
    provider: str
    client_id: str
    client_secret: str
    lifetime: int
    extra: dict[str, Any]  # the provider-specific fields of the secret
    attrs: dict[str, Any] = field(default_factory=dict)  # the sandbox's registration
    lists: list[tuple[int, str]] = field(default_factory=list)  # (from step, LISTS key)
    deleted: bool = False
    behaviour: str = "normal"
    grant_lost: str | None = None  # why the live grant may be in neither place (documented)
    codes: list[str] = field(default_factory=list)  # codes redeemed or tried

    @property
    def access(self) -> str:
        return self.lists[-1][1]

    def lists_since(self, step: int) -> list[list[str] | None]:
        """Every access list in force at some step from `step` on."""
        found: list[list[str] | None] = []
        for i, (_, key) in enumerate(self.lists):
            end = self.lists[i + 1][0] if i + 1 < len(self.lists) else None
            if end is None or end > step:
                found.append(LISTS[key])
        return found


@dataclass
class StepRecord:
    number: int
    label: str
    started: float
    responses: list[Response] = field(default_factory=list)
    http_calls: int = 0
    fired: int = 0
    crashed: bool = False
    output: str = ""
    logs: str = ""
    caller: str | None = None
    connection: str | None = None
    vend_call: bool = False  # a caller's request: the no-call rules apply
    admitted_at: int | None = None  # the step the request began in (a paused holder's)
    authorize_failed: bool = False
    notes: list[str] = field(default_factory=list)  # what the step's functions answered
    vend_fault: bool = False  # the vend function's own AWS calls failed in this step
    before_item: dict[str, Any] | None = None
    before_secret_version: str | None = None
    blocked: dict[str, str] = field(default_factory=dict)  # connection -> secret version


@dataclass
class Snapshot:
    items: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    secrets: dict[str, tuple[dict[str, Any], str] | None] = field(default_factory=dict)


class InvariantBroken(AssertionError):
    pass


def broken(invariant: str, detail: str) -> InvariantBroken:
    return InvariantBroken(f"[{invariant}] {detail}")


# Item attributes that a failed code exchange may touch: the lease it took.
LEASE_FIELDS = {"provider", "connection", "lease_owner", "lease_expires_at", "last_attempt_at"}


class Reference:
    def __init__(self, world: World, max_offset: float) -> None:
        self.world = world
        self.max_offset = max_offset
        self.connections: dict[str, Connection] = {}
        self.client_secrets: set[tuple[str, str]] = set()
        self.refresh_tokens: set[str] = set()
        self.paused_rotation: set[str] = set()  # connections whose grant a paused holder holds
        self.cool_down_slack = 0.0  # seconds the cool-down may be undercut by (0: none)
        self.last: Snapshot | None = None  # after the last step; None once an operator acted

    # -- bookkeeping ---------------------------------------------------------------------------

    def add(self, connection: Connection) -> None:
        self.connections[connection.name] = connection
        self.client_secrets.add((connection.client_id, connection.client_secret))
        self.world.secret_owner[connection.client_secret] = connection.name
        self.world.providers[connection.name] = connection.provider

    def rotate_secret(self, connection: Connection, secret: str) -> None:
        connection.client_secret = secret
        self.client_secrets.add((connection.client_id, secret))
        self.world.secret_owner[secret] = connection.name

    def snapshot(self) -> Snapshot:
        """Every connection's item and secret, as AWS holds them now."""
        snap = Snapshot()
        for name in self.connections:
            snap.items[name] = self.world.read_item(name)
            snap.secrets[name] = self.world.read_secret(name)
        return snap

    def blocked(self, snap: Snapshot) -> dict[str, str]:
        """Connections whose permanent failure is remembered against the secret in force."""
        found = {}
        for name, connection in self.connections.items():
            item, secret = snap.items[name], snap.secrets[name]
            if connection.deleted or item is None or secret is None:
                continue
            if item.get("error_permanent") and item.get("error_secret_version") == secret[1]:
                found[name] = secret[1]
        return found

    def observe_refresh_tokens(self, snap: Snapshot | None = None) -> None:
        sandbox = self.world.sandbox
        for record in sandbox.requests("wps365"):
            token = record.form.get("refresh_token")
            if token:
                self.refresh_tokens.add(token)
        for attempt in self.world.attempts:
            self.refresh_tokens.update(attempt.rotated)
        for name, connection in self.connections.items():
            if connection.provider != "wps365":
                continue
            live = sandbox.refresh_token_of(connection.client_id)
            if live:
                self.refresh_tokens.add(live)
            if snap is None:
                continue
            secret, item = snap.secrets[name], snap.items[name] or {}
            if secret is not None and secret[0].get("refresh_token"):
                self.refresh_tokens.add(secret[0]["refresh_token"])
            if item.get("pending_refresh_token"):
                self.refresh_tokens.add(item["pending_refresh_token"])

    # -- the invariants ----------------------------------------------------------------------

    def check(self, step: StepRecord, snap: Snapshot) -> None:
        try:
            self._check(step, snap)
        except InvariantBroken as exc:
            if step.notes:
                exc.args = (f"{exc.args[0]} (the step: {'; '.join(step.notes)})",)
            raise

    def _check(self, step: StepRecord, snap: Snapshot) -> None:
        for response in step.responses:
            self.check_response(response, step)
        self.check_no_call_for_refused(step)
        self.check_one_attempt_per_cool_down()
        self.check_grants(step, snap)
        self.check_operator_edits_kept(step, snap)
        self.check_permanent_not_retried(step)
        self.check_failed_authorization_records_nothing(step)
        self.check_no_leaks(step)

    def check_response(self, r: Response, step: StepRecord) -> None:
        where = f"{r.method} {r.connection} by {r.caller or 'nobody'} at step {step.number}"
        self.check_shape(r, where)
        if r.status != 200:
            self.check_stale_if_error(r, step, where)
            return
        token = r.body["access_token"]
        issued = self.world.issued.get(token)
        expires = self.world.expiry(token)
        if issued is None:
            raise broken("served-unknown", f"{where}: served a token no attempt fetched")
        if expires is not None and expires <= r.at:
            raise broken(
                "never-expired",
                f"{where}: served a token expired {r.at - expires:.0f} s ago by the provider's "
                f"clock (answered {r.at - issued.at:.0f} s ago with expires_in="
                f"{issued.expires_in}, jwt exp {issued.jwt_exp and issued.jwt_exp - issued.at})",
            )
        connection = self.connections[r.connection]
        lists = connection.lists_since(issued.step)
        if not any(list_allows(r.caller, patterns) for patterns in lists):
            raise broken(
                "allowed-principals",
                f"{where}: the caller is in none of the access lists in force since the token "
                f"was fetched (step {issued.step}): {lists}",
            )
        stale = r.body.get("stale") is True
        if stale:
            error = r.body.get("refresh_error")
            if not (isinstance(error, dict) and error.get("code") and error.get("message")):
                raise broken("min-ttl", f"{where}: stale without refresh_error: {r.body}")
        if r.method == "GET" and not stale and expires is not None:
            min_ttl = DEFAULT_MIN_TTL if r.min_ttl is None else r.min_ttl
            left = expires - r.at
            lifetime = expires - issued.at
            # "Even a fresh token lives shorter than min_ttl": shorter once the clock skew
            # every container allows for, and the containers' clock offsets, are taken off.
            short = lifetime < min_ttl + SETTINGS.clock_skew + 2 * self.max_offset + 1
            if left < min_ttl - 1 and not short:
                raise broken(
                    "min-ttl",
                    f"{where}: min_ttl={min_ttl} but {left:.0f} s left, not stale, and a fresh "
                    f"token lives {lifetime:.0f} s",
                )
        if r.rejected is not None and token == r.rejected and issued.at < step.started:
            raise broken(
                "rejected-not-served-back",
                f"{where}: the caller reported this token as refused and got it back",
            )

    def check_stale_if_error(self, r: Response, step: StepRecord, where: str) -> None:
        """A refresh that fails while the cached token lives is answered with that token,
        marked stale: never an error (but for a token the caller reported as refused, and
        when the vend function cannot read the table)."""
        if r.status not in (409, 500, 502, 503) or r.rejected is not None or step.vend_fault:
            return
        if step.label not in ("get", "refresh") or step.connection != r.connection:
            return
        token = (step.before_item or {}).get("access_token")
        expires = self.world.expiry(token) if isinstance(token, str) else None
        # Alive by a margin every container agrees on, whatever its clock.
        margin = SETTINGS.clock_skew + 2 * self.max_offset + 1
        if expires is not None and expires - r.at > margin:
            raise broken(
                "stale-if-error",
                f"{where}: answered {r.status} {r.body.get('error')} while the cached token "
                f"lives {expires - r.at:.0f} s more",
            )

    def check_shape(self, r: Response, where: str) -> None:
        if r.status == 200:
            missing = {"provider", "connection", "access_token", "token_type", "expires_at"} - set(
                r.body
            )
            if missing or r.headers.get("Cache-Control") != "no-store":
                raise broken("contract-shape", f"{where}: 200 without {missing} or no-store")
            return
        expected = STATUS_CODES.get(r.status)
        error = r.body.get("error") if isinstance(r.body, dict) else None
        if expected is None or not isinstance(error, dict):
            raise broken("contract-shape", f"{where}: unexpected answer {r.status} {r.body}")
        if error.get("code") != expected or not isinstance(error.get("message"), str):
            raise broken("contract-shape", f"{where}: {r.status} with {error}")
        if r.status == 503 and not str(r.headers.get("Retry-After", "")).isdigit():
            raise broken("contract-shape", f"{where}: 503 without Retry-After")

    def check_no_call_for_refused(self, step: StepRecord) -> None:
        if step.connection is None or not step.vend_call:
            return
        if step.caller is None and step.http_calls:
            raise broken(
                "no-identity-no-call",
                f"step {step.number}: a caller with no identity made the provider be asked "
                f"({step.http_calls} token requests)",
            )
        connection = self.connections[step.connection]
        since = step.number if step.admitted_at is None else step.admitted_at
        lists = connection.lists_since(since)
        if step.http_calls and not any(list_allows(step.caller, p) for p in lists):
            raise broken(
                "refused-no-call",
                f"step {step.number}: a caller outside the access list made the provider be "
                f"asked ({step.http_calls} token requests)",
            )

    def check_one_attempt_per_cool_down(self) -> None:
        by_connection: dict[str, list[Attempt]] = {}
        for attempt in self.world.attempts:
            if attempt.kind == "refresh" and attempt.sends:
                by_connection.setdefault(attempt.connection, []).append(attempt)
        for name, attempts in by_connection.items():
            attempts.sort(key=lambda a: (a.sends[0], a.number))
            for before, after in itertools.pairwise(attempts):
                what = (
                    f"{name}: attempt {before.number} ({before.container}, clock "
                    f"{before.offset:+.0f} s, step {before.step}) and attempt {after.number} "
                    f"({after.container}, clock {after.offset:+.0f} s, step {after.step})"
                )
                if after.sends[0] < before.sends[-1]:
                    raise broken("one-at-a-time", f"{what} overlap at the token endpoint")
                gap = after.sends[0] - before.sends[0]
                if gap < SETTINGS.cool_down - self.cool_down_slack - 0.01:
                    raise broken(
                        "cool-down",
                        f"{what} reached the token endpoint {gap:.1f} s apart by the reference "
                        f"clock (cool-down {SETTINGS.cool_down} s)",
                    )

    def check_grants(self, step: StepRecord, snap: Snapshot) -> None:
        for name, connection in self.connections.items():
            if connection.provider != "wps365" or connection.deleted:
                continue
            live = self.world.sandbox.refresh_token_of(connection.client_id)
            if live is None:
                continue
            secret = snap.secrets[name]
            item = snap.items[name] or {}
            places = {
                secret[0].get("refresh_token") if secret else None,
                item.get("pending_refresh_token"),
            }
            if live in places:
                connection.grant_lost = None
                continue
            if connection.grant_lost or name in self.paused_rotation:
                continue
            rotated_here = any(
                a.step == step.number and a.connection == name and a.rotated
                for a in self.world.attempts
            )
            if step.crashed and rotated_here:
                connection.grant_lost = f"step {step.number}: crashed between answer and write"
                continue
            if "RefreshTokenLost" in step.output:
                connection.grant_lost = f"step {step.number}: both places failed (RefreshTokenLost)"
                continue
            where = [
                "secret" if secret else "secret (unreadable)",
                f"pending={'set' if item.get('pending_refresh_token') else 'none'}",
            ]
            raise broken(
                "grant-kept",
                f"step {step.number}: the refresh token live at the provider for {name} is "
                f"in neither the secret nor the fallback place ({', '.join(where)})",
            )

    def check_operator_edits_kept(self, step: StepRecord, snap: Snapshot) -> None:
        """What the operator put in a secret (the client secret, the access list) stays
        there: tokenvend writes a secret only to keep a rotated refresh token."""
        for name, c in self.connections.items():
            secret = snap.secrets[name]
            if c.deleted or secret is None:
                continue
            value = secret[0]
            wanted = LISTS[c.access]
            if value.get("allowed_principals") != wanted or value.get("client_secret") != (
                c.client_secret
            ):
                raise broken(
                    "operator-edits-kept",
                    f"step {step.number}: the secret of {name} no longer holds what the "
                    f"operator put: access list {value.get('allowed_principals')} instead of "
                    f"{wanted}, or another client secret",
                )

    def check_permanent_not_retried(self, step: StepRecord) -> None:
        for attempt in self.world.attempts:
            if attempt.step != step.number or attempt.kind != "refresh" or not attempt.sends:
                continue
            if attempt.connection in step.blocked:
                raise broken(
                    "permanent-remembered",
                    f"step {step.number}: {attempt.connection} was asked again although its "
                    f"permanent failure is remembered for the secret version in force",
                )

    def check_failed_authorization_records_nothing(self, step: StepRecord) -> None:
        if not step.authorize_failed or step.connection is None:
            return
        if any(a.step == step.number and a.rotated for a in self.world.attempts):
            return  # the provider issued a grant: keeping it is the point
        after = self.world.read_item(step.connection)
        secret = self.world.read_secret(step.connection)

        def plain(item: dict[str, Any] | None) -> dict[str, Any]:
            return {k: v for k, v in (item or {}).items() if k not in LEASE_FIELDS}

        if plain(after) != plain(step.before_item) or (
            secret is not None and secret[1] != step.before_secret_version
        ):
            changed = sorted(
                k
                for k in set(plain(after)) | set(plain(step.before_item))
                if plain(after).get(k) != plain(step.before_item).get(k)
            )
            raise broken(
                "failed-code-records-nothing",
                f"step {step.number}: a failed code exchange changed the connection: {changed}",
            )

    def check_no_leaks(self, step: StepRecord) -> None:
        answers = [text for r in step.responses for text in r.texts()]
        for r in step.responses:
            if r.status != 200:
                for token in self.world.issued:
                    if len(token) >= 8 and any(token in text for text in r.texts()):
                        raise broken(
                            "no-leaks", f"step {step.number}: an error answer holds a token"
                        )
        written = decoded_lines(step.logs + "\n" + step.output)
        secrets: dict[str, str] = {}
        for client_id, secret in self.client_secrets:
            for form in encodings(secret, client_id):
                secrets[form] = "a client secret"
        for token in self.refresh_tokens:
            for form in encodings(token):
                secrets[form] = "a refresh token"
        for where, texts in (("an API answer", answers), ("a log line or metric", written)):
            for text in texts:
                for value, what in secrets.items():
                    if value in text:
                        shown = text.replace(value, f"<{what}>")[:300]
                        raise broken(
                            "no-leaks", f"step {step.number}: {what} appears in {where}: {shown}"
                        )
        for token in self.world.issued:
            if len(token) >= 8 and any(token in text for text in written):
                raise broken("no-leaks", f"step {step.number}: an access token was logged")


def decoded_lines(text: str) -> list[str]:
    """Each line as written, and every string in it once a JSON line is decoded (a log line
    JSON-escapes what it holds once more)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                found.append(str(key))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for line in text.splitlines():
        if not line.strip():
            continue
        found.append(line)
        with contextlib.suppress(ValueError):
            walk(json.loads(line))
    return found
