"""Fixtures every test shares: a clean AWS environment that can reach nothing but loopback."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from support import ENV


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
