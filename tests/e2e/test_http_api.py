"""End-to-end: `tokenvend local --api-type http` serves the template's HTTP API (ApiType
HTTP) as API Gateway's HTTP API does: the vend function gets payload format 2.0 with the
caller in requestContext.authorizer.iam, IAM alone decides (no resource policy), its own
refusals say {"message": ...}, the link callback needs no signature, and the access log
names each route by its key. Driven from outside, as the other e2e stacks are."""

from __future__ import annotations

import json
import subprocess
import sys

from botocore.credentials import Credentials
from e2e.harness import (
    LocalProcess,
    access_lines,
    clean_environment,
    log_lines,
    new_user,
    wait_for,
)

from tokenvend_core.audit import fingerprint

TOKEN_ROUTE = "GET /tokens/{provider}/{connection}"


def tokenvend(stack: LocalProcess, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The command in a second shell that ran the export lines (and `env` besides)."""
    return subprocess.run(
        [sys.executable, "-m", "tokenvend", *args],
        env=clean_environment(**{**stack.env, **env}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_gets_a_token_through_the_http_api(http_stack: LocalProcess) -> None:
    done = tokenvend(http_stack, "token", "dingtalk", "demo", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["provider"] == "dingtalk" and answer["expires_in"] > 0


def test_a_signed_caller_is_the_audit_records_and_the_access_logs_caller(
    http_stack: LocalProcess,
) -> None:
    arn, credentials = new_user(http_stack)
    response = http_stack.call("GET", "/tokens/oauth2/demo?min_ttl=60", credentials=credentials)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    group = http_stack.env["TOKENVEND_AUDIT_LOG_GROUP"]
    record = wait_for(
        lambda: next(
            (
                r
                for r in log_lines(http_stack, group)
                if r["caller"] == arn and r["action"] == "vend"
            ),
            None,
        ),
        20,
        "the vend function's audit record",
    )
    assert record["fingerprint"] == fingerprint(token)
    assert record["source_ip"] == "127.0.0.1" and record["trigger"] == "api"
    line = wait_for(
        lambda: next(
            (x for x in access_lines(http_stack) if x["requestId"] == record["request_id"]),
            None,
        ),
        20,
        "the access log line of the same request",
    )
    assert (line["caller"], line["status"], line["resource"]) == (arn, "200", TOKEN_ROUTE)
    assert line["path"] == "/v1/tokens/oauth2/demo"  # no query string


def test_iam_refusals_are_the_http_apis_own(http_stack: LocalProcess) -> None:
    unsigned = http_stack.call("GET", "/tokens/dingtalk/demo", sign=False)
    assert unsigned.status_code == 403
    assert unsigned.json() == {"message": "Forbidden"}
    iam = http_stack.client("iam")
    name = "no-grant-http"
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    stranger = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    refused = http_stack.call("GET", "/tokens/dingtalk/demo", credentials=stranger)
    assert refused.status_code == 403 and refused.json() == {"message": "Forbidden"}
    nowhere = http_stack.call("GET", "/nowhere")
    assert nowhere.status_code == 404 and nowhere.json() == {"message": "Not Found"}


def test_the_cli_reads_the_http_apis_refusal(http_stack: LocalProcess) -> None:
    # A wrong secret key: the HTTP API's own {"message": "Forbidden"}, read as the contract's
    # forbidden
    done = tokenvend(http_stack, "token", "dingtalk", "demo", AWS_SECRET_ACCESS_KEY="wrong")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: forbidden: Forbidden"


def test_the_link_callback_is_unsigned_and_answers_its_page(http_stack: LocalProcess) -> None:
    # A state no key of this stack made: the invalid-link page, through the HTTP API unsigned
    answer = http_stack.call("GET", "/connect/callback?state=abc.def&code=xyz", sign=False)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    # and a real link, made signed, connects
    link = tokenvend(http_stack, "connect", "wps365", "demo", "--json")
    assert link.returncode == 0, link.stderr
    consent = json.loads(link.stdout)["url"]
    assert "state=" in consent


def test_the_ready_line_says_which_api_is_served(
    http_stack: LocalProcess, stack: LocalProcess
) -> None:
    (http_ready,) = [line for line in http_stack.stdout if line.startswith("ready")]
    (rest_ready,) = [line for line in stack.stdout if line.startswith("ready")]
    assert f"API {http_stack.api_url} (an HTTP API)" in http_ready
    assert f"API {stack.api_url} (a REST API)" in rest_ready
