"""Unsigned, badly signed and stale requests are refused with 403 before any function runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
from botocore.credentials import Credentials
from e2e.harness import LocalProcess, put_secret, secret_of, table_item, token_item, wait_for

VEND = "tokenvend-vend"


@pytest.fixture(scope="module")
def probe(stack: LocalProcess) -> str:
    """An aspose connection nobody has asked for yet: nothing cached, no token fetched."""
    put_secret(stack, "aspose", "probe", secret_of(stack, "aspose", "demo"))
    return "probe"


def bad_requests(stack: LocalProcess, path: str) -> dict[str, requests.Response]:
    good = stack.credentials
    now = datetime.now(UTC)
    url, headers = stack.signed("GET", path)  # valid, never sent as it is

    def send(url: str, headers: dict[str, str]) -> requests.Response:
        return requests.get(url, headers=headers, timeout=10)

    return {
        "unsigned": stack.call("GET", path, sign=False),
        "wrong secret key": stack.call(
            "GET", path, credentials=Credentials(good.access_key, good.secret_key + "x")
        ),
        "unknown access key": stack.call(
            "GET", path, credentials=Credentials("AKIAIOSFODNN7EXAMPLE", good.secret_key)
        ),
        "signed for another path": send(url.replace("/probe", "/demo"), headers),
        "signed without the query": send(url + "?min_ttl=0", headers),
        "signature altered": send(
            url, {**headers, "Authorization": headers["Authorization"][:-4] + "0000"}
        ),
        "no signature": send(
            url, {**headers, "Authorization": headers["Authorization"].split(", Signature")[0]}
        ),
        "signed ten minutes ago": stack.call("GET", path, signed_at=now - timedelta(minutes=10)),
        "signed ten minutes ahead": stack.call("GET", path, signed_at=now + timedelta(minutes=10)),
        "signed for another service": send(
            url, {**headers, "Authorization": headers["Authorization"].replace("execute-api", "s3")}
        ),
    }


def test_bad_requests_get_403_and_never_reach_a_function(stack: LocalProcess, probe: str) -> None:
    # Given
    path = f"/tokens/aspose/{probe}"
    calls = stack.sandbox("GET", "calls")["aspose"]
    mark = stack.mark()

    # When
    answers = bad_requests(stack, path)

    # Then each is refused by the gateway with the service's error shape
    for case, answer in answers.items():
        assert answer.status_code == 403, (case, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "forbidden", case
        assert error["message"], case
    stale = answers["signed ten minutes ago"].json()["error"]["message"]
    assert stale.startswith("Signature expired"), stale
    # ... each logged as refused, and nothing behind it moved: no function ran (its lines
    # would come before the refusals'), no token was fetched or cached
    wait_for(
        lambda: len([r for r in stack.log_records(mark) if r.get("refused")]) == len(answers),
        5,
        "the refusals' log lines",
    )
    assert stack.invocations(VEND, since=mark) == []
    assert stack.sandbox("GET", "calls")["aspose"] == calls
    assert table_item(stack, "aspose", probe) is None

    # When the same request comes properly signed
    answer = stack.call("GET", path)

    # Then it goes all the way through (so the checks above can fail)
    assert answer.status_code == 200, answer.text
    wait_for(lambda: stack.invocations(VEND, since=mark), 5, "the vend function's invocation")
    assert stack.sandbox("GET", "calls")["aspose"] == calls + 1
    assert token_item(stack, "aspose", probe) is not None


def test_an_unknown_route_is_refused_like_an_unsigned_request(stack: LocalProcess) -> None:
    for method, path in (("GET", "/tokens"), ("DELETE", "/tokens/aspose/demo"), ("GET", "/")):
        answer = stack.call(method, path)
        assert answer.status_code == 403, (method, path)
        assert answer.json() == {
            "error": {"code": "forbidden", "message": "Missing Authentication Token"}
        }


def test_a_signed_body_is_verified(stack: LocalProcess) -> None:
    # Given a refresh request signed over one body
    url, headers = stack.signed("POST", "/tokens/oauth2/demo/refresh", body=b"{}")

    # When another body is sent with that signature
    answer = requests.post(
        url, headers=headers, data=b'{"rejected_token_sha256": null}', timeout=10
    )

    # Then
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
