from __future__ import annotations

from collections.abc import Iterator

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
def stack(aws: None, sandbox: Sandbox) -> Stack:
    return build_stack(sandbox)
