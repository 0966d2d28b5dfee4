"""The local API authorizes as API Gateway with `AWS_IAM` does: a signed caller gets in only
when its IAM policies (and the API's resource policy) allow `execute-api:Invoke` on
`arn:aws:execute-api:{region}:{account}:local/{stage}/{METHOD}/{path}`; otherwise 403 with
API Gateway's message, before any function runs. Callers and policies are made through IAM
and STS at the local AWS endpoint, as a user's second shell would."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from botocore.credentials import Credentials
from e2e.harness import LocalProcess, put_secret, secret_of, wait_for

VEND = "tokenvend-vend"
ACCOUNT = "123456789012"
OTHER_ACCOUNT = "444455556666"


def api(stack: LocalProcess) -> str:
    return f"arn:aws:execute-api:{stack.region}:{ACCOUNT}:local"


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def invoke(effect: str, *resources: str) -> dict[str, Any]:
    return {"Effect": effect, "Action": "execute-api:Invoke", "Resource": list(resources)}


def one_connection(stack: LocalProcess, connection: str, stage: str = "v1") -> dict[str, Any]:
    """docs/security.md's "Grant a workload exactly one connection", for the local API."""
    return invoke(
        "Allow",
        f"{api(stack)}/{stage}/GET/tokens/dingtalk/{connection}",
        f"{api(stack)}/{stage}/POST/tokens/dingtalk/{connection}/refresh",
    )


def new_user(stack: LocalProcess, *statements: dict[str, Any], iam: Any = None) -> Credentials:
    iam = iam or stack.client("iam")
    name = f"workload-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    if statements:
        iam.put_user_policy(UserName=name, PolicyName="invoke", PolicyDocument=policy(*statements))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def assume(
    stack: LocalProcess, *statements: dict[str, Any], session_policy: str | None = None
) -> tuple[str, Credentials]:
    """A session, from the local STS, of a new role with these statements inline."""
    iam = stack.client("iam")
    role = f"workload-role-{uuid.uuid4().hex[:8]}"
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    if statements:
        iam.put_role_policy(RoleName=role, PolicyName="invoke", PolicyDocument=policy(*statements))
    extra = {"Policy": session_policy} if session_policy else {}
    answer = stack.client("sts").assume_role(RoleArn=arn, RoleSessionName="job-1", **extra)
    keys = answer["Credentials"]
    session_arn = answer["AssumedRoleUser"]["Arn"]
    return session_arn, Credentials(
        keys["AccessKeyId"], keys["SecretAccessKey"], keys["SessionToken"]
    )


def refused(answer: Any, caller: str, method_arn: str, *, explicit: bool = False) -> None:
    """API Gateway's ACCESS_DENIED answer, in the template's gateway response body."""
    assert answer.status_code == 403, answer.text
    assert answer.headers["X-Amzn-ErrorType"] == "AccessDeniedException"
    message = (
        f"User: {caller} is not authorized to perform: execute-api:Invoke on resource: {method_arn}"
    )
    if explicit:
        message += " with an explicit deny"
    assert answer.json() == {"error": {"code": "forbidden", "message": message}}


def arn_of(stack: LocalProcess, credentials: Credentials) -> str:
    return str(stack.client("sts", credentials).get_caller_identity()["Arn"])


@pytest.fixture(scope="module")
def corp_a(stack: LocalProcess) -> str:
    """A dingtalk connection of the docs' example (the demo's credentials)."""
    name = f"corp-a-{uuid.uuid4().hex[:6]}"
    put_secret(stack, "dingtalk", name, secret_of(stack, "dingtalk", "demo"))
    return name


def test_a_role_with_no_permissions_is_refused_before_any_function_runs(
    stack: LocalProcess,
) -> None:
    # Given a role with no policy at all, assumed through the local STS
    session_arn, credentials = assume(stack)
    mark = stack.mark()

    # When
    answer = stack.call("GET", "/tokens/oauth2/demo", credentials=credentials)

    # Then
    refused(answer, session_arn, f"{api(stack)}/v1/GET/tokens/oauth2/demo")
    lines = wait_for(
        lambda: [r for r in stack.log_records(mark) if r.get("refused") == "ACCESS_DENIED"],
        5,
        "the refusal's log line",
    )
    assert lines[0]["caller"] == session_arn
    assert lines[0]["status"] == 403
    assert credentials.secret_key not in json.dumps(lines) and credentials.token not in json.dumps(
        lines
    )
    assert stack.invocations(VEND, since=mark) == []


def test_the_docs_one_connection_policy_grants_exactly_that_connection(
    stack: LocalProcess, corp_a: str
) -> None:
    # Given a new user with docs/security.md's policy for one connection
    credentials = new_user(stack, one_connection(stack, corp_a))
    caller = arn_of(stack, credentials)

    # When / Then: its two routes answer
    token = stack.call("GET", f"/tokens/dingtalk/{corp_a}", credentials=credentials)
    assert token.status_code == 200, token.text
    assert token.json()["access_token"]
    refresh = stack.call(
        "POST", f"/tokens/dingtalk/{corp_a}/refresh", credentials=credentials, body=b"{}"
    )
    assert refresh.status_code == 200, refresh.text

    # ... any other connection is refused, though the exported user gets it
    refused(
        stack.call("GET", "/tokens/dingtalk/demo", credentials=credentials),
        caller,
        f"{api(stack)}/v1/GET/tokens/dingtalk/demo",
    )
    assert stack.call("GET", "/tokens/dingtalk/demo").status_code == 200


def test_a_grant_of_get_only_refuses_the_refresh(stack: LocalProcess, corp_a: str) -> None:
    credentials = new_user(stack, invoke("Allow", f"{api(stack)}/v1/GET/tokens/dingtalk/{corp_a}"))
    assert (
        stack.call("GET", f"/tokens/dingtalk/{corp_a}", credentials=credentials).status_code == 200
    )
    refused(
        stack.call(
            "POST", f"/tokens/dingtalk/{corp_a}/refresh", credentials=credentials, body=b"{}"
        ),
        arn_of(stack, credentials),
        f"{api(stack)}/v1/POST/tokens/dingtalk/{corp_a}/refresh",
    )


def test_a_grant_for_another_stage_is_refused(stack: LocalProcess, corp_a: str) -> None:
    # The local stack serves stage v1 (the template's StageName)
    credentials = new_user(stack, one_connection(stack, corp_a, stage="v2"))
    refused(
        stack.call("GET", f"/tokens/dingtalk/{corp_a}", credentials=credentials),
        arn_of(stack, credentials),
        f"{api(stack)}/v1/GET/tokens/dingtalk/{corp_a}",
    )


def test_a_groups_policy_grants(stack: LocalProcess) -> None:
    # Given a user without a policy of its own, then in a group allowed the oauth2 tokens
    iam = stack.client("iam")
    credentials = new_user(stack)
    name = arn_of(stack, credentials).rsplit("/", 1)[1]
    assert stack.call("GET", "/tokens/oauth2/demo", credentials=credentials).status_code == 403
    group = f"readers-{uuid.uuid4().hex[:6]}"
    iam.create_group(GroupName=group)
    iam.put_group_policy(
        GroupName=group,
        PolicyName="oauth2",
        PolicyDocument=policy(invoke("Allow", f"{api(stack)}/v1/GET/tokens/oauth2/*")),
    )

    # When
    iam.add_user_to_group(GroupName=group, UserName=name)

    # Then
    answer = stack.call("GET", "/tokens/oauth2/demo", credentials=credentials)
    assert answer.status_code == 200, answer.text


def test_an_explicit_deny_beats_an_allow(stack: LocalProcess, corp_a: str) -> None:
    # Given a user allowed the whole API, denied one connection by an attached policy
    iam = stack.client("iam")
    credentials = new_user(stack, invoke("Allow", f"{api(stack)}/*"))
    caller = arn_of(stack, credentials)
    denied = iam.create_policy(
        PolicyName=f"no-corp-a-{uuid.uuid4().hex[:6]}",
        PolicyDocument=policy(invoke("Deny", f"{api(stack)}/*/*/tokens/dingtalk/{corp_a}*")),
    )["Policy"]["Arn"]
    iam.attach_user_policy(UserName=caller.rsplit("/", 1)[1], PolicyArn=denied)

    # Then
    refused(
        stack.call("GET", f"/tokens/dingtalk/{corp_a}", credentials=credentials),
        caller,
        f"{api(stack)}/v1/GET/tokens/dingtalk/{corp_a}",
        explicit=True,
    )
    assert stack.call("GET", "/tokens/dingtalk/demo", credentials=credentials).status_code == 200


def test_a_session_policy_narrower_than_the_role_limits_it(
    stack: LocalProcess, corp_a: str
) -> None:
    # Given a role allowed the whole API, assumed with docs/security.md's policy as session policy
    session_arn, credentials = assume(
        stack,
        invoke("Allow", f"{api(stack)}/*"),
        session_policy=policy(one_connection(stack, corp_a)),
    )
    _, unnarrowed = assume(stack, invoke("Allow", f"{api(stack)}/*"))

    # Then
    assert (
        stack.call("GET", f"/tokens/dingtalk/{corp_a}", credentials=credentials).status_code == 200
    )
    refused(
        stack.call("GET", "/tokens/dingtalk/demo", credentials=credentials),
        session_arn,
        f"{api(stack)}/v1/GET/tokens/dingtalk/demo",
    )
    assert stack.call("GET", "/tokens/dingtalk/demo", credentials=unnarrowed).status_code == 200


@pytest.mark.parametrize(
    ("pattern", "path", "allowed"),
    [
        ("{api}/*/GET/tokens/oauth2/*", "/tokens/oauth2/demo", True),
        ("{api}/v1/*/tokens/*/demo", "/tokens/oauth2/demo", True),
        ("{api}/v1/GET/tokens/oauth2/dem?", "/tokens/oauth2/demo", True),
        ("{api}/v1/GET/tokens/oauth2/de?", "/tokens/oauth2/demo", False),  # ? is one character
        ("{api}/v1/GET/tokens/oauth2.demo", "/tokens/oauth2/demo", False),  # . is no wildcard
        ("{api}/v1/GET/tokens/OAuth2/demo", "/tokens/oauth2/demo", False),  # case counts
        ("arn:aws:execute-api:*:*:*/*", "/tokens/oauth2/demo", True),
        ("arn:aws:execute-api:*:*:other-api/*", "/tokens/oauth2/demo", False),
    ],
)
def test_wildcards_in_the_resource_arn_behave_as_in_iam(
    stack: LocalProcess, pattern: str, path: str, allowed: bool
) -> None:
    credentials = new_user(stack, invoke("Allow", pattern.format(api=api(stack))))
    answer = stack.call("GET", path, credentials=credentials)
    assert answer.status_code == (200 if allowed else 403), answer.text


def test_a_caller_of_another_account_is_refused_by_the_resource_policy(stack: LocalProcess) -> None:
    # Given a user of another account (moto's x-moto-account-id), allowed the API by its own policy
    session = boto3.session.Session()
    session.events.register(
        "before-sign.iam.*",
        lambda request, **_: request.headers.__setitem__("x-moto-account-id", OTHER_ACCOUNT),
    )
    iam = session.client(
        "iam",
        region_name=stack.region,
        endpoint_url=stack.env["AWS_ENDPOINT_URL"],
        aws_access_key_id=stack.credentials.access_key,
        aws_secret_access_key=stack.credentials.secret_key,
    )
    credentials = new_user(stack, invoke("Allow", f"{api(stack)}/*"), iam=iam)
    caller = arn_of(stack, credentials)
    assert f":{OTHER_ACCOUNT}:" in caller

    # Then the template's resource policy (AllowedAccountIds empty) denies it explicitly
    refused(
        stack.call("GET", "/tokens/oauth2/demo", credentials=credentials),
        caller,
        f"{api(stack)}/v1/GET/tokens/oauth2/demo",
        explicit=True,
    )


def test_the_exported_user_may_invoke_every_route(stack: LocalProcess) -> None:
    answer = stack.call("GET", "/tokens/oauth2/demo")
    assert answer.status_code == 200, answer.text
    users = stack.client("iam").list_user_policies(UserName="tokenvend-local")["PolicyNames"]
    assert users, "the exported user's grant is a policy of its own"
