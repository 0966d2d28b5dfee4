"""Whether API Gateway would let a signed caller invoke a route: `AWS_IAM` authorization with
the API's resource policy, as deployed.

The request is `execute-api:Invoke` on the method's ARN,
`arn:aws:execute-api:{region}:{account}:{api-id}/{stage}/{METHOD}/{path}`. Two sets of
policies speak to it:
- the caller's identity policies, as the local IAM holds them at the moment of the request:
  a user's inline and attached policies and those of its groups; an assumed role's inline
  and attached policies, narrowed by the session policy of its AssumeRole call and by the
  role's permissions boundary (a session gets what all of them allow);
- the API's resource policy: the template's `Auth.ResourcePolicy.CustomStatements`, as
  `Stack` resolves them for the local stack's parameters, with `execute-api:/...` read
  relative to the API's ARN as API Gateway stores it.

Each statement is judged by moto's IAM policy engine, through `moto_iam` (which adds what
the engine lacks). The Principal of a resource-policy statement is judged here, since the
engine has no notion of it: `*` and the caller's own ARN (or its role's) match the caller
itself; an account (`123456789012`, `arn:aws:iam::123456789012:root`) matches every caller
of that account but only hands the decision to that account's identity policies.

Then API Gateway's authorization flow for an IAM-authorized API with a resource policy:
- an explicit Deny, in either, refuses;
- a caller of the API's own account gets in when its identity policies allow, or when the
  resource policy allows the caller itself;
- a caller of another account needs both: its identity policies and the resource policy
  (an account principal naming its account is enough there).

A method without authorization (`Auth: Authorizer: NONE`, the link flow's callback) has no
caller to speak of: API Gateway's "resource policy only" flow admits such a request when a
statement that names anyone (`"*"`) allows it and none denies it (`authorize_anonymous`).
An account principal never names an anonymous caller, and a condition on a key it lacks
(aws:PrincipalAccount, ...) is judged as for any absent key: StringNotEquals holds.

The request context holds aws:PrincipalAccount, aws:PrincipalArn (a session's role),
aws:PrincipalType, aws:userid, aws:username (IAM users only), aws:SourceIp (the client's
address), aws:SecureTransport (false: the local API is plain HTTP), aws:CurrentTime and
aws:EpochTime. A local caller belongs to no AWS Organization and comes through no VPC
endpoint, so aws:PrincipalOrgID, aws:PrincipalOrgPaths, aws:SourceVpce, aws:SourceVpc and
aws:VpcSourceIp are known to be absent, as they would be for a caller from outside AWS.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from ..awslocal import Principal
from .log import log
from .moto_iam import (
    Effect,
    evaluate,
    identity_policies,
    permissions_boundary,
    session_policy,
    statements,
)

ACTION = "execute-api:Invoke"
#: Keys a local request never has (no organization, no VPC endpoint): judged as absent.
ABSENT = (
    "aws:PrincipalOrgID",
    "aws:PrincipalOrgPaths",
    "aws:SourceVpce",
    "aws:SourceVpc",
    "aws:VpcSourceIp",
)
_ACCOUNT = re.compile(r"(?:arn:aws[a-z-]*:iam::)?([0-9]{12})(?::root)?")


class Match(IntEnum):
    """How a resource-policy statement's Principal names the caller."""

    NONE = 0
    ACCOUNT = 1  # the caller's account: delegated to that account's identity policies
    DIRECT = 2  # "*", the caller's ARN, or its role's
    SESSION = 3  # the assumed-role session's own ARN: not narrowed by the session policy


@dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str = ""  # API Gateway's, when refused
    explicit_deny: bool = False


def api_arn(region: str, account_id: str, api_id: str) -> str:
    return f"arn:aws:execute-api:{region}:{account_id}:{api_id}"


class Authorizer:
    def __init__(
        self,
        resource_policy: Iterable[Mapping[str, Any]],
        *,
        region: str,
        account_id: str,
        api_id: str,
        stage: str,
        clock: Any = time.time,
    ) -> None:
        self.account_id = account_id
        self.stage = stage
        self.arn = api_arn(region, account_id, api_id)
        self.resource_policy = [self._absolute(dict(s)) for s in resource_policy]
        self._clock = clock

    def method_arn(self, method: str, path: str) -> str:
        return f"{self.arn}/{self.stage}/{method.upper()}/{path.lstrip('/')}"

    def authorize(
        self, principal: Principal, method: str, path: str, *, source_ip: str
    ) -> Decision:
        resource = self.method_arn(method, path)
        context = self.context(principal, source_ip)
        identity = _combine(
            evaluate(s, ACTION, resource, context, where="identity policy")
            for policy in identity_policies(principal)
            for s in statements(policy)
        )
        # What narrows a session: its session policy and its role's permissions boundary.
        limits = [
            _combine(evaluate(s, ACTION, resource, context, where=where) for s in statements(doc))
            for where, doc in (
                ("session policy", session_policy(principal)),
                ("permissions boundary", permissions_boundary(principal)),
            )
            if doc is not None
        ]
        granted, denied = self._resource_decision(principal, resource, context)
        if identity is Effect.DENY or Effect.DENY in limits:
            denied = True
        elif any(limit is not Effect.ALLOW for limit in limits):
            identity = Effect.NONE  # a session gets only what every one of them allows
            if granted is not Match.SESSION:
                granted = min(granted, Match.ACCOUNT)
        if denied:
            return self._refuse(principal, resource, explicit=True)
        if principal.account_id == self.account_id:
            allowed = identity is Effect.ALLOW or granted >= Match.DIRECT
        else:
            allowed = identity is Effect.ALLOW and granted >= Match.ACCOUNT
        return Decision(True) if allowed else self._refuse(principal, resource, explicit=False)

    def authorize_anonymous(self, method: str, path: str, *, source_ip: str) -> Decision:
        """An unsigned request on a method without authorization: the resource policy alone
        decides, and only its statements that name anyone apply."""
        resource = self.method_arn(method, path)
        context = self.anonymous_context(source_ip)
        allowed = False
        for statement in self.resource_policy:
            if not _names_anyone(statement):
                continue
            effect = evaluate(statement, ACTION, resource, context, where="resource policy")
            if effect is Effect.DENY:
                return self._refuse_anonymous(resource, explicit=True)
            allowed = allowed or effect is Effect.ALLOW
        return Decision(True) if allowed else self._refuse_anonymous(resource, explicit=False)

    def anonymous_context(self, source_ip: str) -> dict[str, str | None]:
        """An unsigned request's condition keys: where it came from and when, no principal."""
        now = self._clock()
        values: dict[str, str | None] = {
            "aws:SourceIp": source_ip,
            "aws:SecureTransport": "false",
            "aws:CurrentTime": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "aws:EpochTime": str(int(now)),
            **dict.fromkeys(
                ("aws:PrincipalAccount", "aws:PrincipalArn", "aws:PrincipalType", "aws:userid",
                 "aws:username", *ABSENT)
            ),
        }  # fmt: skip
        return {key.lower(): value for key, value in values.items()}

    def _refuse_anonymous(self, resource: str, *, explicit: bool) -> Decision:
        message = f"User: anonymous is not authorized to perform: {ACTION} on resource: {resource}"
        if explicit:
            message += " with an explicit deny"
        return Decision(False, message, explicit)

    def context(self, principal: Principal, source_ip: str) -> dict[str, str | None]:
        """The request's condition keys, in lower case (IAM compares them whatever the case);
        None for a key the request lacks."""
        now = self._clock()
        role = principal.session_token is not None
        values: dict[str, str | None] = {
            "aws:PrincipalAccount": principal.account_id,
            "aws:PrincipalArn": principal.role_arn
            if role and principal.role_arn
            else principal.arn,
            "aws:PrincipalType": "AssumedRole" if role else "User",
            "aws:userid": principal.user_id,
            "aws:username": None if role else principal.arn.rsplit("/", 1)[-1],
            "aws:SourceIp": source_ip,
            "aws:SecureTransport": "false",
            "aws:CurrentTime": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "aws:EpochTime": str(int(now)),
            **dict.fromkeys(ABSENT),
        }
        return {key.lower(): value for key, value in values.items()}

    def refusing_every_local_caller(self) -> list[str]:
        """The resource policy's Deny statements whose condition refuses every local call on
        the routes they name (a key no local request has, such as aws:PrincipalOrgID): their
        Sids. Each is tried on a method of its own Resource (its wildcards filled in), or on
        any method when it names them by NotResource."""
        probe = Principal(
            access_key_id="",
            secret_access_key="",  # nosec B106: a probe, no key
            arn=f"arn:aws:iam::{self.account_id}:user/probe",
            user_id="probe",
            account_id=self.account_id,
        )
        context = self.context(probe, "127.0.0.1")
        refusing = []
        for index, statement in enumerate(self.resource_policy):
            if (
                statement.get("Effect") != "Deny"
                or _principal_match(statement, probe) is Match.NONE
                or not statement.get("Condition")  # refuses whom it names, as deployed
            ):
                continue
            named = statement.get("Resource")
            patterns = [named] if isinstance(named, str) else list(named or [])
            tried = [
                p.replace("*", "probe").replace("?", "p") for p in patterns if isinstance(p, str)
            ] or [self.method_arn("GET", "")]
            if any(
                evaluate(statement, ACTION, resource, context, where="resource policy")
                is Effect.DENY
                for resource in tried
            ):
                refusing.append(str(statement.get("Sid") or index))
        return refusing

    def _resource_decision(
        self, principal: Principal, resource: str, context: Mapping[str, str | None]
    ) -> tuple[Match, bool]:
        """(how far the resource policy's Allows name the caller, whether a Deny applies)."""
        granted, denied = Match.NONE, False
        for statement in self.resource_policy:
            named = _principal_match(statement, principal)
            if named is Match.NONE:
                continue
            effect = evaluate(statement, ACTION, resource, context, where="resource policy")
            if effect is Effect.DENY:
                denied = True
            elif effect is Effect.ALLOW:
                granted = max(granted, named)
        return granted, denied

    def _absolute(self, statement: dict[str, Any]) -> dict[str, Any]:
        """`execute-api:/stage/METHOD/path` as API Gateway stores it: relative to the API."""
        for element in ("Resource", "NotResource"):
            value = statement.get(element)
            if isinstance(value, str):
                statement[element] = self._expand(value)
            elif isinstance(value, list):
                statement[element] = [self._expand(item) for item in value]
        return statement

    def _expand(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("execute-api:/"):
            return self.arn + value[len("execute-api:") :]
        return value

    def _refuse(self, principal: Principal, resource: str, *, explicit: bool) -> Decision:
        message = (
            f"User: {principal.arn} is not authorized to perform: {ACTION} on resource: {resource}"
        )
        if explicit:
            message += " with an explicit deny"
        return Decision(False, message, explicit)


def _combine(effects: Iterable[Effect]) -> Effect:
    """A set of policies: any Deny denies, else any Allow allows."""
    result = Effect.NONE
    for effect in effects:
        if effect is Effect.DENY:
            return Effect.DENY
        if effect is Effect.ALLOW:
            result = Effect.ALLOW
    return result


def _names_anyone(statement: Mapping[str, Any]) -> bool:
    """Whether a statement's principal takes in an anonymous caller: "*" (or {"AWS": "*"}).
    NotPrincipal fails closed: a Deny applies, an Allow does not."""
    if "NotPrincipal" in statement:
        return statement.get("Effect") == "Deny"
    element = statement.get("Principal")
    if element == "*":
        return True
    names = element.get("AWS") if isinstance(element, Mapping) else None
    return "*" in (names if isinstance(names, list) else [names])


def _principal_match(statement: Mapping[str, Any], principal: Principal) -> Match:
    if "NotPrincipal" in statement:
        # Rare in a resource policy, and not judged here: it fails closed, a Deny naming
        # every caller and an Allow naming none.
        deny = statement.get("Effect") == "Deny"
        log(
            "policy statement judged closed",
            level="WARNING",
            reason="resource policy: cannot judge NotPrincipal; the "
            + ("Deny denies" if deny else "Allow allows nothing"),
            sid=statement.get("Sid"),
        )
        return Match.DIRECT if deny else Match.NONE
    element = statement.get("Principal")
    if element == "*":
        return Match.DIRECT
    if not isinstance(element, Mapping):
        return Match.NONE
    names = element.get("AWS")
    best = Match.NONE
    for name in names if isinstance(names, list) else [names]:
        if not isinstance(name, str):
            continue
        account = _ACCOUNT.fullmatch(name)
        if name == principal.arn and principal.session_token is not None:
            best = max(best, Match.SESSION)
        elif name in ("*", principal.arn, principal.role_arn):
            best = max(best, Match.DIRECT)
        elif account and account.group(1) == principal.account_id:
            best = max(best, Match.ACCOUNT)
    return best


def warn_at_start(authorizer: Authorizer) -> None:
    refusing = authorizer.refusing_every_local_caller()
    if refusing:
        log(
            "every local call is refused by the API's resource policy",
            level="WARNING",
            statements=refusing,
            reason=(
                "a local caller belongs to no AWS Organization and comes through no VPC "
                "endpoint, as a caller from outside AWS would (AllowedOrganizationId, "
                "VpcEndpointIds)"
            ),
        )
