"""What the fault tests of the refresh-token grant share."""

from __future__ import annotations

import pytest

from support import Stack


@pytest.fixture
def wps(stack: Stack) -> Stack:
    """A stack with wps365's demo connection authorized, and its refresher's retries not
    waiting."""
    stack.connect("wps365")
    stack.authorize()
    stack.refreshers["wps365"]._sleep = lambda _: None
    return stack
