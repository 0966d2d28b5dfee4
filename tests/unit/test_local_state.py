"""The local AWS state kept across restarts (tokenvend.local.state): moto's backends, written
between requests, restored into a later server, set aside (never deleted) when unreadable.

Each test runs a real moto server on 127.0.0.1 and talks to it with boto3, as the local stack
and a user's second shell do. A "restart" is a second server in this process: its start
resets moto's backends, as a new `tokenvend local` process starts from nothing. These tests
pin the moto version in use: an upgrade that changes what the snapshot relies on fails here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tokenvend.awslocal import MotoKeys, MotoServer
from tokenvend.local import state as state_module
from tokenvend.local.state import (
    SNAPSHOT,
    LocalState,
    StateInUse,
    active_access_key,
    may_change,
)

ACCOUNT = "123456789012"
USER = "tokenvend-local"
TABLE = "tokenvend-tokens"
QUEUE = "tokenvend-dlq"
SECRET = "tokenvend/oauth2/demo"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"}],
}

Clients = Callable[..., Any]


def clients_of(server: MotoServer) -> Clients:
    def client(service: str, **credentials: str) -> Any:
        return boto3.session.Session().client(
            service, endpoint_url=server.url, region_name="us-east-1", **credentials
        )

    return client


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / ".tokenvend" / "state"


class Run:
    """One `tokenvend local` lifetime: a moto server with its state attached and restored."""

    def __init__(self, directory: Path, *, fresh: bool = False, interval: float = 60) -> None:
        self.server = MotoServer()
        self.state = LocalState(directory, interval=interval)
        self.state.attach(self.server)
        self.server.start()
        self.restored = self.state.restore(fresh=fresh)
        self.client = clients_of(self.server)

    def stop(self) -> None:
        self.server.stop()
        self.state.stop()


@pytest.fixture
def runs(workdir: Path) -> Iterator[Callable[..., Run]]:
    started: list[Run] = []

    def start(directory: Path = workdir, **kwargs: Any) -> Run:
        run = Run(directory, **kwargs)
        started.append(run)
        return run

    yield start
    for run in reversed(started):
        run.stop()


def populate(client: Clients) -> dict[str, Any]:
    """What a user of the local stack builds up: a user with a key, its policies and group,
    a role and a session, a secret with versions and stages, the table's items, a message."""
    iam = client("iam")
    iam.create_user(UserName=USER)
    key = iam.create_access_key(UserName=USER)["AccessKey"]
    iam.put_user_policy(UserName=USER, PolicyName="invoke", PolicyDocument=json.dumps(POLICY))
    managed = iam.create_policy(PolicyName="managed", PolicyDocument=json.dumps(POLICY))
    iam.attach_user_policy(UserName=USER, PolicyArn=managed["Policy"]["Arn"])
    iam.create_group(GroupName="workloads")
    iam.add_user_to_group(GroupName="workloads", UserName=USER)
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    role = iam.create_role(RoleName="workload", AssumeRolePolicyDocument=json.dumps(trust))
    session = client("sts").assume_role(RoleArn=role["Role"]["Arn"], RoleSessionName="job-1")[
        "Credentials"
    ]

    secrets = client("secretsmanager")
    first = secrets.create_secret(Name=SECRET, SecretString='{"v": 1}')["VersionId"]
    second = secrets.put_secret_value(SecretId=SECRET, SecretString='{"v": 2}')["VersionId"]
    secrets.update_secret_version_stage(
        SecretId=SECRET, VersionStage="CANARY", MoveToVersionId=first
    )

    dynamodb = client("dynamodb")
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "provider", "KeyType": "HASH"},
            {"AttributeName": "connection", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "provider", "AttributeType": "S"},
            {"AttributeName": "connection", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName=TABLE, Item=item("oauth2", "demo", "token-1"))

    sqs = client("sqs")
    url = sqs.create_queue(QueueName=QUEUE, Attributes={"VisibilityTimeout": "7"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="a failed invocation")
    return {"key": key, "session": session, "versions": (first, second)}


def item(provider: str, connection: str, token: str) -> dict[str, Any]:
    return {
        "provider": {"S": provider},
        "connection": {"S": connection},
        "access_token": {"S": token},
    }


def stages(client: Clients) -> dict[str, list[str]]:
    versions = client("secretsmanager").list_secret_version_ids(SecretId=SECRET)["Versions"]
    return {v["VersionId"]: sorted(v["VersionStages"]) for v in versions}


# -- what survives a restart -----------------------------------------------------------------


def test_a_restart_keeps_keys_policies_secrets_items_and_messages(
    runs: Callable[..., Run], workdir: Path
) -> None:
    # Given a first run that built up state and stopped cleanly
    first = runs()
    assert first.restored is False
    made = populate(first.client)
    key = made["key"]
    first_stages = stages(first.client)
    first.stop()

    # When a second run starts in the same directory
    second = runs()

    # Then everything is back as it was
    assert second.restored is True
    principal = MotoKeys().lookup(key["AccessKeyId"])
    assert principal is not None
    assert principal.secret_access_key == key["SecretAccessKey"]
    assert principal.arn == f"arn:aws:iam::{ACCOUNT}:user/{USER}"
    assert active_access_key(USER) == (key["AccessKeyId"], key["SecretAccessKey"])
    as_user = second.client(
        "sts",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    assert as_user.get_caller_identity()["Arn"] == principal.arn
    session = MotoKeys().lookup(made["session"]["AccessKeyId"])
    assert session is not None
    assert session.arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/workload/job-1"

    iam = second.client("iam")
    inline = iam.get_user_policy(UserName=USER, PolicyName="invoke")
    assert inline["PolicyDocument"] == POLICY
    attached = iam.list_attached_user_policies(UserName=USER)["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["managed"]
    groups = iam.list_groups_for_user(UserName=USER)["Groups"]
    assert [g["GroupName"] for g in groups] == ["workloads"]

    first_version, second_version = made["versions"]
    assert stages(second.client) == first_stages
    assert first_stages[second_version] == ["AWSCURRENT"]
    assert first_stages[first_version] == ["AWSPREVIOUS", "CANARY"]
    secrets = second.client("secretsmanager")
    assert secrets.get_secret_value(SecretId=SECRET)["SecretString"] == '{"v": 2}'
    canary = secrets.get_secret_value(SecretId=SECRET, VersionStage="CANARY")
    assert canary["SecretString"] == '{"v": 1}'

    dynamodb = second.client("dynamodb")
    key_of_demo = {"provider": {"S": "oauth2"}, "connection": {"S": "demo"}}
    found = dynamodb.get_item(TableName=TABLE, Key=key_of_demo)["Item"]
    assert found["access_token"] == {"S": "token-1"}
    dynamodb.put_item(TableName=TABLE, Item=item("azure", "demo", "token-2"))  # still writable

    sqs = second.client("sqs")
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attributes["Attributes"]["VisibilityTimeout"] == "7"
    messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]
    assert [m["Body"] for m in messages] == ["a failed invocation"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"])


def test_a_restart_keeps_the_audit_records_and_the_access_log(
    runs: Callable[..., Run], workdir: Path
) -> None:
    # Given a first run whose functions and API wrote their records and lines
    first = runs()
    logs = first.client("logs")
    written = {}
    for group, stream in (
        ("/tokenvend/tokenvend/audit", "tokenvend-vend/2026/11/30/0a1b"),
        ("/tokenvend/tokenvend/access", "local/2026/11/30/2c3d"),
    ):
        logs.create_log_group(logGroupName=group)
        logs.put_retention_policy(logGroupName=group, retentionInDays=90)
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        messages = [json.dumps({"audit": 1, "n": n}) for n in range(3)]
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[
                {"timestamp": 1_796_000_000_000 + n, "message": m} for n, m in enumerate(messages)
            ],
        )
        written[group] = messages
    assert first.state.dirty
    first.stop()

    # When a second run starts in the same directory
    second = runs()

    # Then the groups, their retention and every event are back, and more can be written
    logs = second.client("logs")
    groups = {g["logGroupName"]: g for g in logs.describe_log_groups()["logGroups"]}
    assert sorted(groups) == sorted(written)
    for group, messages in written.items():
        assert groups[group]["retentionInDays"] == 90
        events = logs.filter_log_events(logGroupName=group)["events"]
        assert [e["message"] for e in events] == messages
    logs.create_log_stream(logGroupName="/tokenvend/tokenvend/audit", logStreamName="next")
    logs.put_log_events(
        logGroupName="/tokenvend/tokenvend/audit",
        logStreamName="next",
        logEvents=[{"timestamp": 1_796_000_001_000, "message": "{}"}],
    )
    events = logs.filter_log_events(logGroupName="/tokenvend/tokenvend/audit")["events"]
    assert len(events) == 4


def test_the_snapshot_is_private_to_the_user(runs: Callable[..., Run], workdir: Path) -> None:
    run = runs()
    populate(run.client)
    run.stop()

    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert stat.S_IMODE((workdir / SNAPSHOT).stat().st_mode) == 0o600


def test_a_change_is_saved_without_a_stop(
    runs: Callable[..., Run], workdir: Path, tmp_path: Path
) -> None:
    # Given a run that saves soon after each change
    run = runs(interval=0.05)
    run.state.start_saving()
    key = populate(run.client)["key"]

    # When it is saved, and the process then dies (its file copied as a crash leaves it)
    wait_until(lambda: run.state.saves > 0 and not run.state.dirty)
    crashed = copy_state(workdir, tmp_path / "crashed")
    run.stop()

    # Then a run from that file has the change
    again = runs(crashed)
    assert again.restored is True
    assert active_access_key(USER) == (key["AccessKeyId"], key["SecretAccessKey"])


def test_reads_leave_the_state_unchanged_and_writes_mark_it(runs: Callable[..., Run]) -> None:
    run = runs()
    populate(run.client)
    run.state.save()
    assert not run.state.dirty

    dynamodb, secrets = run.client("dynamodb"), run.client("secretsmanager")
    key = {"provider": {"S": "oauth2"}, "connection": {"S": "demo"}}
    dynamodb.get_item(TableName=TABLE, Key=key, ConsistentRead=True)
    dynamodb.describe_table(TableName=TABLE)
    secrets.get_secret_value(SecretId=SECRET)
    secrets.describe_secret(SecretId=SECRET)
    assert not run.state.dirty

    dynamodb.put_item(TableName=TABLE, Item=item("oauth2", "demo", "token-2"))
    assert run.state.dirty


@pytest.mark.parametrize(
    ("method", "target", "changes"),
    [
        ("GET", "", False),
        ("POST", "DynamoDB_20120810.GetItem", False),
        ("POST", "DynamoDB_20120810.Query", False),
        ("POST", "DynamoDB_20120810.PutItem", True),
        ("POST", "DynamoDB_20120810.UpdateItem", True),
        ("POST", "DynamoDB_20120810.TransactWriteItems", True),
        ("POST", "secretsmanager.GetSecretValue", False),
        ("POST", "secretsmanager.PutSecretValue", True),
        ("POST", "AmazonSQS.ReceiveMessage", True),  # moves the message out of sight
        ("POST", "AmazonSQS.GetQueueUrl", False),
        ("POST", "Logs_20140328.FilterLogEvents", False),
        ("POST", "Logs_20140328.DescribeLogStreams", False),
        ("POST", "Logs_20140328.GetQueryResults", False),
        ("POST", "Logs_20140328.PutLogEvents", True),
        ("POST", "Logs_20140328.CreateLogStream", True),
        ("POST", "", True),  # the query protocol (IAM, STS): the action is in the body
        ("POST", "SomeOtherService.GetId", True),  # only the kept services' reads are known
    ],
)
def test_which_requests_may_change_the_state(method: str, target: str, changes: bool) -> None:
    environ = {"REQUEST_METHOD": method}
    if target:
        environ["HTTP_X_AMZ_TARGET"] = target
    assert may_change(environ) is changes


# -- what cannot be read is set aside, never deleted ------------------------------------------


def snapshot_bytes(runs: Callable[..., Run], workdir: Path) -> bytes:
    run = runs()
    populate(run.client)
    run.stop()
    return (workdir / SNAPSHOT).read_bytes()


def damaged(kind: str, good: bytes) -> bytes:
    magic, header, payload = good.split(b"\n", 2)
    if kind == "garbage":
        return b"\x00\x01 not a snapshot at all"
    if kind == "truncated":
        return good[: len(good) - 100]
    if kind == "other moto":
        fields = json.loads(header)
        fields["moto"] = "0.0.1"
        return magic + b"\n" + json.dumps(fields).encode() + b"\n" + payload
    if kind == "not a pickle":
        junk = b"junk" * 10
        fields = json.loads(header)
        fields["sha256"] = hashlib.sha256(junk).hexdigest()
        return magic + b"\n" + json.dumps(fields).encode() + b"\n" + junk
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "other moto", "not a pickle"])
def test_an_unreadable_snapshot_is_set_aside_and_the_start_goes_on_empty(
    runs: Callable[..., Run], workdir: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a snapshot that cannot be loaded
    bad = damaged(kind, snapshot_bytes(runs, workdir))
    (workdir / SNAPSHOT).write_bytes(bad)
    capsys.readouterr()

    # When a run starts
    run = runs()

    # Then it starts empty, says so in one line, and keeps the file under another name
    assert run.restored is False
    assert active_access_key(USER) is None
    aside = list(workdir.glob(f"{SNAPSHOT}.unreadable-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == bad
    assert not (workdir / SNAPSHOT).exists()
    warnings = [
        json.loads(line)
        for line in capsys.readouterr().err.splitlines()
        if "cannot be read" in line
    ]
    assert len(warnings) == 1
    assert warnings[0]["kept_as"] == str(aside[0])
    # and what it then builds is saved as the new state
    populate(run.client)
    run.stop()
    assert runs().restored is True


def test_a_snapshot_that_others_could_have_written_is_not_loaded(
    runs: Callable[..., Run], workdir: Path
) -> None:
    snapshot_bytes(runs, workdir)
    (workdir / SNAPSHOT).chmod(0o666)

    run = runs()

    assert run.restored is False
    assert active_access_key(USER) is None
    assert len(list(workdir.glob(f"{SNAPSHOT}.unreadable-*"))) == 1


def test_fresh_starts_empty_and_keeps_the_old_state_aside(
    runs: Callable[..., Run], workdir: Path
) -> None:
    good = snapshot_bytes(runs, workdir)

    run = runs(fresh=True)

    assert run.restored is False
    assert active_access_key(USER) is None
    aside = list(workdir.glob(f"{SNAPSHOT}.old-*"))
    assert [path.read_bytes() for path in aside] == [good]


# -- writing ----------------------------------------------------------------------------------


def test_a_crash_mid_write_leaves_the_previous_snapshot(
    runs: Callable[..., Run], workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a saved state
    run = runs()
    key = populate(run.client)["key"]
    run.state.save()
    before = (workdir / SNAPSHOT).read_bytes()

    # When a later write dies after writing part of its file, before the rename
    run.client("iam").create_user(UserName="later")

    def die(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(state_module.os, "fsync", die)
        with pytest.raises(OSError):
            run.state.save()

    # Then the previous snapshot is whole, no partial file is left, and the change waits
    assert (workdir / SNAPSHOT).read_bytes() == before
    assert [p.name for p in workdir.iterdir() if p.name.endswith(".partial")] == []
    assert run.state.dirty
    # and were the process to die now, the next run would have the state as it was saved
    crashed = copy_state(workdir, tmp_path / "crashed")
    run.stop()
    again = runs(crashed)
    assert again.restored is True
    assert active_access_key(USER) == (key["AccessKeyId"], key["SecretAccessKey"])
    assert "later" not in [u["UserName"] for u in again.client("iam").list_users()["Users"]]


def copy_state(workdir: Path, to: Path) -> Path:
    """The state directory as a process killed at this moment would leave it."""
    directory = to / ".tokenvend" / "state"
    directory.mkdir(parents=True, mode=0o700)
    (directory / SNAPSHOT).write_bytes((workdir / SNAPSHOT).read_bytes())
    (directory / SNAPSHOT).chmod(0o600)
    return directory


def test_a_partial_file_left_by_a_killed_process_is_ignored_and_removed(
    runs: Callable[..., Run], workdir: Path
) -> None:
    snapshot_bytes(runs, workdir)
    partial = workdir / f".{SNAPSHOT}.4242.1.partial"
    partial.write_bytes(b"half a snapshot")

    run = runs()

    assert run.restored is True
    assert not partial.exists()


def test_requests_go_on_while_snapshots_are_taken(runs: Callable[..., Run], workdir: Path) -> None:
    # Given a run that saves as often as it can
    run = runs(interval=0.001)
    run.state.start_saving()
    populate(run.client)
    writers, per_writer = 4, 40
    errors: list[BaseException] = []
    snapshots: list[bytes] = []
    done = threading.Event()

    def write(n: int) -> None:
        try:
            dynamodb = run.client("dynamodb")
            for i in range(per_writer):
                dynamodb.put_item(TableName=TABLE, Item=item(f"p{n}", f"c{i}", f"t{n}-{i}"))
        except BaseException as exc:
            errors.append(exc)

    def watch() -> None:  # copies of the file as a crash could find it at any moment
        while not done.is_set() and len(snapshots) < 200:
            with contextlib.suppress(FileNotFoundError):
                snapshots.append((workdir / SNAPSHOT).read_bytes())
            done.wait(0.005)

    # When several clients write at once
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    watcher = threading.Thread(target=watch)
    for thread in [*threads, watcher]:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done.set()
    watcher.join(timeout=10)
    assert not any(thread.is_alive() for thread in [*threads, watcher])

    # Then every request succeeded, every copy of the file is a whole snapshot, and the
    # last one holds every write
    assert errors == []
    assert run.state.saves > 0
    for data in snapshots:
        header, payload = state_module._split(data)
        assert hashlib.sha256(payload).hexdigest() == header["sha256"]
    run.stop()
    again = runs()
    count = again.client("dynamodb").scan(TableName=TABLE, Select="COUNT")["Count"]
    assert count == 1 + writers * per_writer


# -- one run per directory, and nothing written before restore ---------------------------------


def test_a_second_run_in_the_same_directory_is_refused(
    runs: Callable[..., Run], workdir: Path
) -> None:
    runs()
    other = LocalState(workdir)

    with pytest.raises(StateInUse, match=str(os.getpid())):
        other.restore()
    other.stop()


def test_a_start_that_failed_before_restore_leaves_the_state_alone(
    runs: Callable[..., Run], workdir: Path
) -> None:
    before = snapshot_bytes(runs, workdir)
    state = LocalState(workdir)

    with pytest.raises(RuntimeError, match="restore"):
        state.save()
    state.stop()  # as the stack's stop() after a failed start

    assert (workdir / SNAPSHOT).read_bytes() == before


def test_attach_refuses_a_server_it_cannot_wrap(workdir: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot wrap"):
        LocalState(workdir).attach(object())


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    stop = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        stop.wait(0.02)
    raise AssertionError("timed out")
