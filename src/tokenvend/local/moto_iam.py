"""moto's IAM policy engine (`moto.iam.access_control`), as the local API's evaluator, with
what it lacks for IAM added here: the one module of the local stack that relies on the
engine's insides.

From moto, as it is:
- the caller's identity policies: `IAMUserAccessKey.collect_policies()` (the user's inline
  and attached policies and those of its groups) and `AssumedRoleAccessKey.collect_policies()`
  (the role's inline and attached policies); the session policy an AssumeRole call passed,
  which moto's STS keeps on the `AssumedRole` (`sts_backends[...].assumed_roles[i].policy`);
- a role's permissions boundary (`Role.permissions_boundary_arn`, a managed policy);
- reading a policy document, whatever form moto keeps it in (`IAMPolicy`: a managed policy's
  default version, an inline policy's text);
- deciding whether one statement's Action, NotAction and Resource match
  (`IAMPolicyStatement.is_action_permitted`), and the StringEquals comparison of its
  condition module (`policy_conditions.CONDITION_OPERATIONS`).

What moto 5.2 does unlike IAM, and what this module does instead:
- Wildcards: moto turns `*` into the regular expression `.*` and leaves every other
  character as regular-expression syntax, so `.` matches any character and `?` is a
  quantifier; IAM's `*` is any run of characters, `?` one character, everything else
  literal. Here `_match` is IAM's. Actions match whatever their case, as in IAM (the
  statement's actions and the action are compared in lower case); resources match exactly.
- Conditions: moto judges StringEquals only, ignores every other operator (the condition
  holds), treats a key missing from the request as matching, and answers DENIED for any
  statement whose condition fails, Allow or Deny. Here a condition is judged apart, after
  the statement matched: StringEquals with moto's comparison and StringNotEquals as its
  negation, with IAM's rule for a key the request lacks (StringEquals does not hold,
  StringNotEquals does), keys compared whatever their case. A statement whose condition
  fails does not apply, whatever its effect.
- What the engine cannot judge fails closed, with a WARNING line naming it: another
  condition operator (`IpAddress`, `Bool`, `...IfExists`, `ForAnyValue:...`), a condition
  key the local request context does not know (`context` says which keys it knows, and
  which of those a local request lacks), a policy variable (`${aws:username}`) in a
  resource. An Allow statement that holds one allows nothing; a Deny statement that holds
  one denies.
- NotResource: moto reads a statement without `Resource` as a trust policy's and answers
  PERMITTED, even for a Deny. Here NotResource is matched (with `_match`) and the
  statement applies to every other resource.
- Principal and NotPrincipal are left to the caller (`iam.py`), which knows API Gateway's
  rules for them; the statements are judged here without them.

`tests/unit/test_local_iam.py` pins the moto version this was read against (`CHECKED`) and
the shortfalls above, so that an upgrade that changes the engine fails there, loudly: then
read moto/iam/access_control.py and policy_conditions.py again and trim what moto now does.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from enum import Enum
from functools import lru_cache
from typing import Any

from moto.iam.access_control import (
    AssumedRoleAccessKey,
    CreateAccessKeyFailure,
    IAMPolicy,
    IAMPolicyStatement,
    IAMUserAccessKey,
    PermissionResult,
)
from moto.iam.exceptions import IAMException
from moto.iam.policy_conditions import CONDITION_OPERATIONS, TrustRelationShipConditions

from ..awslocal import Principal
from .log import log

#: The version of moto whose engine this module was read against.
CHECKED = {"moto": "5.2.5"}
#: The condition operators judged here; any other fails closed.
OPERATORS = ("StringEquals", "StringNotEquals")


class Effect(Enum):
    """What one statement, or a set of policies, says of a request."""

    NONE = "none"  # says nothing: an implicit deny unless something else allows
    ALLOW = "allow"
    DENY = "deny"  # an explicit deny


def identity_policies(principal: Principal) -> list[dict[str, Any]]:
    """The caller's identity policies as moto's IAM holds them now (a policy attached or
    detached a moment ago counts): a user's own and its groups', or an assumed role's."""
    partition = principal.arn.split(":")[1]
    for _ in range(3):  # the moto thread may change the dictionaries under us: retry
        try:
            key: IAMUserAccessKey | AssumedRoleAccessKey
            if principal.session_token is None:
                key = IAMUserAccessKey(principal.account_id, partition, principal.access_key_id, {})
            else:
                key = AssumedRoleAccessKey(
                    principal.account_id,
                    partition,
                    principal.access_key_id,
                    {"X-Amz-Security-Token": principal.session_token},
                )
            return [_document(policy) for policy in key.collect_policies()]
        except RuntimeError:
            continue
        except (CreateAccessKeyFailure, IAMException):
            return []  # the user or the role is gone: nothing allows
    return []


def session_policy(principal: Principal) -> dict[str, Any] | None:
    """The policy passed to the AssumeRole call that issued the caller's keys, if any."""
    if principal.session_token is None:
        return None
    from moto.sts.models import sts_backends

    partition = principal.arn.split(":")[1]
    for role in list(sts_backends[principal.account_id][partition].assumed_roles):
        if role.access_key_id == principal.access_key_id:
            return _document(role.policy) if role.policy else None
    return None


def permissions_boundary(principal: Principal) -> dict[str, Any] | None:
    """The managed policy set as the permissions boundary of the caller's role, if any
    (moto keeps boundaries for roles only)."""
    if principal.session_token is None or not principal.role_arn:
        return None
    from moto.iam.models import iam_backends

    partition = principal.arn.split(":")[1]
    backend = iam_backends[principal.role_arn.split(":")[4]][partition]
    try:
        boundary = backend.get_role_by_arn(principal.role_arn).permissions_boundary_arn
        return _document(backend.get_policy(boundary)) if boundary else None
    except IAMException:
        return {}  # a boundary that is gone allows nothing


def _document(policy: Any) -> dict[str, Any]:
    document = IAMPolicy(policy)._policy_json
    return dict(document) if isinstance(document, dict) else {}


def statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = document.get("Statement") or []
    return [found] if isinstance(found, dict) else [s for s in found if isinstance(s, dict)]


def evaluate(
    statement: Mapping[str, Any],
    action: str,
    resource: str,
    context: Mapping[str, str | None],
    *,
    where: str,
) -> Effect:
    """What one statement says of `action` on `resource`, its Principal aside. `context`:
    the request's condition keys, in lower case; None for a key the request lacks. `where`
    names the policy, for the warning of a statement that cannot be judged."""
    deny = statement.get("Effect") == "Deny"
    try:
        return _evaluate(statement, action, resource, context, where, deny)
    except (KeyError, TypeError, AttributeError, ValueError, re.error):
        return _cannot_judge(deny, where, statement, "a malformed statement")


def _evaluate(
    statement: Mapping[str, Any],
    action: str,
    resource: str,
    context: Mapping[str, str | None],
    where: str,
    deny: bool,
) -> Effect:
    if statement.get("Effect") not in ("Allow", "Deny") or not (
        "Action" in statement or "NotAction" in statement
    ):
        return _cannot_judge(deny, where, statement, "a statement without Effect or Action")
    judged = {
        key: value
        for key, value in statement.items()
        if key not in ("Principal", "NotPrincipal", "Condition", "Sid")
    }
    for element in ("Action", "NotAction"):
        if element in judged:
            judged[element] = _lower(judged[element])
    action = action.lower()
    any_resource = {key: value for key, value in judged.items() if key != "NotResource"}
    if _Statement({**any_resource, "Resource": "*"}).is_action_permitted(action) is (
        PermissionResult.NEUTRAL
    ):
        return Effect.NONE  # not about this action
    variable = _variable(statement)
    if variable:
        return _cannot_judge(deny, where, statement, variable)
    if "NotResource" in judged:
        if "Resource" in judged or _Statement(judged)._check_element_matches(
            "NotResource", resource
        ):
            return Effect.NONE
        judged = {**any_resource, "Resource": "*"}
    if not judged.get("Resource"):
        return _cannot_judge(deny, where, statement, "a statement with no Resource")
    if _Statement(judged).is_action_permitted(action, resource) is PermissionResult.NEUTRAL:
        return Effect.NONE
    reason = _unjudgeable(statement.get("Condition") or {}, context)
    if reason:
        return _cannot_judge(deny, where, statement, reason)
    if not _conditions_hold(statement.get("Condition") or {}, context):
        return Effect.NONE
    return Effect.DENY if deny else Effect.ALLOW


class _Statement(IAMPolicyStatement):
    """moto's statement, matching names as IAM does; conditions are judged in `evaluate`."""

    @staticmethod
    def _match(pattern: str, string: str) -> re.Match[str] | None:
        return _glob(pattern).fullmatch(string)

    def _check_conditions(self, incoming_condition_values: dict[str, str] | None) -> bool:
        return True


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters (`/` too), `?` one character."""
    return re.compile(
        ".*".join(
            ".".join(re.escape(part) for part in piece.split("?")) for piece in pattern.split("*")
        ),
        re.DOTALL,
    )


def _lower(value: Any) -> Any:
    return [str(item).lower() for item in value] if isinstance(value, list) else str(value).lower()


def _variable(statement: Mapping[str, Any]) -> str | None:
    for element in ("Resource", "NotResource"):
        values = statement.get(element)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and "${" in value:
                return f"the policy variable in {element} {value!r}"
    return None


def _unjudgeable(conditions: Any, context: Mapping[str, str | None]) -> str | None:
    if not isinstance(conditions, dict):
        return "a malformed Condition"
    for operator, pairs in conditions.items():
        if operator not in OPERATORS:
            return f"the condition operator {operator}"
        if not isinstance(pairs, dict):
            return f"a malformed {operator} condition"
        for key in pairs:
            if str(key).lower() not in context:
                return f"the condition key {key} ({operator}), unknown to the local request context"
    return None


def _cannot_judge(deny: bool, where: str, statement: Mapping[str, Any], reason: str) -> Effect:
    _warn(
        f"{where}: cannot judge {reason}; the {'Deny denies' if deny else 'Allow allows nothing'}",
        statement.get("Sid"),
    )
    return Effect.DENY if deny else Effect.NONE


_warned: set[tuple[str, Any]] = set()


def _warn(message: str, sid: Any) -> None:
    """Once per statement and reason: the same policy is judged on every request."""
    if (message, sid) in _warned:
        return
    _warned.add((message, sid))
    log("policy statement judged closed", level="WARNING", reason=message, sid=sid)


def _conditions_hold(conditions: Mapping[str, Any], context: Mapping[str, str | None]) -> bool:
    """Every operator's every key holds (IAM's AND), each key against its values (OR)."""
    string_equals = CONDITION_OPERATIONS["StringEquals"]
    for condition in TrustRelationShipConditions(copy.deepcopy(dict(conditions))):
        operator = condition._condition
        for key, expected in zip(condition.context_keys, condition._expected_value, strict=True):
            actual = context.get(str(key).lower())
            values = [str(v) for v in expected] if isinstance(expected, list) else str(expected)
            equal = actual is not None and string_equals(values, actual)
            holds = (not equal) if operator == "StringNotEquals" else equal
            if not holds:
                return False
    return True
