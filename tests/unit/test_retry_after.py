"""Retry-After (RFC 9110 section 10.2.3), read one way by the provider functions and the
client: delay-seconds or an HTTP date, never negative, None for anything else."""

from __future__ import annotations

import pytest

from tokenvend_core.tokens import retry_after

NOW = 1_780_000_000.0  # 2026-05-28T20:26:40Z


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("Thu, 28 May 2026 20:27:40 GMT", 60.0),
        ("Thu, 28 May 2026 20:25:40 GMT", 0.0),  # a date already past
        ("soon", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(raw: str | None, expected: float | None) -> None:
    assert retry_after(raw, now=NOW) == expected
