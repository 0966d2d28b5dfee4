"""Every failure the state machines found, replayed as the minimal sequence that shows it.

Each test is the sequence hypothesis printed (shrunk, then trimmed by hand to the steps that
matter), run through the same machine, so that every invariant of reference.py is checked
after every step exactly as in the random runs. The comment on each names the defect and
the invariant it breaks. A test here fails for as long as its defect is in the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from model.machine import AccessMachine, ClockMachine, FullMachine, GrantMachine, ModelMachine
from model.world import Fault

M = TypeVar("M", bound=ModelMachine)
# A vend function invoking a provider function in the same process shares Powertools' one
# metric set with it (in Lambda they are two processes): the provider's dimension replaces
# the vend function's, which Powertools warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Dimension 'provider' has already been added")

SM_DOWN = Fault("provider", "PutSecretValue", nth=0, code="ServiceUnavailable", every=True)


@contextmanager
def machine(kind: Callable[[], M]) -> Iterator[M]:
    state = kind()
    try:
        yield state
    finally:
        state.teardown()


def one_client_credentials_connection(state: Any, provider: str = "oauth2", **kw: object) -> None:
    """wps365 (authorized) and one other connection, every clock on the reference."""
    setup = {
        "extra": [provider],
        "vend_offsets": [0, 0],
        "provider_offsets": [0, 0],
        "lifetimes": [3600, 3600, 3600],
        "access": ["none", "none", "none"],
        "authorized": True,
    }
    setup.update(kw)
    state.setup(**setup)


# ------------------------------------------------------------------- the defects of issue 10


def test_defect_1_a_token_from_a_lost_lease_is_not_served_to_a_refused_caller() -> None:
    """Defect 1 [allowed-principals]: a holder whose lease was taken over returned its
    unsaved token without the connection's access list; its vend container kept that in
    memory and served it to the outsider the list refuses."""
    with machine(AccessMachine) as state:
        one_client_credentials_connection(state, access=["role", "role", "role"])
        state.slow_holder_starts(
            caller="worker", conn=1, vend=0, via=0, method="GET", point="after_answer"
        )
        assert state.holder is not None, "the holder never reached its pause"
        state.lease_taken_over(vend=1, via=1, fails=True)
        state.slow_holder_finishes(next_caller="outsider", next_min_ttl=None)


def test_defect_2_a_stale_fallback_refresh_token_does_not_outlive_an_authorization() -> None:
    """Defect 2 [grant-kept]: Secrets Manager refused a rotated refresh token, kept in the
    fallback place; a new authorization put a newer grant in the secret; the next refresh
    moved the stale fallback copy over it, and the newer grant was lost."""
    with machine(GrantMachine) as state:
        state.setup(
            extra=[], vend_offsets=[0, 0], provider_offsets=[0, 0], lifetimes=[3600],
            access=["none"], authorized=True,
        )  # fmt: skip
        state.refresh(caller="worker", conn=0, vend=0, via=0, body="none", wait=True, fault=SM_DOWN)
        state.authorize(code="good", via=0, fault=None)
        state.refresh(caller="worker", conn=0, vend=0, via=0, body="none", wait=True, fault=None)


def test_defect_2_nor_an_operators_new_grant() -> None:
    """Defect 2 [grant-kept], found by make soak: the same stale fallback copy, moved over
    the grant an operator put in a new secret version."""
    with machine(GrantMachine) as state:
        state.setup(
            extra=[], vend_offsets=[0, 0], provider_offsets=[0, 0], lifetimes=[3600],
            access=["none"], authorized=True,
        )  # fmt: skip
        state.advance_clock(seconds=3599)
        state.scheduled_run(conn=0, fault=SM_DOWN, via=0)
        state.operator_puts(change="new-grant", conn=0)
        state.scheduled_run(conn=0, fault=None, via=0)


def test_a_fallback_refresh_token_survives_a_restorable_deletion() -> None:
    """[grant-kept], found by make soak: the refresh token kept in the fallback place was
    deleted with the token table's item when the scheduled run found the secret awaiting
    deletion; restoring the secret brought back a spent grant."""
    with machine(FullMachine) as state:
        one_client_credentials_connection(state)
        state.aws_outage(operation="PutSecretValue")
        state.refresh(caller="worker", conn=0, vend=0, via=0, body="none", wait=True, fault=None)
        state.aws_outage(operation=None)
        state.operator_deletes(conn=0)
        state.scheduled_run(conn=0, via=0, fault=None)
        state.operator_restores(conn=0)
        state.get(caller="worker", conn=0, vend=0, via=0, min_ttl=None, fault=None)


@pytest.mark.parametrize("behaviour", ["zero", "negative", "past-jwt"])
@pytest.mark.parametrize("provider", ["oauth2", "azure"])
def test_defect_3_a_token_born_expired_is_never_served(behaviour: str, provider: str) -> None:
    """Defect 3 [never-expired]: an answer with expires_in 0 or -1 (a JWT whose exp is
    already past, for azure; a scripted JWT for past-jwt) was stored with the default
    lifetime, and served as valid for 55 minutes."""
    with machine(ClockMachine) as state:
        one_client_credentials_connection(state, provider)
        state.provider_behaves(conn=1, behaviour=behaviour)
        state.get(caller="worker", conn=1, vend=0, via=0, min_ttl=None, fault=None)


def test_defect_4_a_caller_with_no_identity_causes_no_provider_call() -> None:
    """[no-identity-no-call]: a request with no caller identity reached the provider function
    and made it fetch a token (for a connection without an access list)."""
    with machine(AccessMachine) as state:
        one_client_credentials_connection(state)
        state.get(caller="nobody", conn=1, vend=0, via=0, min_ttl=None, fault=None)


@pytest.mark.parametrize(
    ("provider", "part"),
    [
        ("oauth2", "authorization"),  # HTTP Basic: base64 of id:secret
        ("aspose", "request"),  # the secret in the query string, form-encoded
        ("dingtalk", "body"),  # a JSON body: the secret JSON-escaped
        ("azure", "all"),
        ("oauth2", "redirect"),  # a redirect whose Location repeats the request
    ],
)
def test_defect_5_secrets_echoed_by_the_provider_reach_no_answer_or_log(
    provider: str, part: str
) -> None:
    """Defect 5 [no-leaks]: a provider that repeats the request in its error answer put the
    client secret, encoded as the request carried it, into the caller's error body and the
    logs (the scrubbing replaced only the raw value)."""
    with machine(AccessMachine) as state:
        one_client_credentials_connection(state, provider)
        state.provider_behaves(conn=1, behaviour=f"echo:{part}")
        state.get(caller="worker", conn=1, vend=0, via=0, min_ttl=None, fault=None)


# ------------------------------------------------------------- found by the state machines


def test_an_answer_born_expired_does_not_lose_the_rotated_grant() -> None:
    """[grant-kept] The fix for defect 3 makes an already-expired answer a transient failure,
    and drops the rest of it: for wps365 the rotated refresh token in that answer, while the
    old one is already spent at the provider. The retry inside the attempt then spends the
    dead grant (invalid_grant) and the connection needs a new authorization."""
    with machine(ClockMachine) as state:
        one_client_credentials_connection(state)
        state.provider_behaves(conn=0, behaviour="negative")
        state.refresh(caller="worker", conn=0, vend=0, via=0, body="none", wait=True, fault=None)


def a_refresh_paused_before_its_secret_write(state: GrantMachine) -> None:
    """wps365 alone, authorized; past the authorization's cool-down, a worker's refresh
    holds the lease and pauses between the provider's answer and its secret write."""
    state.setup(
        extra=[], vend_offsets=[0, 0], provider_offsets=[0, 0], lifetimes=[3600],
        access=["none"], authorized=True,
    )  # fmt: skip
    state.advance_clock(seconds=121)
    state.slow_holder_starts(
        caller="worker", conn=0, vend=0, via=0, method="POST", point="after_answer"
    )
    assert state.holder is not None, "the holder never reached its pause"


def test_a_holder_past_its_lease_does_not_write_its_grant_over_a_newer_one() -> None:
    """[grant-kept] A holder paused between the provider's answer and its secret write
    (its lease taken over meanwhile) writes its rotated refresh token into the secret
    unconditionally: over the grant of an authorization made meanwhile, which is lost."""
    with machine(GrantMachine) as state:
        a_refresh_paused_before_its_secret_write(state)
        state.lease_taken_over(vend=1, via=1, fails=False)
        state.authorize(code="good", via=1, fault=None)
        state.slow_holder_finishes(next_caller=None, next_min_ttl=None)


def test_a_rotation_does_not_revert_an_operators_new_access_list() -> None:
    """[operator-edits-kept] The same blind write of the secret, with no lease lost: an
    operator restricts the connection to the worker's role while a refresh is between the
    provider's answer and its secret write; the rotation writes back the version it read,
    without the list: the connection is open to every caller again."""
    with machine(GrantMachine) as state:
        a_refresh_paused_before_its_secret_write(state)
        state.operator_puts(conn=0, change="list:role")
        state.slow_holder_finishes(next_caller=None, next_min_ttl=None)


def test_min_ttl_holds_when_the_holder_lost_its_lease() -> None:
    """[min-ttl], found by make soak: a holder whose lease was taken over (the other
    container's attempt failed) answers with the token in the table if it is merely valid,
    not if it meets the caller's min_ttl; the vend function serves it as fresh: 205 s left
    for min_ttl=300, neither stale nor shorter-lived than min_ttl."""
    with machine(AccessMachine) as state:
        one_client_credentials_connection(state, lifetimes=[3600, 600])
        state.get(caller="worker", conn=1, vend=0, via=0, min_ttl=None, fault=None)
        state.advance_clock(seconds=303)  # 297 s left: less than min_ttl and the skew
        state.slow_holder_starts(
            caller="worker", conn=1, vend=0, via=0, method="GET", point="after_answer"
        )
        assert state.holder is not None, "the holder never reached its pause"
        state.slow_holder_finishes(next_caller=None, next_min_ttl=None, taken_over="and-failing")


def test_a_token_the_provider_just_declared_dead_is_not_served_stale() -> None:
    """[never-expired], found by make test: DingTalk answers a refresh with the same token
    while it lives; here with expires_in=0, i.e. that very token is dead now. The answer is
    (rightly) not stored, but the cached copy of the same token, which the table still
    believes good for an hour, is then served as stale: a token the provider has just said is
    expired. (The sandbox shortens the token's life to the new lifetime; a real DingTalk is
    documented to extend it.)"""
    with machine(ClockMachine) as state:
        one_client_credentials_connection(state, "dingtalk")
        state.get(caller="worker", conn=1, vend=0, via=0, min_ttl=None, fault=None)
        state.provider_behaves(conn=1, behaviour="zero")
        state.refresh(caller="worker", conn=1, vend=0, via=0, body="none", wait=True, fault=None)


def test_the_cool_down_holds_between_containers_whose_clocks_differ() -> None:
    """[cool-down] The cool-down is compared with `last_attempt_at` on each container's own
    clock: a container 30 s ahead of the one that recorded the last attempt (clocks 15 s on
    either side of the reference, within the 30 s the docs allow) asks the provider again at
    once. The endpoint sees two attempts 0 s apart."""
    with machine(ClockMachine) as state:
        one_client_credentials_connection(state, provider_offsets=[-15, 15])
        state.get(caller="worker", conn=1, vend=0, via=0, min_ttl=None, fault=None)
        state.fanout_batch(conn=1, via=1, min_ttl=3600, newer=False, twice=False, fault=None)


def test_no_expired_token_with_clocks_30_s_either_side_of_the_providers() -> None:
    """[never-expired] With container clocks within ±30 s of the providers' (the brief's
    bound; 60 s between two containers), a provider function 30 s ahead records expiries
    30 s late, and a vend function 30 s behind serves the token 15 s after the provider
    considers it expired: CLOCK_SKEW_SECONDS covers one clock's offset, not two."""
    with machine(ClockMachine) as state:
        one_client_credentials_connection(state, vend_offsets=[-30, -30], provider_offsets=[30, 30])
        state.get(caller="worker", conn=1, vend=0, via=0, min_ttl=0, fault=None)
        state.advance_clock(seconds=3599)
        state.advance_clock(seconds=5)
        state.advance_clock(seconds=5)
        state.advance_clock(seconds=5)
        state.get(caller="worker", conn=1, vend=0, via=0, min_ttl=0, fault=None)
