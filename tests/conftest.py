"""Fixtures every test shares: a clean AWS environment that can reach nothing but loopback."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from support import ENV, Stack, build_stack, create_table
from tokenvend.sandbox import Sandbox


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA", "TOKENVEND_API_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Every line the functions log, formatted by Powertools exactly as Lambda would get it.
    (Powertools' own handler holds the stdout of the moment it was created, which pytest has
    replaced since, so the lines are taken from the logger itself.)"""
    from tokenvend_core.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger._logger.removeHandler(handler)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """The five providers' token endpoints on 127.0.0.1."""
    with Sandbox() as running:
        yield running


@pytest.fixture(scope="module")
def module_sandbox() -> Iterator[Sandbox]:
    """One sandbox for all of a module's tests, for modules that talk to it many times: such
    a module makes its `sandbox` this one, cleared (`reset`) before each test."""
    with Sandbox() as running:
        yield running


@pytest.fixture
def aws() -> Iterator[None]:
    """moto in this process, with the token table of template.yaml."""
    with mock_aws():
        create_table(boto3.client("dynamodb"))
        yield


@pytest.fixture
def make_stack(aws: None, sandbox: Sandbox) -> Callable[..., Stack]:
    """Deployments on the same AWS and sandbox, with settings of the test's choosing."""

    def make(**overrides: Any) -> Stack:
        return build_stack(sandbox, **overrides)

    return make


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()
