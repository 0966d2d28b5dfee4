"""The API's resource policy, for every combination of AllowedAccountIds,
AllowedOrganizationId and VpcEndpointIds, decided for many callers as API Gateway decides
for an IAM-authorized (AWS_IAM) API that has a resource policy.

The decision follows API Gateway's authorization-flow tables for IAM-authorized APIs:
- an explicit Deny in the resource policy refuses, whatever the caller's IAM policies say;
- a caller of the API's own account gets in when its identity policy allows the route, or
  when the resource policy allows the caller itself;
- a caller of another account gets in only when both its identity policy and the resource
  policy allow.
And IAM's rule for account principals: an Allow that names an account (its id or its root
ARN) delegates to that account's identity policies, so it does not admit a caller on its own.

The link flow's callback (GET /connect/callback) is the one method without authorization:
for it API Gateway follows its "resource policy only" flow, where a request needs an
explicit Allow that applies to it and no Deny. A user's browser is an anonymous caller: no
account, no organization, no identity policy, matched only by a "*" principal, and a
negated condition on a key it lacks (StringNotEquals aws:PrincipalAccount) applies to it.

The evaluator is written here, small, for the statements this template can produce. moto
ships an IAM policy evaluator (moto.iam.access_control), but it does not fit: it evaluates
StringEquals alone and ignores every other condition operator, so a Deny with
StringNotEquals would apply to everyone, and it has no notion of account principals. An
operator this evaluator does not know fails the test rather than being ignored."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import Any

import pytest
from template_iam import ACCOUNT, as_list, deployed, translate

LISTED = ("111122223333", "555566667777")
UNLISTED = "444455556666"
ORGANIZATION = "o-abcdefghij"
OTHER_ORGANIZATION = "o-zyxwvutsrq"
ENDPOINTS = ("vpce-0123456789abcdef0", "vpce-0fedcba9876543210")
OTHER_ENDPOINT = "vpce-0aaaaaaaaaaaaaaaa"
STAGE = "v1"
CALLBACK = ("GET", "connect/callback")

# Each of the three parameters empty or set: 8 combinations.
SETTINGS = {
    "AllowedAccountIds": ",".join(LISTED),
    "AllowedOrganizationId": ORGANIZATION,
    "VpcEndpointIds": ",".join(ENDPOINTS),
}
COMBINATIONS = [
    {name: value for name, value, on in zip(SETTINGS, SETTINGS.values(), flags, strict=True) if on}
    for flags in itertools.product((False, True), repeat=3)
]


def _name(parameters: dict[str, str]) -> str:
    return "+".join(sorted(parameters)) or "defaults"


combinations = pytest.mark.parametrize("parameters", COMBINATIONS, ids=_name)


# -- callers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    account: str | None  # None: anonymous (an unsigned request, a user's browser)
    identity_allows: bool  # its own IAM policies allow execute-api:Invoke on the route
    organization: str | None
    endpoint: str | None  # the VPC endpoint the request came through, if any

    @property
    def arn(self) -> str | None:
        return None if self.account is None else f"arn:aws:iam::{self.account}:role/workload"

    def context(self) -> dict[str, str | None]:
        """The request's global condition keys, as IAM sets them."""
        return {
            "aws:PrincipalAccount": self.account,
            "aws:PrincipalArn": self.arn,
            "aws:PrincipalOrgID": self.organization,
            "aws:SourceVpce": self.endpoint,
        }

    def __str__(self) -> str:
        if self.account is None:
            return f"an anonymous caller, endpoint {self.endpoint}"
        account = "the stack's account" if self.account == ACCOUNT else "account"
        grant = "with" if self.identity_allows else "without"
        return (
            f"{account} {self.account} {grant} an identity grant, "
            f"organization {self.organization}, endpoint {self.endpoint}"
        )


CALLERS = [
    Caller(account, identity, organization, endpoint)
    for account in (ACCOUNT, LISTED[0], LISTED[1], UNLISTED)
    for identity in (True, False)
    for organization in (ORGANIZATION, OTHER_ORGANIZATION, None)
    for endpoint in (*ENDPOINTS, OTHER_ENDPOINT, None)
]
ANONYMOUS = [Caller(None, False, None, endpoint) for endpoint in (*ENDPOINTS, OTHER_ENDPOINT, None)]


def listed_accounts(parameters: dict[str, str]) -> set[str]:
    """The stack's own account counts as listed, whatever the parameter says."""
    listed = parameters.get("AllowedAccountIds", "")
    return {ACCOUNT, *(listed.split(",") if listed else [])}


# -- the resource policy, as deployed -------------------------------------------------------


@cache
def _policy(key: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    parameters = dict(key)
    template = translate(**parameters)
    body = template["Resources"]["TokenApi"]["Properties"]["Body"]
    resolved = deployed(template, "tokenvend", **parameters).resolve(
        body["x-amazon-apigateway-policy"]
    )
    return list(resolved["Statement"])


def resource_policy(parameters: dict[str, str]) -> list[dict[str, Any]]:
    return _policy(tuple(sorted(parameters.items())))


@cache
def _routes() -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """(the IAM-signed routes, the unauthenticated ones) of the API as deployed, each as a
    (METHOD, path) a request would name."""
    body = translate()["Resources"]["TokenApi"]["Properties"]["Body"]
    signed, open_ = [], []
    for path, methods in body["paths"].items():
        concrete = path.strip("/").replace("{provider}", "wps365").replace("{connection}", "demo")
        for method, spec in methods.items():
            route = (method.upper(), concrete)
            (signed if spec.get("security") == [{"AWS_IAM": []}] else open_).append(route)
    return tuple(signed), tuple(open_)


ROUTES, OPEN_ROUTES = _routes()


# -- the evaluator --------------------------------------------------------------------------


class Match(IntEnum):
    NONE = 0
    ACCOUNT = 1  # through an account principal: delegated to the account's identity policies
    DIRECT = 2  # "*", or the caller's own ARN


ACCOUNT_PRINCIPAL = re.compile(r"(?:arn:aws[a-z-]*:iam::)?([0-9]{12})(?::root)?")


def _glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = ".*".join(".".join(map(re.escape, part.split("?"))) for part in pattern.split("*"))
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def principal_match(principal: Any, caller: Caller) -> Match:
    if principal == "*":
        return Match.DIRECT
    assert isinstance(principal, dict) and set(principal) <= {"AWS"}, principal
    best = Match.NONE
    for value in as_list(principal["AWS"]):
        account = ACCOUNT_PRINCIPAL.fullmatch(value)
        if value == "*" or (caller.arn is not None and value == caller.arn):
            best = max(best, Match.DIRECT)
        elif account and account.group(1) == caller.account:
            best = max(best, Match.ACCOUNT)
        else:
            assert account or value.startswith("arn:"), f"not a principal: {value}"
    return best


def condition_holds(condition: dict[str, Any], context: dict[str, str | None]) -> bool:
    """Every operator and every key must hold. A negated operator holds when the key is
    absent from the request; a positive one does not."""
    for operator, keys in condition.items():
        for key, expected in keys.items():
            values, actual = [str(v) for v in as_list(expected)], context.get(key)
            if operator == "StringEquals":
                holds = actual is not None and actual in values
            elif operator == "StringNotEquals":
                holds = actual is None or actual not in values
            elif operator == "StringLike":
                holds = actual is not None and any(_glob(v, actual) for v in values)
            elif operator == "StringNotLike":
                holds = actual is None or not any(_glob(v, actual) for v in values)
            else:
                raise AssertionError(f"condition operator {operator} unknown to this evaluator")
            if not holds:
                return False
    return True


def statement_applies(statement: dict[str, Any], caller: Caller, method: str, path: str) -> bool:
    assert "NotAction" not in statement and "NotResource" not in statement, statement
    assert "NotPrincipal" not in statement, statement
    resource = f"execute-api:/{STAGE}/{method}/{path}"
    return (
        any(_glob(a, "execute-api:Invoke", ignore_case=True) for a in as_list(statement["Action"]))
        and any(_glob(r, resource) for r in as_list(statement["Resource"]))
        and condition_holds(statement.get("Condition") or {}, caller.context())
    )


def resource_policy_decision(
    policy: list[dict[str, Any]], caller: Caller, method: str, path: str
) -> str:
    """ "deny", "allow" (the caller itself is allowed), "delegated" (its account is), or
    "neither"."""
    allowed = Match.NONE
    for statement in policy:
        match = principal_match(statement["Principal"], caller)
        if match is Match.NONE or not statement_applies(statement, caller, method, path):
            continue
        if statement["Effect"] == "Deny":
            return "deny"
        assert statement["Effect"] == "Allow", statement
        allowed = max(allowed, match)
    return {Match.DIRECT: "allow", Match.ACCOUNT: "delegated", Match.NONE: "neither"}[allowed]


def api_gateway_admits(
    policy: list[dict[str, Any]], caller: Caller, method: str, path: str
) -> bool:
    """API Gateway's decision for an IAM-authorized API with this resource policy."""
    decision = resource_policy_decision(policy, caller, method, path)
    if decision == "deny":
        return False
    if caller.account == ACCOUNT:  # same account: either policy's Allow is enough
        return caller.identity_allows or decision == "allow"
    # another account: both must allow (an account principal is the resource side's Allow)
    return caller.identity_allows and decision in ("allow", "delegated")


def api_gateway_admits_unauthenticated(
    policy: list[dict[str, Any]], caller: Caller, method: str, path: str
) -> bool:
    """API Gateway's decision for a method without authorization: the resource policy alone,
    which must allow the caller itself and deny nothing."""
    return resource_policy_decision(policy, caller, method, path) == "allow"


def admitted(parameters: dict[str, str]) -> dict[Caller, bool]:
    """Each caller, and whether it gets in on every route (it gets in on all or on none)."""
    policy = resource_policy(parameters)
    verdicts = {}
    for caller in CALLERS:
        answers = {api_gateway_admits(policy, caller, method, path) for method, path in ROUTES}
        assert len(answers) == 1, f"{caller}: admitted on some routes only"
        verdicts[caller] = answers.pop()
    return verdicts


def _wrongly_admitted(verdicts: dict[Caller, bool], callers: list[Caller]) -> list[str]:
    return [str(caller) for caller in callers if verdicts[caller]]


# -- the properties -------------------------------------------------------------------------


@combinations
def test_a_caller_whose_identity_policy_does_not_allow_the_route_is_refused(
    parameters: dict[str, str],
) -> None:
    verdicts = admitted(parameters)
    without = [c for c in CALLERS if not c.identity_allows]
    assert _wrongly_admitted(verdicts, without) == []


@combinations
def test_a_caller_from_an_account_that_is_not_listed_is_refused(
    parameters: dict[str, str],
) -> None:
    verdicts = admitted(parameters)
    unlisted = [c for c in CALLERS if c.account not in listed_accounts(parameters)]
    assert unlisted
    assert _wrongly_admitted(verdicts, unlisted) == []


@pytest.mark.parametrize(
    "parameters", [p for p in COMBINATIONS if "VpcEndpointIds" in p], ids=_name
)
def test_a_call_from_outside_the_listed_vpc_endpoints_is_refused(
    parameters: dict[str, str],
) -> None:
    verdicts = admitted(parameters)
    outside = [c for c in CALLERS if c.endpoint not in ENDPOINTS]
    assert _wrongly_admitted(verdicts, outside) == []


@pytest.mark.parametrize(
    "parameters", [p for p in COMBINATIONS if "AllowedOrganizationId" in p], ids=_name
)
def test_a_caller_outside_the_organization_is_refused(parameters: dict[str, str]) -> None:
    verdicts = admitted(parameters)
    outside = [c for c in CALLERS if c.organization != ORGANIZATION]
    assert _wrongly_admitted(verdicts, outside) == []


@combinations
def test_every_caller_the_parameters_allow_gets_in(parameters: dict[str, str]) -> None:
    # The stack's own account always, the listed ones too; in the organization and through
    # a listed endpoint when those are set; and always with its own identity grant.
    verdicts = admitted(parameters)
    intended = [
        caller
        for caller in CALLERS
        if caller.identity_allows
        and caller.account in listed_accounts(parameters)
        and ("AllowedOrganizationId" not in parameters or caller.organization == ORGANIZATION)
        and ("VpcEndpointIds" not in parameters or caller.endpoint in ENDPOINTS)
    ]
    refused = [str(caller) for caller in intended if not verdicts[caller]]
    assert intended and refused == []
    assert sum(verdicts.values()) == len(intended)


@combinations
def test_the_allows_name_accounts_and_anyone_only_on_the_link_callback(
    parameters: dict[str, str],
) -> None:
    allows = [s for s in resource_policy(parameters) if s["Effect"] == "Allow"]
    assert allows, "a private API needs a resource policy that allows something"
    anyone = [s for s in allows if s["Principal"] == "*" or "*" in str(s["Principal"])]
    (callback,) = anyone
    assert as_list(callback["Resource"]) == ["execute-api:/*/GET/connect/callback"]
    assert "Condition" not in callback
    for statement in allows:
        if statement is callback:
            continue
        principals = as_list(statement["Principal"]["AWS"])
        assert all(ACCOUNT_PRINCIPAL.fullmatch(p) for p in principals), principals
        accounts = {ACCOUNT_PRINCIPAL.fullmatch(p).group(1) for p in principals}  # type: ignore[union-attr]
        assert accounts == listed_accounts(parameters)


@combinations
def test_methods_other_than_get_and_post_are_refused(parameters: dict[str, str]) -> None:
    policy = resource_policy(parameters)
    caller = Caller(ACCOUNT, True, ORGANIZATION, ENDPOINTS[0])
    assert api_gateway_admits(policy, caller, "GET", "tokens/oauth2/demo")
    for method in ("PUT", "PATCH", "DELETE"):
        assert not api_gateway_admits(policy, caller, method, "tokens/oauth2/demo")


def test_the_endpoint_type_follows_vpc_endpoint_ids() -> None:
    private = translate(VpcEndpointIds=SETTINGS["VpcEndpointIds"])
    endpoint = private["Resources"]["TokenApi"]["Properties"]["EndpointConfiguration"]
    assert endpoint["Types"] == ["PRIVATE"]
    regional = translate()["Resources"]["TokenApi"]["Properties"]["EndpointConfiguration"]
    assert regional["Types"] == ["REGIONAL"]


def test_the_evaluator_admits_whom_the_tables_admit_for_an_allow_to_anyone() -> None:
    # An Allow for "*" from a listed endpoint, the shape the tables warn about: it lets a
    # caller of the API's account in without any identity grant, and a caller of any
    # account in with its own grant alone. The evaluator must see both.
    policy = [
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "execute-api:Invoke",
            "Resource": "execute-api:/*",
            "Condition": {"StringEquals": {"aws:SourceVpce": list(ENDPOINTS)}},
        }
    ]
    route = ROUTES[0]
    assert api_gateway_admits(policy, Caller(ACCOUNT, False, None, ENDPOINTS[0]), *route)
    assert api_gateway_admits(policy, Caller(UNLISTED, True, None, ENDPOINTS[1]), *route)
    assert not api_gateway_admits(policy, Caller(UNLISTED, False, None, ENDPOINTS[1]), *route)
    # An Allow keeps no one out: the API's own account gets in from any endpoint on its
    # identity grant, until a Deny refuses the other endpoints.
    assert api_gateway_admits(policy, Caller(ACCOUNT, True, None, OTHER_ENDPOINT), *route)
    policy.append(
        {
            **policy[0],
            "Effect": "Deny",
            "Condition": {"StringNotEquals": {"aws:SourceVpce": list(ENDPOINTS)}},
        }
    )
    assert not api_gateway_admits(policy, Caller(ACCOUNT, True, None, OTHER_ENDPOINT), *route)
    del policy[1]
    # The same Allow naming the account's root delegates: the identity grant decides.
    policy[0]["Principal"] = {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    assert not api_gateway_admits(policy, Caller(ACCOUNT, False, None, ENDPOINTS[0]), *route)
    assert api_gateway_admits(policy, Caller(ACCOUNT, True, None, ENDPOINTS[0]), *route)
    assert not api_gateway_admits(policy, Caller(UNLISTED, True, None, ENDPOINTS[0]), *route)


def test_the_routes_are_the_signed_three_and_the_callback() -> None:
    assert set(ROUTES) == {
        ("GET", "tokens/wps365/demo"),
        ("POST", "tokens/wps365/demo/refresh"),
        ("POST", "connections/wps365/demo/connect"),
    }
    assert OPEN_ROUTES == (CALLBACK,)


@combinations
def test_anyone_reaches_the_link_callback_without_a_signature(parameters: dict[str, str]) -> None:
    # A user's browser, from anywhere, whatever the accounts and the organization; for a
    # private API, only through its VPC endpoints (a browser outside cannot reach it at all).
    policy = resource_policy(parameters)
    for caller in ANONYMOUS + CALLERS:
        expected = "VpcEndpointIds" not in parameters or caller.endpoint in ENDPOINTS
        assert api_gateway_admits_unauthenticated(policy, caller, *CALLBACK) == expected, caller


@combinations
def test_the_allow_for_anyone_admits_no_one_to_a_signed_route(parameters: dict[str, str]) -> None:
    # Neither an anonymous caller nor anyone of any account is allowed by the resource
    # policy itself on a signed route: a caller of the stack's account still needs its own
    # identity grant there (which the properties above check), one of another account
    # both; and an unsigned request is refused there whatever the policy says.
    policy = resource_policy(parameters)
    for caller in ANONYMOUS + CALLERS:
        for method, path in ROUTES:
            assert resource_policy_decision(policy, caller, method, path) != "allow", (
                caller,
                method,
                path,
            )
            if caller.account is None:
                assert not api_gateway_admits(policy, caller, method, path)
    # Nor on any other method or path of the API.
    anonymous = ANONYMOUS[-1]
    for method, path in (("POST", "connect/callback"), ("GET", "connect/callback/x"),
                         ("GET", "connect"), ("DELETE", "connect/callback")):  # fmt: skip
        assert resource_policy_decision(policy, anonymous, method, path) != "allow", (method, path)


@combinations
def test_the_account_and_organization_denies_cover_every_signed_route(
    parameters: dict[str, str],
) -> None:
    # They name the signed routes rather than the whole API (so as to spare the callback):
    # a route added later that they miss would escape them, which this catches.
    policy = resource_policy(parameters)
    restricting = [
        s
        for s in policy
        if s["Effect"] == "Deny"
        and any(
            key in str(s.get("Condition")) for key in ("aws:PrincipalAccount", "PrincipalOrgID")
        )
    ]
    assert restricting
    for statement in restricting:
        for method, path in ROUTES:
            resource = f"execute-api:/{STAGE}/{method}/{path}"
            assert any(_glob(r, resource) for r in as_list(statement["Resource"])), (
                statement["Sid"],
                method,
                path,
            )
