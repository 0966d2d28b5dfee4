from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
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
