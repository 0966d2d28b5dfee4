"""Faults in combination: each test is a sequence an outside review found to break a promise
that every single-fault test kept. Each one names the defect it guards against."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import boto3
import pytest

from support import CALLER, REDIRECT_URI, AwsFault, Stack, build_stack, redeem_out_of_band
from tokenvend.sandbox import Fault
from tokenvend_core.audit import fingerprint
from tokenvend_core.errors import ProviderUnavailable
from tokenvend_core.need import Need
from tokenvend_core.refresh.endpoint import RetryPolicy, TokenEndpoint

OUTSIDER = "arn:aws:iam::123456789012:user/someone-else"
# A holder that waits for a slow token endpoint (the shared FAST policy gives up after 1 s).
PATIENT = RetryPolicy(base=0.01, cap=0.05, max_tries=1, connect_timeout=1.0, read_timeout=4.0)


def test_lost_lease_never_hands_back_a_token_without_the_access_list(
    make_stack: Callable[..., Stack],
) -> None:
    """Defect: a holder whose lease was taken over returned its unsaved token without the
    connection's allowed_principals; the vend container kept it in memory and served it to
    a caller the list refuses."""
    # Given a connection only CALLER may use, and a token endpoint that is slow once, then down
    slow = make_stack(lease_seconds=1, attempt_deadline=5, memory_cache=300)
    slow.refreshers["oauth2"].endpoint = TokenEndpoint(policy=PATIENT)
    slow.connect("oauth2", allowed_principals=[CALLER])
    slow.sandbox.inject(
        "oauth2",
        Fault(status=200, body='{"access_token": "unsaved-token", "expires_in": 3600}', delay=2),
        *[Fault.plain(503)] * 8,
    )
    answers: dict[str, tuple[int, dict[str, object]]] = {}

    def first_caller() -> None:
        status, body, _ = slow.vend("GET", "oauth2")
        answers["first"] = (status, body)

    # When the slow holder's lease runs out and another container's attempt fails meanwhile
    thread = threading.Thread(target=first_caller)
    thread.start()
    time.sleep(1.3)
    other = build_stack(slow.sandbox, lease_seconds=30)
    assert other.vend("GET", "oauth2")[0] == 503
    thread.join(timeout=15)
    # Then the unsaved token reaches nobody, and the outsider is refused by the same container
    status, body = answers["first"]
    assert "unsaved-token" not in str(body)
    status, body, _ = slow.vend("GET", "oauth2", caller=OUTSIDER)
    assert status == 403 and "unsaved-token" not in str(body)
    # and the audit trail tells the two attempts apart: the token fetched under the lost
    # lease was never stored (superseded), the other container's attempt failed
    (unsaved,) = slow.audit.of("refresh_attempt")
    assert (unsaved["outcome"], unsaved["fingerprint"]) == (
        "superseded",
        fingerprint("unsaved-token"),
    )
    assert [r["outcome"] for r in other.audit.of("refresh_attempt")] == ["failed"]
    assert [(r["outcome"], r["fingerprint"]) for r in slow.audit.of("vend")] == [
        ("refused", None),
        ("refused", None),
    ]


def test_a_new_access_list_is_in_force_after_the_next_scheduled_run(stack: Stack) -> None:
    """The table's copy of the access list follows the secret in force: a new secret version
    is refreshed by the next scheduled run, which stores its list beside the token."""
    stack.connect("dingtalk")
    assert stack.vend("GET", "dingtalk", caller=OUTSIDER)[0] == 200
    value = stack.secrets.get("dingtalk", "demo")
    assert value is not None
    stack.put_secret("dingtalk", "demo", {**value.value, "allowed_principals": [CALLER]})
    assert stack.call_provider("dingtalk", {"action": "schedule"})["ok"] is True
    stack.vendor.forget()
    assert stack.vend("GET", "dingtalk", caller=OUTSIDER)[0] == 403
    assert stack.vend("GET", "dingtalk")[0] == 200
    state = stack.tokens.get("dingtalk", "demo", public=True)
    assert state is not None and state.allowed_principals == (CALLER,)


def test_a_provider_call_puts_the_secrets_access_list_beside_a_token_it_does_not_replace(
    stack: Stack,
) -> None:
    """A provider function that finds the need already met (another container refreshed)
    still leaves the list of the secret in force beside the token it points the vend
    function at."""
    stack.connect("dingtalk")
    assert stack.vend("GET", "dingtalk")[0] == 200
    value = stack.secrets.get("dingtalk", "demo")
    assert value is not None
    stack.put_secret("dingtalk", "demo", {**value.value, "allowed_principals": [CALLER]})
    answer = stack.call_provider(
        "dingtalk", {"action": "refresh", "connection": "demo", "min_ttl": 0}
    )
    assert answer["ok"] is True and stack.sandbox.calls("dingtalk") == 1
    stack.vendor.forget()
    assert stack.vend("GET", "dingtalk", caller=OUTSIDER)[0] == 403


def test_a_caller_with_no_identity_gets_nothing_and_costs_no_provider_call(stack: Stack) -> None:
    stack.connect("aspose")
    for method in ("GET", "POST"):
        status, body, _ = stack.vend(method, "aspose", caller="")
        assert status == 403 and body["error"]["code"] == "forbidden"
    assert stack.sandbox.calls("aspose") == 0


def test_a_direct_invocation_gets_no_token(stack: Stack) -> None:
    """Defect: a provider function handed its token to whoever invoked it, skipping
    allowed_principals when the payload named no caller."""
    stack.connect("azure", allowed_principals=[CALLER])
    answer = stack.call_provider("azure", {"action": "refresh", "connection": "demo"})
    state = stack.tokens.get("azure", "demo", consistent=True)
    assert state is not None and state.access_token
    assert answer["ok"] is True and answer["version"] == state.version
    assert state.access_token not in str(answer)
    # The vend function serves it to the allowed caller only.
    assert stack.vend("GET", "azure")[1]["access_token"] == state.access_token
    assert stack.vend("GET", "azure", caller=OUTSIDER)[0] == 403


def test_authorize_takes_no_redirect_uri_but_the_connections_own(stack: Stack) -> None:
    stack.connect("wps365")
    secret = stack.secrets.get("wps365", "demo")
    assert secret is not None
    code = stack.sandbox.authorize(secret.value["client_id"], REDIRECT_URI)
    answer = stack.call_provider(
        "wps365",
        {
            "action": "authorize",
            "connection": "demo",
            "code": code,
            "redirect_uri": "https://attacker.example.net/cb",
        },
    )
    assert answer["ok"] is False and answer["error"]["code"] == "invalid_request"
    assert stack.sandbox.calls("wps365") == 0
    same = {"action": "authorize", "connection": "demo", "code": code}
    assert stack.call_provider("wps365", {**same, "redirect_uri": REDIRECT_URI})["ok"] is True


# -- the fallback refresh token against whatever supersedes it --------------------------------


def _grant_in_secret(stack: Stack) -> str | None:
    secret = stack.secrets.get("wps365", "demo")
    assert secret is not None
    return secret.value.get("refresh_token")


def _live_grant(stack: Stack) -> str | None:
    return stack.sandbox.refresh_token_of("wps365-demo-client")


def _rotate_into_fallback(stack: Stack) -> str:
    fault = AwsFault(stack.secrets._client, "PutSecretValue", "ServiceUnavailable")
    assert stack.vend("POST", "wps365", body=None)[0] == 200
    fault.stop()
    state = stack.tokens.get("wps365", "demo", consistent=True)
    assert state is not None and state.pending_refresh_token == _live_grant(stack)
    return state.pending_refresh_token


def _assert_a_refresh_spends(stack: Stack, grant: str | None) -> None:
    """A forced refresh spends `grant` (the provider rotates it into the secret), and the
    fallback it superseded is gone."""
    status, body, _ = stack.vend("POST", "wps365", body=None)
    assert status == 200 and "stale" not in body
    assert _grant_in_secret(stack) == _live_grant(stack) != grant
    state = stack.tokens.get("wps365", "demo", consistent=True)
    assert state is not None and state.pending_refresh_token is None


def test_an_authorization_supersedes_the_fallback_refresh_token(wps: Stack) -> None:
    """Defect: pending_refresh_token outlived a successful authorize; the next refresh moved
    the old grant over the new one and spent it."""
    _rotate_into_fallback(wps)
    # The operator authorizes again (say, as another user): a new grant in the secret.
    assert wps.authorize()["ok"] is True
    new_grant = _grant_in_secret(wps)
    assert new_grant == _live_grant(wps)
    # The new grant was spent (and rotated), not the superseded one.
    _assert_a_refresh_spends(wps, new_grant)


def test_an_operators_new_version_with_the_old_grant_keeps_the_fallback(wps: Stack) -> None:
    """A new secret version that only edits other fields (here, the access list) does not
    supersede the grant: the fallback is still the newest refresh token."""
    pending = _rotate_into_fallback(wps)
    secret = wps.secrets.get("wps365", "demo")
    assert secret is not None
    wps.put_secret("wps365", "demo", {**secret.value, "allowed_principals": [CALLER]})
    assert wps.vend("POST", "wps365", body=None)[0] == 200
    assert _grant_in_secret(wps) == _live_grant(wps) != pending
    secret = wps.secrets.get("wps365", "demo")
    assert secret is not None and secret.value["allowed_principals"] == [CALLER]


def test_an_operators_new_grant_supersedes_the_fallback(wps: Stack) -> None:
    """An operator who seeds a refresh token obtained elsewhere supersedes the fallback:
    the operator's grant is spent, and the superseded one is not resurrected."""
    _rotate_into_fallback(wps)
    secret = wps.secrets.get("wps365", "demo")
    assert secret is not None
    seeded = redeem_out_of_band(
        wps.sandbox, secret.value["client_id"], secret.value["client_secret"]
    )
    wps.put_secret("wps365", "demo", {**secret.value, "refresh_token": seeded})
    _assert_a_refresh_spends(wps, seeded)


def test_a_secret_restored_after_deletion_keeps_its_fallback_refresh_token(wps: Stack) -> None:
    pending = _rotate_into_fallback(wps)
    client = boto3.client("secretsmanager")
    name = wps.secrets.name("wps365", "demo")
    client.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    assert wps.call_provider("wps365", {"action": "schedule"})["ok"] is True
    # Nothing serves the deleted connection's token any more (once a vend container's
    # memory, MemoryCacheSeconds, has let it go) ...
    wps.vendor.forget()
    assert wps.vend("GET", "wps365")[0] == 404
    state = wps.tokens.get("wps365", "demo", consistent=True)
    assert state is not None and state.access_token is None
    assert state.pending_refresh_token == pending
    # ... and restoring the secret loses no grant.
    client.restore_secret(SecretId=name)
    wps.vendor.forget()
    status, body, _ = wps.vend("GET", "wps365")
    assert status == 200 and "stale" not in body
    assert _grant_in_secret(wps) == _live_grant(wps)


def test_refresh_after_a_takeover_serves_only_what_the_table_holds(
    make_stack: Callable[..., Stack],
) -> None:
    """The refresher answers a lost lease with the table's token, or with nothing."""
    stack = make_stack(lease_seconds=1, attempt_deadline=5)
    stack.refreshers["oauth2"].endpoint = TokenEndpoint(policy=PATIENT)
    stack.connect("oauth2")
    stack.sandbox.inject(
        "oauth2",
        Fault(status=200, body='{"access_token": "late", "expires_in": 3600}', delay=2),
        *[Fault.plain(503)] * 8,
    )
    outcome: dict[str, object] = {}

    def refresh() -> None:
        try:
            outcome["state"] = stack.refreshers["oauth2"].refresh("demo", Need(min_ttl=300))
        except ProviderUnavailable as error:
            outcome["error"] = error

    thread = threading.Thread(target=refresh)
    thread.start()
    time.sleep(1.3)
    other = build_stack(stack.sandbox, lease_seconds=30)
    with pytest.raises(ProviderUnavailable):  # the takeover's own attempt fails
        other.refreshers["oauth2"].refresh("demo", Need(min_ttl=300))
    thread.join(timeout=15)
    assert "state" not in outcome
    assert getattr(outcome["error"], "code", None) == "provider_unavailable"


def test_a_dead_access_token_with_a_rotated_refresh_token_keeps_the_refresh_token(
    wps: Stack,
) -> None:
    """Found by the model-based suite: an answer whose access token is already dead, but
    which rotated the grant, lost the new refresh token (the answer was thrown away whole, and
    the attempt retried with the old grant)."""
    rotated = "rt-rotated-alongside-a-dead-token"
    wps.sandbox.reset()
    wps.sandbox.inject(
        "wps365",
        Fault.success(
            {
                "access_token": "dead-on-arrival",
                "expires_in": 0,
                "token_type": "bearer",
                "refresh_token": rotated,
                "refresh_expires_in": 2592000,
            }
        ),
    )
    status, body, _ = wps.vend("POST", "wps365", body=None)
    assert "dead-on-arrival" not in str(body)
    assert status in (200, 503) and (status == 503 or body.get("stale") is True)
    assert wps.sandbox.calls("wps365") == 1  # never retried with the grant it replaced
    assert _grant_in_secret(wps) == rotated
