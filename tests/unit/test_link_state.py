"""A connect link's state: its format, that only the link key makes one that reads back,
expiry and single use, and the PKCE verifier derived from the key (RFC 7636)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from support import AuditRecords
from tokenvend_core.audit import Trail
from tokenvend_core.aws.store import ConnectionState
from tokenvend_core.catalogue.spec import spec_for
from tokenvend_core.refresh import link
from tokenvend_core.refresh.link import (
    Connected,
    LinkState,
    Refused,
    make_state,
    pkce_challenge,
    pkce_verifier,
    read_state,
)

NONCE = "AAECAwQFBgcICQoLDA0ODw"  # b64url of bytes 0..15


@dataclass
class HmacKey:
    """The link key as KMS computes it, with a key of the test's own."""

    secret: bytes = b"k" * 32
    calls: int = 0

    def mac(self, message: bytes) -> bytes:
        self.calls += 1
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    def verify(self, message: bytes, mac: bytes) -> bool:
        return hmac.compare_digest(self.mac(message), mac)


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


LINK = LinkState("wps365", "user-42", 1_700_000_600, NONCE)


def test_the_state_is_the_payload_and_its_mac_in_unpadded_base64url() -> None:
    key = HmacKey()
    state = make_state(key, LINK)
    encoded, mac = state.split(".")
    assert "=" not in state and set(state) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    )
    assert unb64(encoded) == (
        b'{"v":1,"p":"wps365","c":"user-42","x":1700000600,"n":"AAECAwQFBgcICQoLDA0ODw"}'
    )
    expected = hmac.new(key.secret, b"tokenvend-link:" + encoded.encode(), hashlib.sha256)
    assert unb64(mac) == expected.digest() and len(mac) == 43
    assert read_state(key, state) == LINK


def test_a_state_signed_by_another_key_is_refused() -> None:
    state = make_state(HmacKey(b"other" * 8), LINK)
    assert read_state(HmacKey(), state) is None


def test_a_forged_state_with_any_mac_is_refused() -> None:
    key = HmacKey()
    payload = base64.urlsafe_b64encode(
        json.dumps({"v": 1, "p": "wps365", "c": "x", "x": 2**40, "n": NONCE}).encode()
    )
    forged = payload.decode().rstrip("=") + "." + "A" * 43
    assert read_state(key, forged) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s[:-1],  # truncated mac
        lambda s: s[: s.index(".")],  # no mac
        lambda s: s[1:],  # truncated payload
        lambda s: s + ".",
        lambda s: s + "=",
        lambda s: s.replace(".", ".."),
        lambda s: s.split(".")[1] + "." + s.split(".")[0],  # swapped
        lambda s: "",
        lambda s: "." * 3,
        lambda s: s + "A" * 2000,
    ],
    ids=[
        "truncated mac", "no mac", "truncated payload", "three parts", "padding",
        "empty part", "swapped", "empty", "dots", "too long",
    ],
)  # fmt: skip
def test_a_malformed_state_is_refused(change: Any) -> None:
    key = HmacKey()
    assert read_state(key, change(make_state(key, LINK))) is None


@pytest.mark.parametrize("value", [None, 42, ["a.b"], {"state": "x"}, b"a.b"])
def test_a_state_that_is_not_text_is_refused_without_asking_the_key(value: Any) -> None:
    key = HmacKey()
    assert read_state(key, value) is None and key.calls == 0


@given(st.data())
def test_any_altered_character_makes_the_state_invalid(data: st.DataObject) -> None:
    key = HmacKey()
    state = make_state(key, LINK)
    position = data.draw(st.integers(0, len(state) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    new = data.draw(st.sampled_from(alphabet).filter(lambda c: c != state[position]))
    altered = state[:position] + new + state[position + 1 :]
    assert read_state(key, altered) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"v": 2, "p": "wps365", "c": "c", "x": 1, "n": NONCE},
        {"v": True, "p": "wps365", "c": "c", "x": 1, "n": NONCE},
        {"v": 1, "p": "WPS", "c": "c", "x": 1, "n": NONCE},
        {"v": 1, "p": "wps365", "c": "../etc", "x": 1, "n": NONCE},
        {"v": 1, "p": "wps365", "c": "c", "x": "1", "n": NONCE},
        {"v": 1, "p": "wps365", "c": "c", "x": 1.5, "n": NONCE},
        {"v": 1, "p": "wps365", "c": "c", "x": 1, "n": "short"},
        {"v": 1, "p": "wps365", "c": "c", "x": 1, "n": NONCE, "extra": 1},
        {"v": 1, "p": "wps365", "c": "c", "x": 1},
        ["v", 1],
    ],
)
def test_a_signed_payload_of_the_wrong_shape_is_refused(payload: Any) -> None:
    """Even with a MAC that holds (a key that signed something else, say), only the one
    shape reads back."""
    key = HmacKey()
    encoded = link.b64url(json.dumps(payload, separators=(",", ":")).encode())
    state = f"{encoded}.{link.b64url(key.mac(b'tokenvend-link:' + encoded.encode()))}"
    assert read_state(key, state) is None


def test_the_mac_is_over_the_link_context_only() -> None:
    """A MAC the key made for a PKCE verifier (another context) is no state's MAC."""
    key = HmacKey()
    encoded = make_state(key, LINK).split(".")[0]
    other = link.b64url(key.mac(b"tokenvend-pkce:" + encoded.encode()))
    assert read_state(key, f"{encoded}.{other}") is None


# -- PKCE ------------------------------------------------------------------------------

# RFC 7636 appendix B: the verifier's 32 octets, the verifier and its S256 challenge.
RFC_OCTETS = bytes(
    [116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186,
     22, 212, 37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121]
)  # fmt: skip
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


class FixedKey:
    def __init__(self, mac: bytes) -> None:
        self.value = mac
        self.messages: list[bytes] = []

    def mac(self, message: bytes) -> bytes:
        self.messages.append(message)
        return self.value

    def verify(self, message: bytes, mac: bytes) -> bool:
        return mac == self.value


def test_pkce_follows_rfc_7636_appendix_b() -> None:
    key = FixedKey(RFC_OCTETS)
    verifier = pkce_verifier(key, NONCE)
    assert verifier == RFC_VERIFIER and len(verifier) == 43
    assert key.messages == [b"tokenvend-pkce:" + NONCE.encode()]
    assert pkce_challenge(verifier) == RFC_CHALLENGE


def test_the_verifier_is_the_keys_and_the_nonces_alone() -> None:
    key = HmacKey()
    assert pkce_verifier(key, NONCE) == pkce_verifier(key, NONCE)
    assert pkce_verifier(key, NONCE) != pkce_verifier(key, "B" * 22)
    assert pkce_verifier(key, NONCE) != pkce_verifier(HmacKey(b"x" * 32), NONCE)


# -- the link, its expiry and its single use -----------------------------------------------


@dataclass
class FakeTokens:
    """The two TokenStore methods the link flow uses, over a dict."""

    links: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)

    def set_link(self, provider: str, connection: str, nonce: str, expires_at: int) -> None:
        self.links[(provider, connection)] = (nonce, expires_at)

    def take_link(self, provider: str, connection: str, nonce: str) -> bool:
        held = self.links.get((provider, connection))
        if held is None or held[0] != nonce:
            return False
        del self.links[(provider, connection)]
        return True


class FakeRefresher:
    """What the link flow reads of a Refresher; `authorize` records the codes it redeems."""

    def __init__(self, *, pkce: bool = False, secret: dict[str, Any] | None = None) -> None:
        self.spec = replace(spec_for("wps365"), pkce=pkce)
        self.settings = type(
            "S", (), {"allow_http_loopback": False, "plain_http_hosts": (), "link_lifetime": 600}
        )()
        self.tokens = FakeTokens()
        self.audit = Trail(AuditRecords())
        self.now = 1_700_000_000.0
        self.secret = secret or {
            "client_id": "app-1",
            "client_secret": "s",
            "redirect_uri": "https://api.example.com/prod/connect/callback",
        }
        self.redeemed: list[tuple[str, str, str | None]] = []

    @property
    def provider(self) -> str:
        return self.spec.name

    def _clock(self) -> float:
        return self.now

    def read_secret(self, connection: str) -> tuple[Any, dict[str, Any]]:
        return None, dict(self.secret)

    def ids(self, connection: str) -> dict[str, str]:
        return {"provider": self.provider, "connection": connection}

    def authorize(
        self, connection: str, code: str, redirect_uri: str | None = None, *,
        code_verifier: str | None = None,
    ) -> ConnectionState:  # fmt: skip
        self.redeemed.append((connection, code, code_verifier))
        return ConnectionState(self.provider, connection, "tok", expires_at=int(self.now) + 3600)


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def test_the_link_carries_what_the_authorization_endpoint_needs() -> None:
    refresher = FakeRefresher(secret={**FakeRefresher().secret, "scope": "user_info  file.read"})
    made = link.connect(refresher, HmacKey(), "user-42")
    parts = urlsplit(made.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://openapi.wps.cn/oauth2/auth"
    query = parse_qs(parts.query)
    assert {name: values[0] for name, values in query.items() if name != "state"} == {
        "client_id": "app-1",
        "redirect_uri": "https://api.example.com/prod/connect/callback",
        "response_type": "code",
        "scope": "user_info file.read",
    }
    assert made.expires_at == 1_700_000_600
    assert read_state(HmacKey(), query["state"][0]) is not None
    assert "state=" not in repr(made)


def test_a_connections_own_authorize_url_and_the_providers_scope_separator() -> None:
    refresher = FakeRefresher(
        pkce=True,
        secret={**FakeRefresher().secret, "authorize_url": "https://sso.example.com/a?x=1",
                "scope": "a b,c"},
    )  # fmt: skip
    refresher.spec = replace(refresher.spec, scope_separator=",")
    key = HmacKey()
    made = link.connect(refresher, key, "c")
    assert made.url.startswith("https://sso.example.com/a?x=1&client_id=app-1&")
    query = parse_qs(urlsplit(made.url).query)
    assert query["scope"] == ["a,b,c"]
    nonce = refresher.tokens.links[("wps365", "c")][0]
    assert query["code_challenge"] == [pkce_challenge(pkce_verifier(key, nonce))]
    assert query["code_challenge_method"] == ["S256"]


def test_without_pkce_the_link_has_no_challenge() -> None:
    made = link.connect(FakeRefresher(), HmacKey(), "c")
    assert "code_challenge" not in made.url


def test_a_valid_state_redeems_once_with_the_verifier() -> None:
    refresher, key = FakeRefresher(pkce=True), HmacKey()
    state = state_of(link.connect(refresher, key, "user-42").url)
    outcome = link.callback(refresher, key, state, code="the-code", error=None)
    assert isinstance(outcome, Connected) and outcome.connection == "user-42"
    nonce = read_state(key, state).nonce
    assert refresher.redeemed == [("user-42", "the-code", pkce_verifier(key, nonce))]
    again = link.callback(refresher, key, state, code="the-code", error=None)
    assert again == Refused("link_used", again.message)
    assert len(refresher.redeemed) == 1


def test_expiry_is_checked_before_single_use_and_leaves_the_link() -> None:
    refresher, key = FakeRefresher(), HmacKey()
    state = state_of(link.connect(refresher, key, "c").url)
    refresher.now += 600
    outcome = link.callback(refresher, key, state, code="x", error=None)
    assert isinstance(outcome, Refused) and outcome.code == "link_expired"
    assert ("wps365", "c") in refresher.tokens.links and refresher.redeemed == []
    refresher.now -= 1  # the last second of its life
    assert isinstance(link.callback(refresher, key, state, code="x", error=None), Connected)


def test_a_newer_link_supersedes_the_older() -> None:
    refresher, key = FakeRefresher(), HmacKey()
    old = state_of(link.connect(refresher, key, "c").url)
    new = state_of(link.connect(refresher, key, "c").url)
    outcome = link.callback(refresher, key, old, code="x", error=None)
    assert isinstance(outcome, Refused) and outcome.code == "link_used"
    assert isinstance(link.callback(refresher, key, new, code="x", error=None), Connected)


def test_a_state_for_another_provider_is_invalid() -> None:
    refresher, key = FakeRefresher(), HmacKey()
    state = make_state(key, replace(LINK, provider="oauth2", expires_at=2**40))
    outcome = link.callback(refresher, key, state, code="x", error=None)
    assert isinstance(outcome, Refused) and outcome.code == "link_invalid"
    assert "oauth2" not in outcome.message and "user-42" not in outcome.message


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("access_denied", "access_denied"),
        ("temporarily_unavailable", "temporarily_unavailable"),
        ("consent_required", "consent_required"),  # OpenID Connect's too
        # whatever else a crafted callback says is not repeated, nor recorded, as a code
        ("aaaa_my_leaked_token_here", "access_denied"),
        ("internal", "access_denied"),  # never one of tokenvend's own codes
        ("invalid_request", "access_denied"),
        ("link_used", "access_denied"),
        ("<script>", "access_denied"),
    ],
)
def test_the_providers_error_consumes_the_link_and_redeems_nothing(error: str, code: str) -> None:
    refresher, key = FakeRefresher(), HmacKey()
    state = state_of(link.connect(refresher, key, "c").url)
    outcome = link.callback(refresher, key, state, code=None, error=error)
    assert isinstance(outcome, Refused) and outcome.code == code
    assert "<script>" not in outcome.message and "leaked" not in outcome.message
    assert refresher.tokens.links == {} and refresher.redeemed == []
    refresher.audit.flush()
    (record,) = refresher.audit.sink.records  # type: ignore[attr-defined]
    assert (record["action"], record["error_code"]) == ("authorize", code)


def test_no_key_is_an_internal_error() -> None:
    from tokenvend_core.errors import Internal

    with pytest.raises(Internal):
        link.connect(FakeRefresher(), None, "c")
    with pytest.raises(Internal):
        link.callback(FakeRefresher(), None, "a.b", code="x", error=None)


# -- interleavings ------------------------------------------------------------------------


class LinkMachine(RuleBasedStateMachine):
    """Links made, brought back (with a code, the provider's error, or altered) and left to
    age, in any order, for two connections: a link authorizes at most once, only while it
    is its connection's latest and unexpired; any other callback redeems nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.refresher, self.key = FakeRefresher(), HmacKey()
        self.made: list[tuple[str, str, int]] = []  # (connection, state, expires_at)
        self.latest: dict[str, str] = {}  # connection -> its working state, if any
        self.redeemed: set[str] = set()

    @rule(connection=st.sampled_from(["a", "b"]))
    def connect(self, connection: str) -> None:
        made = link.connect(self.refresher, self.key, connection)
        self.made.append((connection, state_of(made.url), made.expires_at))
        self.latest[connection] = self.made[-1][1]

    @rule(data=st.data(), kind=st.sampled_from(["code", "error", "altered"]))
    def callback(self, data: st.DataObject, kind: str) -> None:
        if not self.made:
            return
        connection, state, expires_at = data.draw(st.sampled_from(self.made))
        if kind == "altered":
            state = state[:-1] + ("A" if state[-1] != "A" else "B")
        works = kind != "altered" and self.latest.get(connection) == state
        live = expires_at > self.refresher.now
        code = f"code-{len(self.refresher.redeemed)}" if kind == "code" else None
        error = "access_denied" if kind == "error" else None
        outcome = link.callback(self.refresher, self.key, state, code=code, error=error)
        if works and live:
            del self.latest[connection]
        if works and live and kind == "code":
            assert isinstance(outcome, Connected) and outcome.connection == connection
            assert state not in self.redeemed
            self.redeemed.add(state)
        else:
            assert isinstance(outcome, Refused)
            expected = {"altered": "link_invalid", "error": "access_denied"}.get(kind)
            if kind == "altered":
                assert outcome.code == expected
            elif not live:
                assert outcome.code == "link_expired"
            elif not works:
                assert outcome.code == "link_used"
            else:
                assert outcome.code == expected

    @rule(seconds=st.sampled_from([1, 299, 600]))
    def wait(self, seconds: int) -> None:
        self.refresher.now += seconds

    @invariant()
    def every_redemption_is_one_links(self) -> None:
        assert len(self.refresher.redeemed) == len(self.redeemed)


LinkMachine.TestCase.settings = hypothesis_settings(
    max_examples=60, stateful_step_count=20, deadline=None
)
test_link_interleavings = LinkMachine.TestCase
