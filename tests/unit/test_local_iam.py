"""The local API's authorization decision (tokenvend.local.iam), and the compatibility module
that adapts moto's IAM policy engine to IAM (tokenvend.local.moto_iam).

The callers and their policies live in moto's IAM and STS (`mock_aws`, in this process, no
socket), created through boto3 as a user would; the resource policy is template.yaml's own,
as `Stack` resolves it for the parameters given."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tokenvend.awslocal import MotoKeys, Principal
from tokenvend.local import moto_iam
from tokenvend.local.http_api import rest_api
from tokenvend.local.iam import Authorizer, Decision, warn_at_start
from tokenvend.local.moto_iam import Effect, evaluate
from tokenvend.template import ACCOUNT_ID, Stack, load_template

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
API = f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:local"
OTHER_ACCOUNT = "444455556666"
CONNECTION = "/tokens/dingtalk/corp-a"
# docs/security.md, "Grant a workload exactly one connection", for the local API's ARNs.
ONE_CONNECTION = [
    f"{API}/v1/GET/tokens/dingtalk/corp-a",
    f"{API}/v1/POST/tokens/dingtalk/corp-a/refresh",
]


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(*resources: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": list(resources), **extra}


def deny(*resources: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": list(resources), **extra}


# -- the local IAM ----------------------------------------------------------------------------


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def iam() -> Any:
    return boto3.client("iam", region_name=REGION)


def user(*inline: dict[str, Any], name: str | None = None) -> tuple[str, Principal]:
    """A new IAM user with an access key (and an inline policy of these statements)."""
    name = name or f"workload-{uuid.uuid4().hex[:8]}"
    iam().create_user(UserName=name)
    if inline:
        iam().put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy(*inline))
    key = iam().create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    principal = MotoKeys().lookup(key)
    assert principal is not None
    return name, principal


def session(*role_statements: dict[str, Any], session_policy: str | None = None) -> Principal:
    """A session of a new role (with an inline policy of these statements) from moto's STS."""
    role = f"role-{uuid.uuid4().hex[:8]}"
    arn = iam().create_role(RoleName=role, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    if role_statements:
        iam().put_role_policy(
            RoleName=role, PolicyName="p", PolicyDocument=policy(*role_statements)
        )
    extra = {"Policy": session_policy} if session_policy else {}
    answer = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=arn, RoleSessionName="job-1", **extra
    )
    principal = MotoKeys().lookup(answer["Credentials"]["AccessKeyId"])
    assert principal is not None
    return principal


def authorizer(**parameters: str) -> Authorizer:
    stack = Stack(load_template(ROOT / "template.yaml"), name="tokenvend", region=REGION,
                  parameters=parameters)  # fmt: skip
    api = rest_api(stack, "TokenApi")
    return Authorizer(api.resource_policy, region=REGION, account_id=ACCOUNT_ID,
                      api_id="local", stage=api.stage)  # fmt: skip


def decide(
    principal: Principal, method: str = "GET", path: str = CONNECTION, **params: str
) -> Decision:
    return authorizer(**params).authorize(principal, method, path, source_ip="127.0.0.1")


def refused_message(principal: Principal, method: str, path: str, *, explicit: bool) -> str:
    message = (
        f"User: {principal.arn} is not authorized to perform: execute-api:Invoke on resource: "
        f"{API}/v1/{method}/{path.lstrip('/')}"
    )
    return message + " with an explicit deny" if explicit else message


# -- identity policies ------------------------------------------------------------------------


def test_a_caller_without_any_policy_is_refused_with_api_gateways_message(aws: None) -> None:
    # Given
    _, bare = user()

    # When
    decision = decide(bare)

    # Then
    assert not decision.allowed and not decision.explicit_deny
    assert decision.message == refused_message(bare, "GET", CONNECTION, explicit=False)


def test_the_one_connection_policy_grants_its_two_routes_and_nothing_else(aws: None) -> None:
    # Given docs/security.md's policy
    _, workload = user(allow(*ONE_CONNECTION))

    # Then
    assert decide(workload, "GET", CONNECTION).allowed
    assert decide(workload, "POST", f"{CONNECTION}/refresh").allowed
    for method, path in [
        ("GET", "/tokens/dingtalk/corp-b"),
        ("GET", "/tokens/dingtalk/corp-a2"),
        ("POST", CONNECTION),
        ("GET", f"{CONNECTION}/refresh"),
        ("POST", "/connections/dingtalk/corp-a/connect"),
    ]:
        decision = decide(workload, method, path)
        assert not decision.allowed, (method, path)
        assert decision.message == refused_message(workload, method, path, explicit=False)


def test_another_stage_is_another_resource(aws: None) -> None:
    _, workload = user(allow(*ONE_CONNECTION))
    assert decide(workload, StageName="v1").allowed
    assert not decide(workload, StageName="v2").allowed


def test_attached_and_group_policies_grant_too(aws: None) -> None:
    # Given a managed policy attached to one user, and a group's inline policy for another
    arn = iam().create_policy(PolicyName="one", PolicyDocument=policy(allow(*ONE_CONNECTION)))
    attached_name, attached = user()
    iam().attach_user_policy(UserName=attached_name, PolicyArn=arn["Policy"]["Arn"])
    iam().create_group(GroupName="workers")
    iam().put_group_policy(
        GroupName="workers", PolicyName="g", PolicyDocument=policy(allow(f"{API}/*"))
    )
    member_name, member = user()
    iam().add_user_to_group(GroupName="workers", UserName=member_name)

    # Then
    assert decide(attached).allowed
    assert decide(member, "POST", "/tokens/oauth2/demo/refresh").allowed


def test_an_explicit_deny_anywhere_beats_an_allow(aws: None) -> None:
    # Given a user allowed everything, denied one connection through its group
    name, principal = user(allow(f"{API}/*"))
    iam().create_group(GroupName="no-corp-a")
    iam().put_group_policy(
        GroupName="no-corp-a",
        PolicyName="d",
        PolicyDocument=policy(deny(f"{API}/*/*/tokens/dingtalk/corp-a*")),
    )
    iam().add_user_to_group(GroupName="no-corp-a", UserName=name)

    # Then
    decision = decide(principal, "POST", f"{CONNECTION}/refresh")
    assert not decision.allowed and decision.explicit_deny
    assert decision.message == refused_message(
        principal, "POST", f"{CONNECTION}/refresh", explicit=True
    )
    assert decide(principal, "GET", "/tokens/dingtalk/corp-b").allowed


def test_a_policy_change_counts_at_the_next_request(aws: None) -> None:
    name, principal = user(allow(f"{API}/*"))
    assert decide(principal).allowed
    iam().delete_user_policy(UserName=name, PolicyName="p")
    assert not decide(principal).allowed


# -- assumed roles and session policies ----------------------------------------------------------


def test_a_role_without_permissions_is_refused(aws: None) -> None:
    role = session()
    decision = decide(role)
    assert not decision.allowed
    assert decision.message.startswith(f"User: arn:aws:sts::{ACCOUNT_ID}:assumed-role/")


def test_a_session_policy_narrows_the_roles_permissions(aws: None) -> None:
    # Given a role allowed the whole API, assumed with a session policy of one connection
    narrowed = session(allow(f"{API}/*"), session_policy=policy(allow(*ONE_CONNECTION)))
    broad = session(allow(f"{API}/*"))

    # Then
    assert decide(narrowed).allowed
    assert not decide(narrowed, "GET", "/tokens/dingtalk/corp-b").allowed
    assert decide(broad, "GET", "/tokens/dingtalk/corp-b").allowed


def test_a_session_policy_grants_nothing_the_role_lacks(aws: None) -> None:
    role = session(allow(*ONE_CONNECTION), session_policy=policy(allow(f"{API}/*")))
    assert decide(role).allowed
    assert not decide(role, "GET", "/tokens/dingtalk/corp-b").allowed


def test_a_deny_in_a_session_policy_is_an_explicit_deny(aws: None) -> None:
    role = session(
        allow(f"{API}/*"), session_policy=policy(allow(f"{API}/*"), deny(ONE_CONNECTION[0]))
    )
    decision = decide(role)
    assert not decision.allowed and decision.explicit_deny


def test_a_roles_permissions_boundary_narrows_its_sessions(aws: None) -> None:
    # Given a role allowed the whole API, bounded by docs/security.md's policy
    boundary = iam().create_policy(PolicyName="one", PolicyDocument=policy(allow(*ONE_CONNECTION)))
    role = session(allow(f"{API}/*"))
    iam().put_role_permissions_boundary(
        RoleName=role.arn.split("/")[1], PermissionsBoundary=boundary["Policy"]["Arn"]
    )

    # Then
    assert decide(role).allowed
    assert not decide(role, "GET", "/tokens/dingtalk/corp-b").allowed


# -- wildcards and conditions, as IAM reads them ---------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "allowed"),
    [
        (f"{API}/*/GET/tokens/dingtalk/*", "/tokens/dingtalk/corp-a", True),
        (f"{API}/*/GET/tokens/dingtalk/*", "/tokens/dingtalk/corp-a/refresh", True),  # * spans /
        (f"{API}/v1/GET/tokens/dingtalk/corp-?", "/tokens/dingtalk/corp-a", True),
        (f"{API}/v1/GET/tokens/dingtalk/corp-?", "/tokens/dingtalk/corp-ab", False),
        (f"{API}/v1/GET/tokens/dingtalk/corp.a", "/tokens/dingtalk/corpxa", False),  # . is literal
        (f"{API}/v1/GET/tokens/dingtalk/corp.a", "/tokens/dingtalk/corp.a", True),
        (f"{API}/v1/GET/tokens/DingTalk/corp-a", "/tokens/dingtalk/corp-a", False),  # case counts
        (f"{API}/v1/*/tokens/oauth2/demo", "/tokens/oauth2/demo", True),
        ("arn:aws:execute-api:*:*:*/v1/GET/*", "/tokens/oauth2/demo", True),
        ("arn:aws:execute-api:eu-west-1:*:*/v1/GET/*", "/tokens/oauth2/demo", False),
    ],
)
def test_wildcards_in_the_resource_arn_behave_as_in_iam(
    aws: None, pattern: str, path: str, allowed: bool
) -> None:
    _, principal = user(allow(pattern))
    assert decide(principal, "GET", path).allowed is allowed


def test_action_names_match_whatever_their_case_and_by_wildcard(aws: None) -> None:
    _, lower = user({"Effect": "Allow", "Action": "execute-api:invoke", "Resource": "*"})
    _, star = user({"Effect": "Allow", "Action": "execute-api:*", "Resource": "*"})
    _, other = user({"Effect": "Allow", "Action": "execute-api:ManageConnections", "Resource": "*"})
    assert decide(lower).allowed and decide(star).allowed
    assert not decide(other).allowed


def test_not_resource_and_not_action(aws: None) -> None:
    _, principal = user(
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "NotAction": "s3:*", "NotResource": ONE_CONNECTION},
    )
    assert decide(principal).allowed
    decision = decide(principal, "GET", "/tokens/dingtalk/corp-b")
    assert not decision.allowed and decision.explicit_deny


def test_string_conditions_on_the_request_context(aws: None) -> None:
    # Given grants held to the client's address, the caller's own name, and a missing key
    name = f"named-{uuid.uuid4().hex[:6]}"
    _, by_ip = user(allow(f"{API}/*", Condition={"StringEquals": {"aws:SourceIp": "127.0.0.1"}}))
    _, by_other_ip = user(
        allow(f"{API}/*", Condition={"StringEquals": {"aws:SourceIp": "10.0.0.1"}})
    )
    _, by_name = user(
        allow(f"{API}/*", Condition={"StringEquals": {"AWS:UserName": name}}), name=name
    )
    _, by_org = user(allow(f"{API}/*", Condition={"StringEquals": {"aws:PrincipalOrgID": "o-1"}}))
    _, unless_org = user(
        allow(f"{API}/*"),
        deny(f"{API}/*", Condition={"StringNotEquals": {"aws:PrincipalOrgID": "o-1"}}),
    )
    _, unless_plain = user(
        allow(f"{API}/*"),
        deny(f"{API}/*", Condition={"StringEquals": {"aws:SecureTransport": "false"}}),
    )

    # Then
    assert decide(by_ip).allowed
    refused = decide(by_other_ip)
    assert not refused.allowed and not refused.explicit_deny  # an unmet condition says nothing
    assert decide(by_name).allowed
    assert not decide(by_org).allowed  # a key the request lacks: StringEquals does not hold
    assert decide(unless_org).explicit_deny  # ... and StringNotEquals does
    assert decide(unless_plain).explicit_deny


@pytest.mark.parametrize(
    "condition",
    [
        {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}},
        {"StringLike": {"aws:username": "*"}},
        {"StringEqualsIfExists": {"aws:SourceIp": "127.0.0.1"}},
        {"StringEquals": {"aws:RequestTag/team": "a"}},  # a key the local context does not know
    ],
    ids=["IpAddress", "StringLike", "IfExists", "unknown key"],
)
def test_what_the_engine_cannot_judge_fails_closed_with_a_warning(
    aws: None, condition: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an Allow with that condition, and a Deny with it beside an Allow of everything
    sid = f"s{uuid.uuid4().hex[:8]}"
    _, allowed_by_it = user(allow(f"{API}/*", Condition=condition, Sid=sid))
    _, denied_by_it = user(allow(f"{API}/*"), deny(f"{API}/*", Condition=condition, Sid=sid + "d"))

    # Then the Allow allows nothing, the Deny denies, and each says why
    assert not decide(allowed_by_it).allowed
    assert decide(denied_by_it).explicit_deny
    warnings = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    named = next(iter(condition)), next(iter(next(iter(condition.values()))))
    for expected_sid, verdict in (
        (sid, "the Allow allows nothing"),
        (sid + "d", "the Deny denies"),
    ):
        (line,) = [w for w in warnings if w.get("sid") == expected_sid]
        assert line["level"] == "WARNING"
        assert verdict in line["reason"]
        assert named[0] in line["reason"] or named[1] in line["reason"]


def test_a_policy_variable_in_a_resource_fails_closed(aws: None) -> None:
    _, principal = user(allow(f"{API}/*/GET/tokens/*/${{aws:username}}"))
    assert not decide(principal).allowed


# -- the resource policy of template.yaml ----------------------------------------------------


def test_put_patch_and_delete_are_refused_whatever_the_identity_policy_says(aws: None) -> None:
    _, admin = user({"Effect": "Allow", "Action": "*", "Resource": "*"})
    for method in ("PUT", "PATCH", "DELETE"):
        decision = decide(admin, method, CONNECTION)
        assert decision.explicit_deny, method
    assert decide(admin).allowed


def test_another_account_needs_to_be_listed_and_its_own_grant(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a user of another account allowed the whole API by its own policy, and one without
    monkeypatch.setenv("MOTO_ACCOUNT_ID", OTHER_ACCOUNT)
    _, granted = user(allow(f"{API}/*"))
    _, bare = user()
    monkeypatch.delenv("MOTO_ACCOUNT_ID")
    assert granted.account_id == OTHER_ACCOUNT

    # Then: unlisted, the resource policy's Deny refuses it
    refused = decide(granted)
    assert refused.explicit_deny
    assert refused.message == refused_message(granted, "GET", CONNECTION, explicit=True)
    # listed, the Allow of its account and its own policy let it in; nothing without the policy
    assert decide(granted, AllowedAccountIds=OTHER_ACCOUNT).allowed
    listed_bare = decide(bare, AllowedAccountIds=OTHER_ACCOUNT)
    assert not listed_bare.allowed and not listed_bare.explicit_deny


@pytest.mark.parametrize(
    ("parameters", "sid"),
    [
        ({"AllowedOrganizationId": "o-abcdefghij"}, "OnlyOrganization"),
        ({"VpcEndpointIds": "vpce-0123456789abcdef0"}, "OnlyListedVpcEndpoints"),
    ],
)
def test_an_organization_or_vpc_endpoints_refuse_every_local_caller(
    aws: None, parameters: dict[str, str], sid: str
) -> None:
    # Given the exported user's grant
    _, principal = user(allow(f"{API}/*"))

    # Then, as a caller from outside AWS (no organization, no endpoint) would be
    decision = decide(principal, **parameters)
    assert not decision.allowed and decision.explicit_deny
    assert authorizer(**parameters).refusing_every_local_caller() == [sid]
    assert authorizer().refusing_every_local_caller() == []


def test_an_account_principal_only_delegates_and_a_direct_allow_admits(aws: None) -> None:
    # Given a resource policy with an Allow for the account, and one with an Allow for "*"
    _, bare = user()
    account_only = [allow(f"{API}/*", Principal={"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"})]
    everyone = [allow(f"{API}/*", Principal="*")]
    by_arn = [allow(f"{API}/*", Principal={"AWS": bare.arn})]

    def with_policy(statements: list[dict[str, Any]], principal: Principal) -> Decision:
        return Authorizer(statements, region=REGION, account_id=ACCOUNT_ID, api_id="local",
                          stage="v1").authorize(principal, "GET", CONNECTION, source_ip="127.0.0.1")  # fmt: skip

    # Then a same-account caller without an identity grant gets in only when named itself
    assert not with_policy(account_only, bare).allowed
    assert with_policy(everyone, bare).allowed
    assert with_policy(by_arn, bare).allowed


def test_not_principal_in_a_resource_policy_fails_closed(aws: None) -> None:
    _, granted = user(allow(f"{API}/*"))
    everyone_but = {"NotPrincipal": {"AWS": "arn:aws:iam::111122223333:root"}}

    def with_policy(statement: dict[str, Any]) -> Decision:
        return Authorizer([statement], region=REGION, account_id=ACCOUNT_ID, api_id="local",
                          stage="v1").authorize(granted, "GET", CONNECTION, source_ip="127.0.0.1")  # fmt: skip

    assert with_policy(deny(f"{API}/*", **everyone_but)).explicit_deny
    _, bare = user()
    assert not Authorizer([allow(f"{API}/*", **everyone_but)], region=REGION, account_id=ACCOUNT_ID,
                          api_id="local", stage="v1").authorize(bare, "GET", CONNECTION,
                                                                source_ip="127.0.0.1").allowed  # fmt: skip


def test_the_start_warns_when_every_local_call_will_be_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    warn_at_start(authorizer())
    assert capsys.readouterr().err == ""
    warn_at_start(
        authorizer(AllowedOrganizationId="o-abcdefghij", VpcEndpointIds="vpce-0123456789abcdef0")
    )
    (line,) = [json.loads(text) for text in capsys.readouterr().err.splitlines()]
    assert line["level"] == "WARNING"
    assert line["message"] == "every local call is refused by the API's resource policy"
    assert line["statements"] == ["OnlyOrganization", "OnlyListedVpcEndpoints"]


def test_the_resource_policy_is_the_templates_own_with_relative_arns_made_absolute() -> None:
    resources = [s["Resource"] for s in authorizer().resource_policy]
    assert [f"{API}/*/PUT/*", f"{API}/*/PATCH/*", f"{API}/*/DELETE/*"] in resources
    assert f"{API}/*" in resources
    sids = [s["Sid"] for s in authorizer(AllowedOrganizationId="o-abcdefghij").resource_policy]
    assert sids == [
        "OnlyGetAndPost",
        "DelegateToListedAccounts",
        "AnyoneMayReachTheLinkCallback",
        "OnlyListedAccounts",
        "OnlyOrganization",
    ]


# -- a method without authorization: the link flow's callback -------------------------------

CALLBACK = "/connect/callback"


@pytest.mark.parametrize(
    "parameters",
    [{}, {"AllowedAccountIds": "111122223333"}, {"AllowedOrganizationId": "o-abcdefghij"}],
    ids=["defaults", "accounts", "organization"],
)
def test_anyone_may_reach_the_callback_and_nothing_else_unsigned(
    parameters: dict[str, str],
) -> None:
    # Given the template's resource policy, and an unsigned request (no caller at all)
    decide_anonymous = authorizer(**parameters).authorize_anonymous

    # Then the callback is open to it, whatever accounts or organization the stack lists
    assert decide_anonymous("GET", CALLBACK, source_ip="127.0.0.1").allowed
    # and no other method or path is: the Allow for anyone names that one method
    for method, path in (
        ("GET", CONNECTION),
        ("POST", f"{CONNECTION}/refresh"),
        ("POST", "/connections/wps365/demo/connect"),
        ("POST", CALLBACK),
        ("GET", f"{CALLBACK}/more"),
    ):
        decision = decide_anonymous(method, path, source_ip="127.0.0.1")
        assert not decision.allowed, (method, path)
        assert decision.message.startswith("User: anonymous is not authorized")


def test_the_allow_for_anyone_admits_no_signed_caller_without_a_grant(aws: None) -> None:
    # Given a user of the stack's account with no grant at all
    _, bare = user()

    # Then the signed routes refuse it, as before the callback's Allow for anyone
    for method, path in (("GET", CONNECTION), ("POST", "/connections/wps365/demo/connect")):
        assert not decide(bare, method, path).allowed


def test_a_private_api_keeps_its_callback_to_its_endpoints() -> None:
    # A local request comes through no VPC endpoint: the endpoints' Deny refuses it
    decision = authorizer(VpcEndpointIds="vpce-0123456789abcdef0").authorize_anonymous(
        "GET", CALLBACK, source_ip="127.0.0.1"
    )
    assert not decision.allowed and decision.explicit_deny


# -- the compatibility module, pinned to the moto it was read against ------------------------


def test_moto_is_the_version_moto_iam_was_read_against() -> None:
    # moto_iam.py adapts moto's engine where it falls short of IAM. After an upgrade, read
    # moto/iam/access_control.py and policy_conditions.py again, check the module's
    # reasoning (and the shortfalls below), and update CHECKED.
    assert {name: version(name) for name in moto_iam.CHECKED} == moto_iam.CHECKED


def test_the_shortfalls_moto_iam_makes_up_for_are_still_there() -> None:
    """Each is a reason for moto_iam.py; one that is gone means the module can shrink."""
    from moto.iam.access_control import IAMPolicy, IAMPolicyStatement, PermissionResult

    def moto(statement: dict[str, Any], resource: str = "arn:aws:s3:::b/k") -> PermissionResult:
        return IAMPolicyStatement(statement).is_action_permitted("s3:GetObject", resource)

    base = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/k"}
    # Operators other than StringEquals are ignored: the condition holds.
    assert moto({**base, "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}) is (
        PermissionResult.PERMITTED
    )
    # A failed condition makes an Allow DENIED; a key the request lacks matches.
    failed = {**base, "Condition": {"StringEquals": {"aws:username": "a"}}}
    assert (
        IAMPolicyStatement(failed).is_action_permitted(
            "s3:GetObject", "arn:aws:s3:::b/k", None, {"aws:username": "b"}
        )
        is PermissionResult.DENIED
    )
    assert moto(failed) is PermissionResult.PERMITTED
    # Wildcards are regular expressions: "." matches any character.
    assert (
        moto({**base, "Resource": "arn:aws:s3:::b.k"}, "arn:aws:s3:::bxk")
        is PermissionResult.PERMITTED
    )
    # A statement without Resource (NotResource) is PERMITTED, even a Deny.
    not_resource = {"Effect": "Deny", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::b/k"}
    assert moto(not_resource, "arn:aws:s3:::other") is PermissionResult.PERMITTED
    # Actions are compared with their case.
    assert moto({**base, "Action": "s3:getobject"}) is PermissionResult.NEUTRAL
    # What moto_iam reads of the engine's insides.
    assert IAMPolicy('{"Statement": []}')._policy_json == {"Statement": []}
    from moto.iam.policy_conditions import TrustRelationShipConditions

    (condition,) = TrustRelationShipConditions({"StringEquals": {"k": "v"}})
    assert (condition._condition, condition.context_keys, condition._expected_value) == (
        "StringEquals", ["k"], ["v"],
    )  # fmt: skip


def test_moto_keeps_the_session_policy_on_the_assumed_role(aws: None) -> None:
    narrowed = session(session_policy=policy(allow("*")))
    assert moto_iam.session_policy(narrowed) == json.loads(policy(allow("*")))
    assert moto_iam.session_policy(session()) is None


def test_evaluate_reads_one_statement_as_iam_does() -> None:
    context: dict[str, str | None] = {"aws:sourceip": "127.0.0.1", "aws:principalorgid": None}
    arn = f"{API}/v1/GET/tokens/oauth2/demo"

    def judged(statement: dict[str, Any]) -> Effect:
        return evaluate(statement, "execute-api:Invoke", arn, context, where="test")

    assert judged(allow(f"{API}/*")) is Effect.ALLOW
    assert judged(deny(f"{API}/*")) is Effect.DENY
    assert judged(allow(f"{API}/*/POST/*")) is Effect.NONE
    assert (
        judged(deny(f"{API}/*", Condition={"StringEquals": {"aws:SourceIp": "10.0.0.1"}}))
        is Effect.NONE
    )
    assert (
        judged(allow(f"{API}/*", Condition={"StringEquals": {"aws:SourceIp": "10.0.0.1"}}))
        is Effect.NONE
    )
    assert judged({"Effect": "Allow", "Action": "s3:*", "Resource": "*"}) is Effect.NONE
    # a condition that cannot be judged on a statement about another action says nothing
    assert (
        judged(
            {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"x": "y"}}}
        )
        is Effect.NONE
    )
