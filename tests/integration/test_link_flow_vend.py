"""The link flow's front door, through the real vend handler with the sample events of
events/: `POST /connections/{provider}/{connection}/connect` answers a link (JSON), and
`GET /connect/callback` answers the page a user's browser lands on (HTML), with the real
provider function in process behind it, on moto (KMS's HMAC key, DynamoDB, Secrets Manager)
and the sandbox's wps365.

What a user would notice: the "Connected" page names the connection and a token can be
vended for it at once; every other page says what went wrong in words, with the security
headers, and never shows a token, a secret, the code or the state; a callback that cannot
be one of tokenvend's invokes nothing."""

from __future__ import annotations

import base64
import calendar
import copy
import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from support import (
    REDIRECT_URI,
    FakeClock,
    LambdaContext,
    Stack,
    connection_snapshot,
    event,
    secret_forms,
    state_of,
)
from tokenvend_core.vend import pages

CONNECTION = "demo"
HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    @property
    def outcome(self) -> str | None:
        found = re.search(r'data-outcome="([a-z_]+)"', self.body)
        return found.group(1) if found else None

    @property
    def text(self) -> str:
        """What a user reads: the page without its markup."""
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", self.body.split("</style>")[-1]))


@dataclass
class Front:
    stack: Stack
    clock: FakeClock
    secret: dict[str, Any]

    def call(self, data: dict[str, Any]) -> Answer:
        answer = self.stack.vend_function.lambda_handler(
            data, LambdaContext("tokenvend-test-vend", 20_000)
        )
        assert answer["isBase64Encoded"] is False
        return Answer(answer["statusCode"], answer["headers"], answer["body"])

    def connect(
        self, provider: str = "wps365", connection: str = CONNECTION, caller: Any = "keep"
    ) -> Answer:
        data = event("vend-connect.json")
        data["pathParameters"] = {"provider": provider, "connection": connection}
        data["path"] = f"/connections/{provider}/{connection}/connect"
        if caller != "keep":
            data["requestContext"]["identity"]["userArn"] = caller
        return self.call(data)

    def link(self) -> str:
        answer = self.connect()
        assert answer.status == 200, answer.body
        return str(json.loads(answer.body)["url"])

    def code(self) -> str:
        """What the provider's redirect carries once the user allowed access."""
        return self.stack.sandbox.authorize(self.secret["client_id"], REDIRECT_URI)

    def callback(self, query: dict[str, str | list[str]] | None) -> Answer:
        """The sample callback with this query, as API Gateway passes one."""
        data = event("vend-callback.json")
        multi = {k: v if isinstance(v, list) else [v] for k, v in (query or {}).items()}
        data["queryStringParameters"] = {k: v[-1] for k, v in multi.items()} or None
        data["multiValueQueryStringParameters"] = multi or None
        return self.call(data)

    def snapshot(self) -> tuple[Any, ...]:
        return connection_snapshot(self.stack, "wps365", CONNECTION)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture
def front(make_stack: Callable[..., Stack]) -> Front:
    key = boto3.client("kms").create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    clock = FakeClock(time.time())
    stack = make_stack(link_key_id=key["KeyMetadata"]["KeyId"], clock=clock)
    secret = stack.connect("wps365")
    return Front(stack, clock, secret)


def assert_a_safe_page(answer: Answer, *never: str) -> None:
    """The page's headers are exactly the link flow's, and it shows none of `never`."""
    assert answer.headers == HEADERS
    assert answer.body.startswith("<!doctype html>")
    for value in never:
        assert value not in answer.body


# -- connect ------------------------------------------------------------------------------


def test_connect_answers_a_link_that_is_never_cached(front: Front) -> None:
    answer = front.connect()
    assert answer.status == 200, answer.body
    body = json.loads(answer.body)
    assert set(body) == {"url", "expires_at"}
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Content-Type"] == "application/json"
    query = parse_qs(urlsplit(body["url"]).query)
    assert query["client_id"] == [front.secret["client_id"]]
    assert query["redirect_uri"] == [REDIRECT_URI] and query["response_type"] == ["code"]
    expires = calendar.timegm(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert expires == int(front.clock.now) + 600
    assert front.stack.invoker.invocations == 1


def test_connect_needs_a_caller_and_asks_no_provider_without_one(front: Front) -> None:
    answer = front.connect(caller=None)
    assert answer.status == 403
    assert json.loads(answer.body)["error"]["code"] == "forbidden"
    assert front.stack.invoker.invocations == 0


def test_only_a_caller_the_access_list_admits_may_make_a_link(front: Front) -> None:
    # Given a connection whose access list names one role (a link rebinds the connection's
    # grant, so whoever may not get its token may not make one either)
    admitted = "arn:aws:iam::123456789012:role/operator"
    front.stack.connect("wps365", "listed", allowed_principals=[admitted])
    # When anyone else asks for a link, it is refused and no link is made
    other = front.connect(connection="listed", caller="arn:aws:iam::123456789012:user/workload")
    assert other.status == 403, other.body
    assert json.loads(other.body)["error"]["code"] == "forbidden"
    # and the admitted caller gets one
    assumed = "arn:aws:sts::123456789012:assumed-role/operator/alice"
    assert front.connect(connection="listed", caller=assumed).status == 200


@pytest.mark.parametrize(
    ("provider", "connection", "status", "code"),
    [
        ("nosuch", CONNECTION, 404, "unknown_provider"),
        ("wps365", "nobody", 404, "unknown_connection"),
        ("wps365", "not a name", 400, "invalid_request"),
        ("dingtalk", CONNECTION, 400, "invalid_request"),  # no authorization-code grant
    ],
)
def test_connect_refusals_follow_the_contract(
    front: Front, provider: str, connection: str, status: int, code: str
) -> None:
    front.stack.connect("dingtalk")
    answer = front.connect(provider, connection)
    assert answer.status == status, answer.body
    assert json.loads(answer.body)["error"]["code"] == code
    assert answer.headers["Cache-Control"] == "no-store"


def test_connect_when_the_provider_function_fails_is_503_with_retry_after(
    front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(event: Any, context: Any) -> Any:
        raise RuntimeError("the function crashed")

    monkeypatch.setattr(front.stack.provider_functions["wps365"], "lambda_handler", crash)
    answer = front.connect()
    assert answer.status == 503 and answer.headers["Retry-After"] == "5"
    assert json.loads(answer.body)["error"]["code"] == "provider_unavailable"


# -- the callback -------------------------------------------------------------------------


def test_a_user_who_allows_access_lands_on_connected_and_a_token_is_vended(
    front: Front, logs: io.StringIO
) -> None:
    # Given a link from the connect route, and the code the provider sent the user back with
    state, code = state_of(front.link()), front.code()

    # When the browser arrives at the callback
    answer = front.callback({"state": state, "code": code})

    # Then the page says the connection is authorized, naming it
    assert answer.status == 200 and answer.outcome == "connected"
    assert "Connected" in answer.text and "demo" in answer.text and "wps365" in answer.text
    secret = front.stack.secrets.get("wps365", CONNECTION)
    assert secret is not None
    never = [state, code, secret.value["refresh_token"]]
    never += secret_forms(front.secret["client_secret"], front.secret["client_id"])
    assert_a_safe_page(answer, *never)
    # and a token is vended for the connection at once, from the grant the code gave
    status, body, _ = front.stack.vend("GET", "wps365")
    assert status == 200 and front.stack.sandbox.is_valid(body["access_token"])
    assert body["access_token"] not in answer.body
    assert secret.value["refresh_token"] == front.stack.sandbox.refresh_token_of(
        front.secret["client_id"]
    )
    # and the vend function's logs hold neither the state nor the code
    for value in (state, code, state.split(".")[1]):
        assert value not in logs.getvalue()


def test_a_link_works_once(front: Front) -> None:
    state = state_of(front.link())
    assert front.callback({"state": state, "code": front.code()}).status == 200
    before = front.snapshot()
    again = front.callback({"state": state, "code": front.code()})
    assert again.status == 400 and again.outcome == "link_used"
    assert "already used" in again.text
    assert_a_safe_page(again, state)
    assert front.snapshot() == before


def test_an_expired_link_says_so_and_changes_nothing(front: Front) -> None:
    state = state_of(front.link())
    front.clock.now += 601
    before = front.snapshot()
    answer = front.callback({"state": state, "code": front.code()})
    assert answer.status == 400 and answer.outcome == "link_expired"
    assert "expired" in answer.text
    assert_a_safe_page(answer, state)
    assert front.snapshot() == before


def test_a_user_who_refuses_access_is_told_so_and_the_link_is_spent(front: Front) -> None:
    state = state_of(front.link())
    before = front.snapshot()
    answer = front.callback({"state": state, "error": "access_denied"})
    assert answer.status == 400 and answer.outcome == "access_denied"
    assert "refused" in answer.text
    assert_a_safe_page(answer, state)
    assert front.snapshot()[:2] == before[:2]
    assert front.callback({"state": state, "code": front.code()}).outcome == "link_used"


def test_a_code_the_provider_refuses_leaves_the_connection_as_it_was(front: Front) -> None:
    state = state_of(front.link())
    before = front.snapshot()
    answer = front.callback({"state": state, "code": "a-code-the-provider-never-issued"})
    assert answer.status == 400 and answer.outcome == "code_refused"
    assert_a_safe_page(answer, state, "a-code-the-provider-never-issued")
    assert front.snapshot()[:2] == before[:2]


@pytest.mark.parametrize(
    "forge",
    [
        lambda s: s.split(".")[0] + "." + b64url(b"\0" * 32),
        lambda s: b64url(
            json.dumps(
                {"v": 1, "p": "wps365", "c": "other", "x": 2**40, "n": "A" * 22},
                separators=(",", ":"),
            ).encode()
        ) + "." + s.split(".")[1],
        lambda s: s[:-3],
    ],
    ids=["forged mac", "altered payload", "truncated"],
)  # fmt: skip
def test_a_forged_or_altered_state_is_an_invalid_link(
    front: Front, forge: Callable[[str], str]
) -> None:
    state = state_of(front.link())
    before = front.snapshot()
    forged = forge(state)
    answer = front.callback({"state": forged, "code": front.code()})
    assert answer.status == 400 and answer.outcome == "link_invalid"
    assert_a_safe_page(answer, forged, "other")
    assert front.snapshot() == before
    # and the real link still works
    assert front.callback({"state": state, "code": front.code()}).outcome == "connected"


def _payload(**fields: Any) -> str:
    data = {"v": 1, "p": "wps365", "c": CONNECTION, "x": 2**40, "n": "A" * 22, **fields}
    return b64url(json.dumps(data, separators=(",", ":")).encode()) + "." + b64url(b"m" * 32)


@pytest.mark.parametrize(
    "query",
    [
        None,
        {"code": "c"},
        {"state": _payload()},  # neither code nor error
        {"state": "no-dot-in-it", "code": "c"},
        {"state": "a.b.c", "code": "c"},
        {"state": "!!!.???", "code": "c"},
        {"state": b64url(b"not json") + ".AAAA", "code": "c"},
        {"state": b64url(b"[1, 2]") + ".AAAA", "code": "c"},
        {"state": _payload(p="nosuch"), "code": "c"},
        {"state": _payload(p="aspose"), "code": "c"},  # deployed, but makes no links
        {"state": _payload(p="<script>"), "code": "c"},
        {"state": _payload(p=None), "code": "c"},
        {"state": _payload(c="x" * 2000), "code": "c"},  # longer than any state
        {"state": _payload(), "code": "c" * 5000},
        {"state": _payload(), "error": "e" * 200},
        {"state": _payload(), "error": 'quote"d'},
        {"state": [_payload(), _payload(c="other")], "code": "c"},
        {"state": _payload(), "code": ["c1", "c2"]},
    ],
    ids=[
        "nothing",
        "no state",
        "no code nor error",
        "no mac",
        "three parts",
        "not base64url",
        "not json",
        "not an object",
        "unknown provider",
        "a provider without an authorization code grant",
        "markup for a provider",
        "no provider",
        "state too long",
        "code too long",
        "error too long",
        "error with a quote",
        "two states",
        "two codes",
    ],
)
def test_a_callback_that_cannot_be_tokenvends_invokes_nothing(
    front: Front, query: dict[str, Any] | None
) -> None:
    before = front.snapshot()
    answer = front.callback(query)
    assert answer.status == 400 and answer.outcome == "link_invalid"
    assert_a_safe_page(answer, "<script>")
    assert front.stack.invoker.invocations == 0
    assert front.snapshot() == before


def test_the_provider_function_failing_is_a_400_page(
    front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = state_of(front.link())

    def crash(event: Any, context: Any) -> Any:
        raise RuntimeError("the function crashed")

    monkeypatch.setattr(front.stack.provider_functions["wps365"], "lambda_handler", crash)
    answer = front.callback({"state": state, "code": front.code()})
    assert answer.status == 400 and answer.outcome == "unavailable"
    assert_a_safe_page(answer, state, "crashed")


def test_the_sample_callback_is_an_invalid_link_here(front: Front) -> None:
    # events/vend-callback.json carries a state of no key of this stack's.
    answer = front.call(copy.deepcopy(event("vend-callback.json")))
    assert answer.status == 400 and answer.outcome == "link_invalid"
    assert front.stack.invoker.invocations == 1  # wps365's function checked its MAC


# -- the pages themselves ----------------------------------------------------------------


def test_pages_escape_what_they_name() -> None:
    page = pages.connected("<b>p</b>", 'c"&<x>').render()
    assert "<b>" not in page and "&lt;b&gt;p&lt;/b&gt;" in page
    assert "&quot;&amp;&lt;x&gt;" in page
    refused = pages.refused("<img src=x>").render()
    assert "<img" not in refused and "answered" not in refused  # not an error code's form
    assert "invalid_scope" in pages.refused("invalid_scope").render()


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("link_invalid", 400, "link_invalid"),
        ("link_expired", 400, "link_expired"),
        ("link_used", 400, "link_used"),
        ("access_denied", 400, "access_denied"),
        ("invalid_scope", 400, "provider_error"),
        ("invalid_request", 400, "provider_error"),
        ("authorization_required", 400, "code_refused"),
        ("provider_rejected", 400, "code_refused"),
        ("unknown_connection", 400, "unknown_connection"),
        ("provider_unavailable", 400, "unavailable"),
        ("internal", 400, "internal"),
    ],
)
def test_every_refusal_has_its_page(code: str, status: int, outcome: str) -> None:
    page = pages.refused(code)
    assert (page.status, page.outcome) == (status, outcome)
    assert page.response()["headers"] == HEADERS
