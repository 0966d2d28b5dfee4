"""Promise 2: one refresh attempt per connection at a time across containers, none more often
than the cool-down; a dead holder blocks no longer than its lease; a slow holder whose lease
ran out cannot overwrite a newer token (fencing)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from support import Stack, build_stack, create_table
from tokenvend.awslocal import MotoServer
from tokenvend.sandbox import Fault, Sandbox
from tokenvend_core.need import Need

SKEWS = (-30, -10, 0, 10, 30)


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., list[Stack]]]:
    """Containers that share AWS through moto's server, each with its own clock."""
    with MotoServer() as moto, Sandbox() as sandbox:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        create_table(boto3.client("dynamodb"))

        def make(**overrides: object) -> list[Stack]:
            return [
                build_stack(sandbox, clock=lambda s=skew: time.time() + s, **overrides)
                for skew in SKEWS
            ]

        yield make


def test_forced_refreshes_from_every_container_make_one_attempt_per_cool_down(
    fleet: Callable[..., list[Stack]],
) -> None:
    stacks = fleet(cool_down=30, lease_seconds=60)
    stacks[0].connect("oauth2")
    # The first token, fetched well over a cool-down (and the clocks' spread) ago.
    earlier = build_stack(stacks[0].sandbox, clock=lambda: time.time() - 200, cool_down=30)
    assert earlier.vend("GET", "oauth2")[0] == 200
    stacks[0].sandbox.reset()
    stacks[0].sandbox.inject("oauth2", Fault.success(
        {"access_token": "slow-one", "expires_in": 3600}, status=200
    ))  # fmt: skip
    barrier = threading.Barrier(40)

    def refresh(i: int) -> int:
        barrier.wait(timeout=10)
        status, _, _ = stacks[i % len(stacks)].vend("POST", "oauth2", body=None)
        return status

    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(refresh, range(40)))
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= 1
    assert stacks[0].sandbox.calls("oauth2") == 1


def test_a_dead_holder_blocks_only_until_its_lease_expires(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(lease_seconds=1, lease_wait=5)
    stack.connect("dingtalk")
    # A function took the lease and died.
    assert stack.tokens.try_lease(
        "dingtalk", "demo", "dead-container", time.time(), seconds=1, cool_down=0
    )
    status, body, _ = stack.vend("GET", "dingtalk")
    assert status == 200 and body["access_token"]
    state = stack.tokens.get("dingtalk", "demo", consistent=True)
    assert state is not None and state.lease_owner is None and state.version == 1


def test_a_holder_that_finds_the_lease_taken_waits_for_the_result(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(lease_seconds=30, lease_wait=5)
    stack.connect("oauth2")
    stack.sandbox.inject(
        "oauth2", Fault(status=200, body='{"access_token": "first", "expires_in": 3600}', delay=0.5)
    )
    results: list[str] = []

    def vend() -> None:
        _, body, _ = stack.vend("GET", "oauth2")
        results.append(body["access_token"])

    other = build_stack(stack.sandbox)  # a second container, its own memory
    threads = [threading.Thread(target=vend)]
    threads[0].start()
    time.sleep(0.1)
    _, body, _ = other.vend("GET", "oauth2")
    threads[0].join()
    assert results == ["first"] and body["access_token"] == "first"
    assert stack.sandbox.calls("oauth2") == 1


def test_fencing_a_slow_holder_cannot_overwrite_a_newer_token(
    make_stack: Callable[..., Stack],
) -> None:
    slow = make_stack(lease_seconds=1, attempt_deadline=5)
    slow.connect("oauth2")
    fast = build_stack(slow.sandbox, lease_seconds=30)
    slow.sandbox.inject(
        "oauth2",
        Fault(
            status=200,
            body='{"access_token": "from-the-slow-holder", "expires_in": 3600}',
            delay=2.0,
        ),
    )
    outcome: dict[str, str] = {}

    def slow_refresh() -> None:
        state = slow.refreshers["oauth2"].refresh("demo", Need(min_ttl=300))
        outcome["slow"] = state.access_token or ""

    thread = threading.Thread(target=slow_refresh)
    thread.start()
    time.sleep(1.3)  # the slow holder's lease has run out; it is still waiting on the endpoint
    newer = fast.refreshers["oauth2"].refresh("demo", Need(min_ttl=300))
    thread.join(timeout=10)
    stored = slow.tokens.get("oauth2", "demo", consistent=True)
    assert stored is not None and stored.access_token == newer.access_token
    assert stored.access_token != "from-the-slow-holder"
    assert stored.version == 1  # only the newer write landed
    assert outcome["slow"] == newer.access_token  # and the slow caller was given the newer one


def test_cool_down_holds_for_failures_too(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(cool_down=30)
    stack.connect("azure")
    stack.sandbox.inject("azure", *[Fault.plain(503)] * 20)
    answers = [stack.vend("GET", "azure") for _ in range(5)]
    assert {status for status, _, _ in answers} == {503}
    assert all(int(headers["Retry-After"]) >= 1 for _, _, headers in answers)
    assert stack.sandbox.calls("azure") == 4  # one attempt (its own retries), then nothing
