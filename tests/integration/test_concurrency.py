"""Many concurrent vends of one connection with an empty cache, across several containers
(each with its own memory cache and provider functions): one request reaches the endpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from support import Stack, build_stack, create_table
from tokenvend.awslocal import MotoServer
from tokenvend.sandbox import Sandbox

CONTAINERS = 4
CALLERS = 48


@pytest.fixture
def containers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Stack]]:
    # moto in server mode: the containers share AWS across threads as they would in AWS.
    with MotoServer() as moto, Sandbox() as sandbox:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        create_table(boto3.client("dynamodb"))
        yield [build_stack(sandbox) for _ in range(CONTAINERS)]


@pytest.mark.parametrize("provider", ["dingtalk", "wps365", "oauth2"])
def test_a_stampede_causes_one_token_request(containers: list[Stack], provider: str) -> None:
    first = containers[0]
    first.connect(provider)
    if provider == "wps365":
        first.authorize()
        first.tokens.delete("wps365", "demo")  # an empty cache, with a grant in the secret
    calls_before = first.sandbox.calls(provider)
    barrier = threading.Barrier(CALLERS)

    def vend(i: int) -> tuple[int, str]:
        stack = containers[i % CONTAINERS]
        barrier.wait(timeout=10)
        status, body, _ = stack.vend("GET", provider)
        return status, body.get("access_token", body.get("error", {}).get("code"))

    with ThreadPoolExecutor(CALLERS) as pool:
        results = list(pool.map(vend, range(CALLERS)))

    assert {status for status, _ in results} == {200}
    assert len({token for _, token in results}) == 1
    assert first.sandbox.calls(provider) - calls_before == 1
