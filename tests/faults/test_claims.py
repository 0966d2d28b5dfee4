"""Promises of docs/reliability.md that no scenario elsewhere would notice breaking: the
cool-down kept across clocks that disagree, the memory cache's bound, the vend function's
table client, and the metric that says a fallback refresh token was superseded."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from support import TABLE, AwsFault, Stack
from tokenvend_core.settings import Settings
from tokenvend_core.vend import runtime
from tokenvend_core.vend.vendor import Vendor

DEFAULTS = Settings(table_name=TABLE)  # what a deployed function runs with

# Two containers' clocks, each within 30 s of true time: (the first's, the second's) offsets.
CLOCKS = [(-30, 30), (-30, 0), (0, 30), (0, 0), (30, -30)]


@pytest.mark.parametrize(("first", "second"), CLOCKS)
def test_containers_with_skewed_clocks_never_both_attempt_within_one_cool_down(
    make_stack: Callable[..., Stack], first: int, second: int
) -> None:
    """The last attempt is dated by the clock of the container that made it: a container
    whose clock is ahead of that one's keeps the cool-down `CLOCK_SKEW_SECONDS` longer, or
    it would reach the token endpoint again well within one cool-down of true time."""
    cool_down, skew = DEFAULTS.cool_down, DEFAULTS.clock_skew
    assert cool_down > 0 and skew >= second - first
    true_time = [time.time()]
    start = true_time[0]
    # Given two provider containers (with their vend containers) whose clocks disagree
    behind, ahead = (
        make_stack(cool_down=cool_down, clock=lambda o=offset: true_time[0] + o)
        for offset in (first, second)
    )
    behind.connect("oauth2")
    # When the first forces a refresh, and the second forces one at moments after it, all
    # within one cool-down of true time
    assert behind.vend("POST", "oauth2", body=None)[0] == 200
    assert behind.sandbox.calls("oauth2") == 1
    for later in (0.5, cool_down / 2, cool_down - 0.5):
        true_time[0] = start + later
        status, body, _ = ahead.vend("POST", "oauth2", body=None)
        # Then the second is given the first's token, and the provider is not asked again
        assert status == 200 and "stale" not in body, (later, body)
        assert behind.sandbox.calls("oauth2") == 1, later
    # And once the cool-down is over by both clocks, the second container does refresh
    true_time[0] = start + cool_down + skew + first - second + 0.5
    assert ahead.vend("POST", "oauth2", body=None)[0] == 200
    assert behind.sandbox.calls("oauth2") == 2


def test_a_warm_container_reads_the_table_again_after_memory_cache_seconds(
    make_stack: Callable[..., Stack],
) -> None:
    # Given a warm vend container that fetched a token and keeps it in memory
    warm = make_stack()
    since_start = [0.0]
    bound = warm.settings.memory_cache
    assert bound == DEFAULTS.memory_cache > 0
    warm.vendor = Vendor(
        warm.tokens,
        warm.invoker,
        memory_seconds=bound,
        skew=warm.settings.clock_skew,
        monotonic=lambda: since_start[0],
    )
    warm.vend_function._vendor = warm.vendor  # type: ignore[attr-defined]
    warm.connect("oauth2")
    status, first, _ = warm.vend("GET", "oauth2")
    assert status == 200
    # When another container refreshes the token underneath it
    other = make_stack()
    status, second, _ = other.vend("POST", "oauth2", body=None)
    assert status == 200 and second["access_token"] != first["access_token"]
    # Then the warm container serves its memory copy until the bound, and the table's after
    since_start[0] = bound - 0.5
    assert warm.vend("GET", "oauth2")[1]["access_token"] == first["access_token"]
    since_start[0] = bound
    assert warm.vend("GET", "oauth2")[1]["access_token"] == second["access_token"]


def test_the_table_client_makes_two_tries_of_one_second_to_connect_and_two_to_read(
    aws: None,
) -> None:
    vendor = runtime.build_vendor(Settings(table_name=TABLE))
    table = vendor._tokens._client.meta.config
    assert table.retries["total_max_attempts"] == 2
    assert table.connect_timeout == 1
    assert table.read_timeout == 2
    invoke = vendor._invoker._client.meta.config  # type: ignore[attr-defined]
    assert invoke.connect_timeout == 1
    # The invocation's budget is counted from the clients as built
    table_worst = table.retries["total_max_attempts"] * (table.connect_timeout + table.read_timeout)
    assert table_worst <= runtime.TABLE_WORST
    invoke_worst = invoke.connect_timeout + invoke.read_timeout + runtime.TABLE_WORST
    assert invoke_worst <= runtime.INVOKE_WORST


def test_a_superseded_fallback_refresh_token_is_measured(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a wps365 connection whose rotated refresh token went to the fallback place
    stack.connect("wps365")
    stack.authorize()
    stack.refreshers["wps365"]._sleep = lambda _: None
    fault = AwsFault(stack.secrets._client, "PutSecretValue", "ServiceUnavailable")
    assert stack.vend("POST", "wps365", body=None)[0] == 200
    fault.stop()
    kept = stack.tokens.get("wps365", "demo", consistent=True)
    assert kept is not None and kept.pending_refresh_token
    capfd.readouterr()
    # When a new authorization supersedes it, and the next refresh settles the two
    assert stack.authorize()["ok"] is True
    status, _, _ = stack.vend("POST", "wps365", body=None)
    assert status == 200
    # Then the drop is counted once
    out = capfd.readouterr().out.replace(" ", "")
    assert out.count('"RefreshTokenFallbackSuperseded":[1.0]') == 1
    state = stack.tokens.get("wps365", "demo", consistent=True)
    assert state is not None and state.pending_refresh_token is None
