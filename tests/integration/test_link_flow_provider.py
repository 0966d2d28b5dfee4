"""The link flow on the provider side, through the real provider function on moto (KMS's HMAC
key, DynamoDB, Secrets Manager) and the sandbox: `connect` makes a link, `callback` checks
its state and redeems the code as `authorize` does. Nothing changes unless the state is
valid, unexpired and unused, and a code that does not redeem leaves the connection as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from servers import LoopbackServer, send_json
from support import (
    FAST,
    REDIRECT_URI,
    FakeClock,
    LambdaContext,
    Stack,
    connection_snapshot,
    load_function,
    secret_forms,
    state_of,
)
from tokenvend_core.aws.link_key import KmsLinkKey
from tokenvend_core.aws.store import LISTING, PUBLIC
from tokenvend_core.catalogue.spec import spec_for
from tokenvend_core.refresh import link
from tokenvend_core.refresh.endpoint import TokenEndpoint
from tokenvend_core.refresh.refresher import Refresher

CONNECTION = "demo"


@dataclass
class Flow:
    stack: Stack
    key_id: str
    clock: FakeClock
    client_id: str
    secret: dict[str, Any]

    def connect(self, connection: str = CONNECTION, provider: str = "wps365") -> dict[str, Any]:
        return self.stack.call_provider(provider, {"action": "connect", "connection": connection})

    def link(self) -> str:
        answer = self.connect()
        assert answer["ok"] is True, answer
        return str(answer["url"])

    def code(self) -> str:
        """What the provider's redirect carries once the user consented (the sandbox's
        control API stands in for the consent page)."""
        return self.stack.sandbox.authorize(self.client_id, REDIRECT_URI)

    def callback(
        self, state: str, code: str | None = None, error: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        provider = kw.get("provider", "wps365")
        return self.stack.call_provider(
            provider, {"action": "callback", "state": state, "code": code, "error": error}
        )

    def snapshot(self) -> tuple[Any, ...]:
        return connection_snapshot(self.stack, "wps365", CONNECTION)


def new_link_key() -> str:
    kms = boto3.client("kms")
    key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    return str(key["KeyMetadata"]["KeyId"])


@pytest.fixture
def flow(make_stack: Callable[..., Stack]) -> Flow:
    clock = FakeClock(time.time())
    key_id = new_link_key()
    stack = make_stack(link_key_id=key_id, clock=clock)
    secret = stack.connect("wps365")
    return Flow(stack, key_id, clock, secret["client_id"], secret)


def test_connect_answers_a_link_to_the_providers_authorization_endpoint(flow: Flow) -> None:
    answer = flow.connect()
    assert set(answer) == {"ok", "url", "expires_at"} and answer["ok"] is True
    parts = urlsplit(answer["url"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://openapi.wps.cn/oauth2/auth"
    query = parse_qs(parts.query)
    assert sorted(query) == ["client_id", "redirect_uri", "response_type", "state"]
    assert query["client_id"] == [flow.client_id] and query["redirect_uri"] == [REDIRECT_URI]
    assert query["response_type"] == ["code"]
    expires = datetime.strptime(answer["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expires.timestamp() == int(flow.clock.now) + 600
    said = link.read_state(KmsLinkKey(boto3.client("kms"), flow.key_id), query["state"][0])
    assert said is not None and (said.provider, said.connection) == ("wps365", CONNECTION)
    # The link is the connection item's, where the vend function does not read.
    assert "link_nonce" not in PUBLIC + LISTING and "link_expires_at" not in PUBLIC + LISTING
    assert flow.stack.sandbox.calls("wps365") == 0


def test_a_connections_scope_and_authorize_url_go_into_the_link(flow: Flow) -> None:
    own = flow.stack.sandbox.token_url("wps365").rsplit("/", 1)[0] + "/authorize"
    flow.stack.put_secret(
        "wps365", CONNECTION, {**flow.secret, "authorize_url": own, "scope": "user_info"}
    )
    url = flow.link()
    assert url.startswith(own + "?")
    assert parse_qs(urlsplit(url).query)["scope"] == ["user_info"]


def test_a_valid_callback_connects_caches_the_token_and_keeps_the_grant(flow: Flow) -> None:
    state = state_of(flow.link())
    answer = flow.callback(state, flow.code())
    assert answer["ok"] is True, answer
    assert set(answer) == {"ok", "provider", "connection", "expires_at"}
    assert (answer["provider"], answer["connection"]) == ("wps365", CONNECTION)
    secret = flow.stack.secrets.get("wps365", CONNECTION)
    assert secret is not None
    assert secret.value["refresh_token"] == flow.stack.sandbox.refresh_token_of(flow.client_id)
    status, body, _ = flow.stack.vend("GET", "wps365")
    assert status == 200 and flow.stack.sandbox.is_valid(body["access_token"])
    assert flow.stack.sandbox.calls("wps365") == 1  # the exchange's token is the one served
    state_after = flow.stack.tokens.get("wps365", CONNECTION, consistent=True)
    assert state_after is not None and state_after.error_code is None


def test_the_same_link_twice_is_used_and_changes_nothing(flow: Flow) -> None:
    state = state_of(flow.link())
    assert flow.callback(state, flow.code())["ok"] is True
    before, calls = flow.snapshot(), flow.stack.sandbox.calls("wps365")
    answer = flow.callback(state, flow.code())
    assert answer == {
        "ok": False,
        "error": {"code": "link_used", "message": answer["error"]["message"]},
    }
    assert flow.snapshot() == before and flow.stack.sandbox.calls("wps365") == calls


def test_a_connection_retired_for_deletion_keeps_no_link(flow: Flow) -> None:
    # Given a link, then the connection's secret scheduled for deletion (the schedule retires
    # its item), then the secret restored
    state = state_of(flow.link())
    assert flow.stack.tokens.retire("wps365", CONNECTION)
    # When the old link comes back, it no longer works: the restored connection needs a new one
    answer = flow.callback(state, flow.code())
    assert answer["ok"] is False and answer["error"]["code"] == "link_used"


def test_a_newer_link_supersedes_the_older(flow: Flow) -> None:
    older = state_of(flow.link())
    newer = state_of(flow.link())
    before = flow.snapshot()
    assert flow.callback(older, flow.code())["error"]["code"] == "link_used"
    assert flow.snapshot() == before and flow.stack.sandbox.calls("wps365") == 0
    assert flow.callback(newer, flow.code())["ok"] is True


def test_an_expired_link_changes_nothing(flow: Flow) -> None:
    state = state_of(flow.link())
    flow.clock.now += 601
    before = flow.snapshot()
    answer = flow.callback(state, flow.code())
    assert answer["ok"] is False and answer["error"]["code"] == "link_expired"
    assert flow.snapshot() == before and flow.stack.sandbox.calls("wps365") == 0


def test_a_stack_may_give_links_a_shorter_life(make_stack: Callable[..., Stack]) -> None:
    # Given a stack whose links live 30 s (the template's LinkLifetimeSeconds)
    clock = FakeClock(time.time())
    stack = make_stack(link_key_id=new_link_key(), clock=clock, link_lifetime=30)
    secret = stack.connect("wps365")
    flow = Flow(stack, stack.settings.link_key_id, clock, secret["client_id"], secret)
    # When a link is made, it ends 30 s later, and is expired after that
    answer = flow.connect()
    expires = datetime.strptime(answer["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expires.timestamp() == int(clock.now) + 30
    clock.now += 31
    assert flow.callback(state_of(answer["url"]), flow.code())["error"]["code"] == "link_expired"


@pytest.mark.parametrize(
    "forge",
    [
        lambda s: s.split(".")[0] + "." + link.b64url(secrets.token_bytes(32)),
        lambda s: link.b64url(
            json.dumps(
                {"v": 1, "p": "wps365", "c": CONNECTION, "x": 2**40, "n": "A" * 22},
                separators=(",", ":"),
            ).encode()
        ) + "." + s.split(".")[1],
        lambda s: s[:-2],
        lambda s: "not-a-state",
    ],
    ids=["forged mac", "altered payload", "truncated", "garbage"],
)  # fmt: skip
def test_a_forged_or_altered_state_is_invalid_and_changes_nothing(
    flow: Flow, forge: Callable[[str], str]
) -> None:
    state = state_of(flow.link())
    before = flow.snapshot()
    answer = flow.callback(forge(state), flow.code())
    assert answer["ok"] is False and answer["error"]["code"] == "link_invalid"
    assert CONNECTION not in answer["error"]["message"]
    assert flow.snapshot() == before and flow.stack.sandbox.calls("wps365") == 0
    assert flow.callback(state, flow.code())["ok"] is True  # the real link still works


def test_a_state_for_another_provider_is_invalid(flow: Flow) -> None:
    key = KmsLinkKey(boto3.client("kms"), flow.key_id)
    other = link.make_state(key, link.LinkState("oauth2", CONNECTION, 2**40, "A" * 22))
    flow.stack.connect("oauth2")
    state = state_of(flow.link())
    before = flow.snapshot()
    assert flow.callback(other, flow.code())["error"]["code"] == "link_invalid"
    # and a wps365 state brought to another provider's function
    answer = flow.callback(state, "x", provider="oauth2")
    assert answer["error"]["code"] == "link_invalid"
    assert flow.snapshot() == before
    assert flow.callback(state, flow.code())["ok"] is True


def test_access_denied_consumes_the_link_and_changes_nothing_else(flow: Flow) -> None:
    assert flow.callback(state_of(flow.link()), flow.code())["ok"] is True  # connected earlier
    state = state_of(flow.link())
    before, calls = flow.snapshot()[:2], flow.stack.sandbox.calls("wps365")
    answer = flow.callback(state, error="access_denied")
    assert answer["ok"] is False and answer["error"]["code"] == "access_denied"
    assert flow.snapshot()[:2] == before and flow.stack.sandbox.calls("wps365") == calls
    item = flow.stack.tokens.get("wps365", CONNECTION, consistent=True)
    assert item is not None and item.error_code is None
    assert flow.callback(state, flow.code())["error"]["code"] == "link_used"
    status, body, _ = flow.stack.vend("GET", "wps365")  # the earlier grant still serves
    assert status == 200 and "stale" not in body


@pytest.mark.parametrize("connected", [False, True], ids=["new", "connected"])
def test_a_code_the_provider_refuses_leaves_the_connection_as_it_was(
    flow: Flow, connected: bool
) -> None:
    if connected:
        assert flow.callback(state_of(flow.link()), flow.code())["ok"] is True
    state = state_of(flow.link())
    before = flow.snapshot()
    answer = flow.callback(state, "a-code-the-provider-never-issued")
    assert answer["ok"] is False and answer["error"]["code"] == "authorization_required"
    assert flow.snapshot()[:2] == before[:2]  # the secret; the item is checked below
    now = flow.stack.tokens.get("wps365", CONNECTION, consistent=True)
    assert now is None or (now.error_code is None and now.lease_owner is None)
    if connected:
        assert now is not None and now.version == 1
        status, body, _ = flow.stack.vend("GET", "wps365")
        assert status == 200 and "stale" not in body


def test_connect_errors(flow: Flow, make_stack: Callable[..., Stack]) -> None:
    assert flow.connect("nobody")["error"]["code"] == "unknown_connection"
    flow.stack.connect("dingtalk")
    answer = flow.stack.call_provider("dingtalk", {"action": "connect", "connection": "demo"})
    assert answer["error"]["code"] == "invalid_request"
    keyless = make_stack()
    keyless.connect("wps365", "other")
    answer = keyless.call_provider("wps365", {"action": "connect", "connection": "other"})
    assert answer["error"]["code"] == "internal"
    answer = keyless.call_provider(
        "wps365", {"action": "callback", "state": "a.b", "code": "c", "error": None}
    )
    assert answer["error"]["code"] == "internal"


@pytest.mark.parametrize(
    "event",
    [
        {"action": "callback", "state": "a.b"},
        {"action": "callback", "state": "a.b", "code": 5},
        {"action": "callback", "state": "a.b", "code": "", "error": None},
        {"action": "callback", "state": "a.b", "error": ["x"]},
    ],
)
def test_a_callback_without_a_code_or_an_error_is_an_invalid_request(
    flow: Flow, event: dict[str, Any]
) -> None:
    state = state_of(flow.link())
    before = flow.snapshot()
    answer = flow.stack.call_provider("wps365", {**event, "state": state})
    assert answer["error"]["code"] == "invalid_request"
    assert flow.snapshot() == before


def test_no_secret_token_code_or_state_reaches_the_logs(flow: Flow, logs: io.StringIO) -> None:
    """Every outcome of the flow, then the logs searched for every form of every secret."""
    made: list[str] = []
    codes: list[str] = []

    def attempt(state: str, code: str | None = None, error: str | None = None) -> None:
        if code:
            codes.append(code)
        flow.callback(state, code, error)

    made.append(state_of(flow.link()))
    attempt(made[-1], flow.code())  # connected
    attempt(made[-1], flow.code())  # used
    made.append(state_of(flow.link()))
    attempt(made[-1], "refused-code-" + uuid.uuid4().hex)  # refused
    made.append(state_of(flow.link()))
    attempt(made[-1], error="access_denied")
    made.append(state_of(flow.link()))
    attempt(made[-1][:-3] + "AAA", flow.code())  # forged
    flow.clock.now += 601
    attempt(made[-1], flow.code())  # expired
    flow.clock.now -= 601
    flow.stack.vend("GET", "wps365")
    secret = flow.stack.secrets.get("wps365", CONNECTION)
    assert secret is not None
    state = flow.stack.tokens.get("wps365", CONNECTION, consistent=True)
    assert state is not None and state.access_token
    text = logs.getvalue()
    assert "connect callback refused" in text and "connect link made" in text
    values = [
        flow.secret["client_secret"],
        secret.value["refresh_token"],
        state.access_token,
        *codes,
        *made,
        *(m.split(".")[1] for m in made),
    ]
    for value in values:
        for form in secret_forms(value, flow.client_id):
            assert form not in text


# -- PKCE, against a token server of the test's own -------------------------------------------


class PkceTokenServer(LoopbackServer):
    """An authorization-code token endpoint that insists on PKCE (RFC 7636 section 4.6):
    a code issued for a challenge redeems only with the verifier whose S256 it is."""

    def __init__(self) -> None:
        self.codes: dict[str, str] = {}  # code -> challenge
        self.verifiers: list[str | None] = []
        self.lock = threading.Lock()
        self.serve()

    def issue(self, challenge: str) -> str:
        code = "pkce-code-" + uuid.uuid4().hex
        with self.lock:
            self.codes[code] = challenge
        return code

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        length = int(http.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(http.rfile.read(length).decode()).items()}
        verifier = form.get("code_verifier")
        with self.lock:
            self.verifiers.append(verifier)
            challenge = self.codes.pop(form.get("code", ""), None)
        digest = hashlib.sha256((verifier or "").encode()).digest()
        if (
            form.get("grant_type") != "authorization_code"
            or challenge is None
            or verifier is None
            or link.b64url(digest) != challenge
            or form.get("redirect_uri") != REDIRECT_URI
        ):
            send_json(http, 400, {"code": 400, "msg": "invalid_grant"})
            return
        send_json(
            http,
            200,
            {
                "access_token": "pkce-access-" + uuid.uuid4().hex,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": "pkce-refresh-" + uuid.uuid4().hex,
                "refresh_expires_in": 86400,
            },
        )


@pytest.fixture
def pkce_server() -> Iterator[PkceTokenServer]:
    with PkceTokenServer() as server:
        yield server


def test_with_pkce_the_link_carries_a_challenge_and_the_redemption_its_verifier(
    flow: Flow, pkce_server: PkceTokenServer
) -> None:
    # Given a provider function for an entry that takes PKCE
    base = flow.stack.refreshers["wps365"]
    refresher = Refresher(
        replace(spec_for("wps365"), pkce=True),
        base.settings,
        base.secrets,
        base.tokens,
        TokenEndpoint(policy=FAST),
        owner="test-pkce",
        clock=flow.clock,
    )
    function = load_function("provider", f"provider_app_pkce_{uuid.uuid4().hex[:6]}")
    function._refresher = refresher
    flow.stack.put_secret(
        "wps365", CONNECTION, {**flow.secret, "token_url": f"{pkce_server.base_url}/token"}
    )

    def call(event: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = function.lambda_handler(event, LambdaContext("tokenvend-pkce"))
        return answer

    # When a link is made
    answer = call({"action": "connect", "connection": CONNECTION})
    query = parse_qs(urlsplit(answer["url"]).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    # and the authorization server issues a code for its challenge
    code = pkce_server.issue(query["code_challenge"][0])
    before = flow.snapshot()
    # Then a code issued for another challenge does not redeem, and changes nothing
    other = pkce_server.issue(link.pkce_challenge("x" * 43))
    older = query["state"][0]
    assert call({"action": "callback", "state": older, "code": other})["ok"] is False
    assert flow.snapshot()[:2] == before[:2]
    # and the code of a fresh link redeems with the verifier the link's challenge names
    answer = call({"action": "connect", "connection": CONNECTION})
    query = parse_qs(urlsplit(answer["url"]).query)
    code = pkce_server.issue(query["code_challenge"][0])
    answer = call({"action": "callback", "state": query["state"][0], "code": code})
    assert answer["ok"] is True, answer
    verifier = pkce_server.verifiers[-1]
    assert verifier is not None and len(verifier) == 43
    assert link.pkce_challenge(verifier) == query["code_challenge"][0]
    secret = flow.stack.secrets.get("wps365", CONNECTION)
    assert secret is not None and secret.value["refresh_token"].startswith("pkce-refresh-")
