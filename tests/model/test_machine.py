"""The model-based runs: random sequences of callers, containers, clocks, operators, provider
behaviours and faults against the real handlers, every promise checked after every step
(machine.py). `make test` runs a fixed sample of each machine (about a minute); `make soak`
random samples of every machine for about ten minutes."""

from __future__ import annotations

import pytest

from model.machine import AccessMachine, ClockMachine, FullMachine, GrantMachine, run

# A vend function invoking a provider function in the same process shares Powertools' one
# metric set with it (in Lambda they are two processes): the provider's dimension replaces
# the vend function's, which Powertools warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Dimension 'provider' has already been added")


def test_clocks_leases_and_expiry() -> None:
    run(ClockMachine, examples=25, steps=30)


def test_callers_and_access_lists() -> None:
    run(AccessMachine, examples=25, steps=30)


def test_refresh_tokens_and_aws_failures() -> None:
    run(GrantMachine, examples=25, steps=30)


def test_everything_at_once() -> None:
    run(FullMachine, examples=8, steps=30)
