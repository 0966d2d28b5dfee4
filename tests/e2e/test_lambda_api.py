"""The functions behind the Lambda Invoke API, as boto3's lambda client calls them."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError
from e2e.harness import LocalProcess, put_secret, secret_of, token_item, wait_for

REFRESH = {"action": "refresh", "connection": "demo", "min_ttl": 60}


@pytest.mark.parametrize(
    "name",
    [
        "tokenvend-dingtalk",
        "arn:aws:lambda:us-east-1:123456789012:function:tokenvend-dingtalk",
        "arn:aws:lambda:us-east-1:123456789012:function:tokenvend-dingtalk:$LATEST",
        "DingtalkFunction",  # the logical id, as sam local start-lambda takes it
    ],
)
def test_a_function_is_invoked_by_name_arn_or_logical_id(stack: LocalProcess, name: str) -> None:
    answer = stack.client("lambda").invoke(FunctionName=name, Payload=json.dumps(REFRESH))
    result = json.loads(answer["Payload"].read())
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
    assert result["ok"] is True
    # A direct invocation learns which version holds the token, never the token itself.
    assert isinstance(result["version"], int) and result["version"] >= 1
    assert "access_token" not in json.dumps(result)


def test_an_unknown_function_is_not_found(stack: LocalProcess) -> None:
    with pytest.raises(ClientError) as raised:
        stack.client("lambda").invoke(FunctionName="tokenvend-nope", Payload=b"{}")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_a_payload_that_is_not_json_is_refused(stack: LocalProcess) -> None:
    with pytest.raises(ClientError) as raised:
        stack.client("lambda").invoke(FunctionName="tokenvend-aspose", Payload=b"{not json")
    assert raised.value.response["Error"]["Code"] == "InvalidRequestContentException"


def test_event_and_dry_run_invocations(stack: LocalProcess) -> None:
    client = stack.client("lambda")
    mark = stack.mark()
    event = client.invoke(
        FunctionName="tokenvend-azure", InvocationType="Event", Payload=json.dumps(REFRESH)
    )
    dry = client.invoke(
        FunctionName="tokenvend-azure", InvocationType="DryRun", Payload=json.dumps(REFRESH)
    )
    assert event["StatusCode"] == 202
    assert dry["StatusCode"] == 204
    wait_for(lambda: stack.invocations("tokenvend-azure", mark), 10, "the Event invocation")
    assert len(stack.invocations("tokenvend-azure", mark)) == 1  # the dry run ran nothing


def test_a_fan_out_queue_feeds_its_provider_function(stack: LocalProcess) -> None:
    # Given a connection nobody asked for, and the oauth2 function's fan-out queue
    put_secret(stack, "oauth2", "fanned-out", secret_of(stack, "oauth2", "demo"))
    sqs = stack.client("sqs")
    urls = [url for url in sqs.list_queues()["QueueUrls"] if url.endswith("Oauth2RefreshQueue")]
    assert len(urls) == 1

    # When a batch naming it is queued, as a scheduled run past its threshold does
    body = {"connections": [{"connection": "fanned-out", "min_ttl": 0}]}
    sqs.send_message(QueueUrl=urls[0], MessageBody=json.dumps(body))

    # Then the function is invoked with it (the event source mapping) and refreshes it,
    # and the message is deleted
    wait_for(lambda: token_item(stack, "oauth2", "fanned-out"), 10, "the queued refresh")

    def drained() -> bool:
        attributes = sqs.get_queue_attributes(
            QueueUrl=urls[0],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return set(attributes.values()) == {"0"}

    wait_for(drained, 10, "the message's deletion")
