"""End-to-end: the audit trail of `tokenvend local`, read as a user reads it, with the
`tokenvend audit` command in a second shell that ran the export lines; and the API's access
log in the local AWS, one line per request in the template's format.

Two callers, each a user created through the local IAM with its own access key, get tokens
of connections of their own (new ones, so that no other test's caller ever got those
tokens): a leaked token's file names the caller that got it, and only that caller.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials
from e2e.harness import (
    LocalProcess,
    access_lines,
    new_user,
    put_secret,
    secret_of,
    sha256,
    wait_for,
)

ACCESS_LOG_RESOURCE = "/tokens/{provider}/{connection}"


def tokenvend(stack: LocalProcess, *args: str, stdin: str | None = None) -> Any:
    """The command, in a second shell that ran the export lines."""
    return subprocess.run(
        [sys.executable, "-m", "tokenvend", *args],
        env=stack.shell_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def audit(stack: LocalProcess, *args: str, stdin: str | None = None) -> list[dict[str, Any]]:
    done = tokenvend(stack, "audit", "--json", *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert isinstance(records, list)
    return records


class Caller:
    def __init__(self, arn: str, credentials: Credentials) -> None:
        self.arn = arn
        self.credentials = credentials
        self.tokens: list[str] = []


@pytest.fixture(scope="module")
def callers(stack: LocalProcess) -> dict[str, Any]:
    """Alice gets a token of an azure connection of her own, Bob of an oauth2 one (both
    copies of the demo connections); each asks twice (a fetch, then the cached token). Not
    dingtalk: like DingTalk, its sandbox hands the same app the same token within its
    validity, so the demo connection's token would be Alice's too."""
    run = uuid.uuid4().hex[:8]
    connections = {"alice": ("azure", f"audit-a-{run}"), "bob": ("oauth2", f"audit-b-{run}")}
    found: dict[str, Any] = {}
    for name, (provider, connection) in connections.items():
        put_secret(stack, provider, connection, secret_of(stack, provider, "demo"))
        caller = Caller(*new_user(stack))
        for _ in range(2):
            answer = stack.call(
                "GET", f"/tokens/{provider}/{connection}", credentials=caller.credentials
            )
            assert answer.status_code == 200, answer.text
            caller.tokens.append(answer.json()["access_token"])
        found[name] = caller
        found[f"{name}_connection"] = f"{provider}/{connection}"
    assert found["alice"].tokens[0] == found["alice"].tokens[1]
    return found


def test_a_leaked_tokens_file_finds_the_caller_that_got_it_and_only_that_caller(
    stack: LocalProcess, callers: dict[str, Any], tmp_path: Path
) -> None:
    # Given the token Alice got, in a file, as it leaked
    alice, bob = callers["alice"], callers["bob"]
    leaked = tmp_path / "leaked.txt"
    leaked.write_text(alice.tokens[0] + "\n")

    # When
    done = tokenvend(stack, "audit", "--token-file", str(leaked), "--verbose")
    records = audit(stack, "--token-file", str(leaked))

    # Then the records of that token name Alice, and no one else
    assert done.returncode == 0, done.stderr
    assert alice.arn in done.stdout
    assert bob.arn not in done.stdout
    fingerprint = sha256(alice.tokens[0])[:16]
    assert records and all(r["fingerprint"] == fingerprint for r in records)
    assert {r["caller"] for r in records if r["caller"]} == {alice.arn}
    vends = [r for r in records if r["action"] == "vend"]
    assert [r["outcome"] for r in vends] == ["memory", "provider"]  # newest first
    assert all(f"{r['provider']}/{r['connection']}" == callers["alice_connection"] for r in records)
    # and the token itself is never shown, nor its whole hash
    assert alice.tokens[0] not in done.stdout + done.stderr
    assert sha256(alice.tokens[0]) not in done.stdout + done.stderr


def test_the_token_can_come_from_standard_input(
    stack: LocalProcess, callers: dict[str, Any]
) -> None:
    bob = callers["bob"]

    records = audit(stack, "--token-file", "-", stdin=bob.tokens[0])

    assert {r["caller"] for r in records if r["caller"]} == {bob.arn}


def test_connection_and_caller_filter(stack: LocalProcess, callers: dict[str, Any]) -> None:
    alice, bob = callers["alice"], callers["bob"]

    by_connection = audit(stack, "--connection", callers["bob_connection"])
    by_caller = audit(stack, "--caller", alice.arn)
    both = audit(stack, "--caller", bob.arn, "--connection", callers["alice_connection"])

    assert by_connection
    assert {f"{r['provider']}/{r['connection']}" for r in by_connection} == {
        callers["bob_connection"]
    }
    assert {r["caller"] for r in by_connection if r["action"] == "vend"} == {bob.arn}
    assert by_caller
    assert {r["caller"] for r in by_caller} == {alice.arn}
    assert {f"{r['provider']}/{r['connection']}" for r in by_caller} == {
        callers["alice_connection"]
    }
    assert both == []


def test_the_json_is_the_records_newest_first(stack: LocalProcess, callers: dict[str, Any]) -> None:
    records = audit(stack, "--caller", callers["alice"].arn, "--since", "1h", "--limit", "50")

    assert records
    times = [r["time"] for r in records]
    assert times == sorted(times, reverse=True)
    for record in records:
        assert record["audit"] == 1
        assert record["request_id"]
        assert record["source_ip"]
        assert callers["alice"].tokens[0] not in json.dumps(record)


def test_bad_input_is_one_line_and_exit_2(stack: LocalProcess) -> None:
    done = tokenvend(stack, "audit", "--caller", 'arn:aws:iam::123456789012:user/x" or "1')

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "IAM principal's ARN" in done.stderr


# -- the API's access log -------------------------------------------------------------------


def test_a_signed_request_leaves_an_access_log_line_with_its_caller(
    stack: LocalProcess, callers: dict[str, Any]
) -> None:
    # Given
    alice = callers["alice"]
    provider, connection = callers["alice_connection"].split("/")
    path = f"/tokens/{provider}/{connection}"

    # When
    answer = stack.call("GET", path + "?min_ttl=60", credentials=alice.credentials)

    # Then a line in the template's shape, with the id of the request the function saw
    assert answer.status_code == 200
    audited = audit(stack, "--caller", alice.arn, "--since", "10m")
    request_id = next(r["request_id"] for r in audited if r["action"] == "vend")
    line = wait_for(
        lambda: next((x for x in access_lines(stack) if x["requestId"] == request_id), None),
        20,
        "the access log line",
    )
    assert list(line) == [
        "requestId", "time", "caller", "sourceIp", "method", "path", "resource", "status",
        "latencyMs", "protocol",
    ]  # fmt: skip
    assert line["caller"] == alice.arn
    assert line["status"] == "200"
    assert line["method"] == "GET"
    assert line["path"] == f"/v1{path}"  # the stage's, without the query string
    assert line["resource"] == ACCESS_LOG_RESOURCE
    assert line["sourceIp"] == "127.0.0.1"
    assert line["latencyMs"].isdigit()


def test_a_refused_request_leaves_an_access_log_line_with_403(stack: LocalProcess) -> None:
    # Given a user with a key but no grant to invoke the API
    iam = stack.client("iam")
    name = f"no-grant-{uuid.uuid4().hex[:8]}"
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    key = iam.create_access_key(UserName=name)["AccessKey"]
    credentials = Credentials(key["AccessKeyId"], key["SecretAccessKey"])

    # When it asks, and someone asks unsigned
    refused = stack.call("GET", "/tokens/dingtalk/demo", credentials=credentials)
    unsigned = stack.call("GET", f"/tokens/dingtalk/demo-{name}", sign=False)

    # Then both are in the access log with 403
    assert refused.status_code == 403
    assert unsigned.status_code == 403
    mine = wait_for(
        lambda: [x for x in access_lines(stack) if x["caller"] == arn],
        20,
        "the refused caller's line",
    )
    assert [(x["status"], x["path"]) for x in mine] == [("403", "/v1/tokens/dingtalk/demo")]
    anonymous = wait_for(
        lambda: [x for x in access_lines(stack) if x["path"].endswith(f"demo-{name}")],
        20,
        "the unsigned request's line",
    )
    assert [(x["status"], x["caller"]) for x in anonymous] == [("403", "-")]
