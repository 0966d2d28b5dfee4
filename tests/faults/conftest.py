from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from support import Stack, build_stack, create_table
from tokenvend.sandbox import Sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        create_table(boto3.client("dynamodb"))
        yield


@pytest.fixture
def make_stack(aws: None, sandbox: Sandbox) -> Callable[..., Stack]:
    def make(**overrides: Any) -> Stack:
        return build_stack(sandbox, **overrides)

    return make


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()


class AwsFault:
    """Botocore-level failure injection: the named operation of a client raises, for the
    next `times` calls (or always), an error AWS really answers with."""

    def __init__(self, client: Any, operation: str, code: str, *, times: int | None = None,
                 when: Callable[[dict[str, Any]], bool] | None = None) -> None:  # fmt: skip
        self.client = client
        self.event = f"before-call.*.{operation}"
        self.code = code
        self.left = times
        self.when = when
        self.raised = 0
        client.meta.events.register(self.event, self)

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        if self.left == 0 or (self.when is not None and not self.when(params)):
            return
        if self.left is not None:
            self.left -= 1
        self.raised += 1
        raise ClientError({"Error": {"Code": self.code, "Message": "injected"}}, self.event)

    def stop(self) -> None:
        self.client.meta.events.unregister(self.event, self)
