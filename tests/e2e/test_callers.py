"""Callers are IAM principals of the local IAM: any access key created through IAM at the local
endpoint signs for the API, and the caller's ARN is what `allowed_principals` is matched with.
As in AWS, a caller also needs an identity policy allowing `execute-api:Invoke` on the route
(tests/e2e/test_local_iam.py): each caller here is given one on the whole API."""

from __future__ import annotations

import uuid

import pytest
from botocore.credentials import Credentials
from e2e.harness import LocalProcess, invoke_the_api, new_user, put_secret, secret_of


@pytest.fixture(scope="module")
def first_arn(stack: LocalProcess) -> str:
    """The ARN of the user whose keys the export lines carry."""
    return str(stack.client("sts").get_caller_identity()["Arn"])


@pytest.fixture(scope="module")
def restricted(stack: LocalProcess, first_arn: str) -> str:
    """A dingtalk connection only the first user may use (the demo's credentials)."""
    value = secret_of(stack, "dingtalk", "demo")
    value["allowed_principals"] = [first_arn]
    put_secret(stack, "dingtalk", "restricted", value)
    return "restricted"


def test_a_second_caller_created_through_iam_with_a_grant_gets_an_unrestricted_token(
    stack: LocalProcess,
) -> None:
    # Given a new user allowed to invoke the API
    _, credentials = new_user(stack)

    # When
    answer = stack.call("GET", "/tokens/oauth2/demo", credentials=credentials)

    # Then
    assert answer.status_code == 200, answer.text
    assert answer.json()["access_token"]


def test_allowed_principals_admit_the_listed_caller_only(
    stack: LocalProcess, restricted: str, first_arn: str
) -> None:
    # Given
    second_arn, second = new_user(stack)
    assert second_arn != first_arn

    # When the second user asks first (nothing cached), then the first, then the second again
    refused_cold = stack.call("GET", f"/tokens/dingtalk/{restricted}", credentials=second)
    admitted = stack.call("GET", f"/tokens/dingtalk/{restricted}")
    refused_warm = stack.call("GET", f"/tokens/dingtalk/{restricted}", credentials=second)
    refresh = stack.call(
        "POST", f"/tokens/dingtalk/{restricted}/refresh", credentials=second, body=b"{}"
    )

    # Then
    assert admitted.status_code == 200, admitted.text
    for refused in (refused_cold, refused_warm, refresh):
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert error["code"] == "forbidden"
        assert "may not use" in error["message"]  # the service's refusal, not the gateway's
        assert "access_token" not in refused.text


def test_an_assumed_role_matches_its_roles_pattern(stack: LocalProcess) -> None:
    # Given a connection open to one role, and a session of that role from the local STS
    iam = stack.client("iam")
    role = f"workload-role-{uuid.uuid4().hex[:8]}"
    role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="invoke", PolicyDocument=invoke_the_api(stack))
    value = secret_of(stack, "oauth2", "demo")
    value["allowed_principals"] = [role_arn]
    put_secret(stack, "oauth2", f"for-{role}", value)
    session = stack.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="job-1")
    keys = session["Credentials"]
    credentials = Credentials(keys["AccessKeyId"], keys["SecretAccessKey"], keys["SessionToken"])

    # When
    as_role = stack.call("GET", f"/tokens/oauth2/for-{role}", credentials=credentials)
    as_user = stack.call("GET", f"/tokens/oauth2/for-{role}")

    # Then
    assert as_role.status_code == 200, as_role.text
    assert as_user.status_code == 403
    assert as_user.json()["error"]["code"] == "forbidden"


def test_a_deactivated_key_no_longer_signs(stack: LocalProcess) -> None:
    # Given
    arn, credentials = new_user(stack)
    assert stack.call("GET", "/tokens/oauth2/demo", credentials=credentials).status_code == 200

    # When
    stack.client("iam").update_access_key(
        UserName=arn.rsplit("/", 1)[1], AccessKeyId=credentials.access_key, Status="Inactive"
    )

    # Then
    answer = stack.call("GET", "/tokens/oauth2/demo", credentials=credentials)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
