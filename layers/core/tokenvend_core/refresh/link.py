"""Connect links: the authorization-code flow as a link a user opens (the `connect` and
`callback` events of a provider function whose grant is authorization_code).

`connect` makes a link: the provider's authorization URL with the connection's client id,
its own redirect URI, `response_type=code`, its scope, a `state` only tokenvend can make and,
where the catalogue says the provider takes it, a PKCE S256 challenge (RFC 7636). The
callback brings the state back with a code (or the provider's `error`): the state is checked
(MAC, then expiry, then single use) before anything else, and the code is redeemed exactly
as `authorize` redeems one (`authorization`: same lease, same rotation safety).

The state is ``b64url(payload) + "." + b64url(mac)``, unpadded, where payload is the compact
JSON ``{"v":1,"p":provider,"c":connection,"x":expiry epoch s,"n":nonce}`` and mac the link
key's HMAC-SHA-256 of ``"tokenvend-link:" + b64url(payload)``. The key is a KMS HMAC key
(`LinkKey`; `aws.link_key.KmsLinkKey`), so the state is unforgeable by anyone who cannot
call KMS with it. Single use, and only the latest link of a connection works: `connect`
writes the nonce on the connection's item (`TokenStore.set_link`), the callback consumes it
with a conditional update (`TokenStore.take_link`). The PKCE verifier is the key's MAC of
``"tokenvend-pkce:" + nonce``: recomputed at redemption, so nothing secret is stored.

The link's own outcomes (invalid, expired, used, refused by the user) are results
(`Refused`), not exceptions; what `authorize` raises when the code does not redeem is passed
on as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

from tokenvend_core.aws.store import ConnectionState
from tokenvend_core.catalogue.spec import ProviderSpec
from tokenvend_core.catalogue.urls import check_url
from tokenvend_core.errors import ERRORS_BY_CODE, Forbidden, Internal, InvalidRequest
from tokenvend_core.names import CONNECTION_RE, PROVIDER_RE
from tokenvend_core.observability import logger
from tokenvend_core.principals import is_allowed

if TYPE_CHECKING:
    from tokenvend_core.refresh.refresher import Refresher

VERSION = 1
LINK_CONTEXT = b"tokenvend-link:"
PKCE_CONTEXT = b"tokenvend-pkce:"
MAC_BYTES = 32  # HMAC-SHA-256
NONCE_BYTES = 16
#: Longer than any state tokenvend makes (a 64-character connection name gives ~250).
MAX_STATE = 1024
B64URL = re.compile(r"[A-Za-z0-9_-]+")
NONCE = re.compile(r"[A-Za-z0-9_-]{22}")

LINK_INVALID = "link_invalid"
LINK_EXPIRED = "link_expired"
LINK_USED = "link_used"
ACCESS_DENIED = "access_denied"
LINK_CODES = frozenset({LINK_INVALID, LINK_EXPIRED, LINK_USED})
#: A provider's `error` value passed on as the outcome's code: the error codes of an
#: authorization response (RFC 6749 section 4.1.2.1, and those OpenID Connect Core adds
#: in section 3.1.2.6). Any other value, which whoever crafts the callback chooses, is
#: told as access_denied: what is shown and recorded is never free text.
PROVIDER_ERRORS = frozenset({
    "invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type",
    "invalid_scope", "server_error", "temporarily_unavailable",
    "interaction_required", "login_required", "account_selection_required",
    "consent_required", "invalid_request_uri", "invalid_request_object",
    "request_not_supported", "request_uri_not_supported", "registration_not_supported",
})  # fmt: skip


class LinkKey(Protocol):
    """The key that signs states and derives PKCE verifiers (HMAC-SHA-256)."""

    def mac(self, message: bytes) -> bytes:
        """The key's MAC of `message`."""
        ...

    def verify(self, message: bytes, mac: bytes) -> bool:
        """Whether `mac` is the key's MAC of `message`."""
        ...


# -- the state ----------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _from_b64url(text: str) -> bytes | None:
    """The bytes of an unpadded base64url text in its one canonical spelling, else None
    (so that no two states carry the same MAC or payload)."""
    if not B64URL.fullmatch(text):
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if b64url(data) == text else None


@dataclass(frozen=True, slots=True)
class LinkState:
    """What a state says, once its MAC holds."""

    provider: str
    connection: str
    expires_at: int
    nonce: str


def make_state(key: LinkKey, link: LinkState) -> str:
    payload = json.dumps(
        {
            "v": VERSION,
            "p": link.provider,
            "c": link.connection,
            "x": link.expires_at,
            "n": link.nonce,
        },
        separators=(",", ":"),
    )
    encoded = b64url(payload.encode("utf-8"))
    return f"{encoded}.{b64url(key.mac(LINK_CONTEXT + encoded.encode('ascii')))}"


def read_state(key: LinkKey, state: Any) -> LinkState | None:
    """What `state` says, or None when it is not a state the key made (malformed, altered,
    truncated, or signed by another key). Nothing of it is read before its MAC holds."""
    if not isinstance(state, str) or len(state) > MAX_STATE:
        return None
    parts = state.split(".")
    if len(parts) != 2:
        return None
    encoded, mac_text = parts
    mac = _from_b64url(mac_text)
    raw = _from_b64url(encoded)
    if mac is None or raw is None or len(mac) != MAC_BYTES:
        return None
    if not key.verify(LINK_CONTEXT + encoded.encode("ascii"), mac):
        return None
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(payload, dict) or set(payload) != {"v", "p", "c", "x", "n"}:
        return None
    version, provider, connection = payload["v"], payload["p"], payload["c"]
    expires_at, nonce = payload["x"], payload["n"]
    if (
        type(version) is not int
        or version != VERSION
        or not isinstance(provider, str)
        or not PROVIDER_RE.fullmatch(provider)
        or not isinstance(connection, str)
        or not CONNECTION_RE.fullmatch(connection)
        or type(expires_at) is not int
        or not isinstance(nonce, str)
        or not NONCE.fullmatch(nonce)
    ):
        return None
    return LinkState(provider, connection, expires_at, nonce)


def pkce_verifier(key: LinkKey, nonce: str) -> str:
    """The link's PKCE code_verifier: 43 characters of base64url (RFC 7636 section 4.1)."""
    return b64url(key.mac(PKCE_CONTEXT + nonce.encode("ascii")))


def pkce_challenge(verifier: str) -> str:
    """The S256 code_challenge of a verifier (RFC 7636 section 4.2)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


# -- the outcomes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    expires_at: int

    def __repr__(self) -> str:  # the URL holds a working state
        return f"Link(expires_at={self.expires_at})"


@dataclass(frozen=True, slots=True)
class Connected:
    """The code redeemed: the connection holds a token and the grant that came with it."""

    provider: str
    connection: str
    state: ConnectionState


@dataclass(frozen=True, slots=True)
class Refused:
    """The link did not authorize anything: `code` is link_invalid, link_expired, link_used,
    or the provider's error (access_denied). Nothing changed but, for the provider's error,
    the link itself, which is consumed."""

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


# -- connect --------------------------------------------------------------------------------


def connect(
    refresher: Refresher,
    key: LinkKey | None,
    connection: str,
    *,
    nonce: str | None = None,
    caller_arn: str | None = None,
) -> Link:
    """A new link for the connection, which supersedes any earlier one. Raises InvalidRequest
    when the provider authorizes no users or the connection has no authorization URL,
    UnknownConnection without a secret, Internal without a link key, Forbidden when the
    connection's allowed_principals do not admit `caller_arn` (a link rebinds the grant, so
    whoever may not get the token may not make one either)."""
    spec = refresher.spec
    if not spec.uses_refresh_token:
        raise InvalidRequest(f"{spec.name} has no authorization-code grant: nothing to connect")
    if key is None:
        raise Internal("no link key: the provider function's LINK_KEY_ID is not set")
    _, config = refresher.read_secret(connection)
    if caller_arn is not None and not is_allowed(caller_arn, config.get("allowed_principals")):
        raise Forbidden(f"the caller may not make links for {spec.name}/{connection}")
    authorize_url = config.get("authorize_url") or spec.authorize_url
    if not authorize_url:
        raise InvalidRequest(
            f"{spec.name} has no authorization URL: put authorize_url in the secret of "
            f"{spec.name}/{connection}"
        )
    check_url(
        authorize_url,
        allow_http_loopback=refresher.settings.allow_http_loopback,
        plain_http_hosts=refresher.settings.plain_http_hosts,
        what="authorize_url",
    )
    expires_at = int(refresher._clock()) + refresher.settings.link_lifetime
    link = LinkState(
        spec.name, connection, expires_at, nonce or b64url(secrets.token_bytes(NONCE_BYTES))
    )
    state = make_state(key, link)
    challenge = pkce_challenge(pkce_verifier(key, link.nonce)) if spec.pkce else None
    url = link_url(spec, config, authorize_url, state, challenge)
    refresher.tokens.set_link(spec.name, connection, link.nonce, expires_at)
    logger.info(
        "connect link made",
        extra={**refresher.ids(connection), "link_expires_at": expires_at, "pkce": spec.pkce},
    )
    return Link(url, expires_at)


def link_url(
    spec: ProviderSpec,
    config: dict[str, Any],
    authorize_url: str,
    state: str,
    challenge: str | None,
) -> str:
    params = {
        "client_id": config["client_id"],
        "redirect_uri": config["redirect_uri"],
        "response_type": "code",
    }
    scope = scope_value(spec, config.get("scope"))
    if scope:
        params["scope"] = scope
    params["state"] = state
    if challenge is not None:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    joiner = "&" if "?" in authorize_url else "?"
    return authorize_url + joiner + urlencode(params, quote_via=quote, safe="")


def scope_value(spec: ProviderSpec, scope: str | None) -> str:
    """The connection's scope as the provider separates scopes: written with spaces (RFC 6749
    section 3.3) or with the provider's own separator, sent with the latter."""
    if not scope:
        return ""
    words = scope.split() if spec.scope_separator == " " else re.split(
        rf"[\s{re.escape(spec.scope_separator)}]+", scope.strip()
    )  # fmt: skip
    return spec.scope_separator.join(word for word in words if word)


# -- the callback -------------------------------------------------------------------------


def callback(
    refresher: Refresher,
    key: LinkKey | None,
    state: Any,
    *,
    code: str | None,
    error: str | None,
) -> Connected | Refused:
    """Check the state (MAC, expiry, single use), then take the provider's `error` or redeem
    `code`. Raises what `authorize` raises when the code does not redeem (the connection is
    left as it was), Internal without a link key."""
    if key is None:
        raise Internal("no link key: the provider function's LINK_KEY_ID is not set")
    link = read_state(key, state)
    if link is None or link.provider != refresher.provider:
        logger.warning("connect callback refused", extra={"outcome": LINK_INVALID})
        refused = Refused(LINK_INVALID, "this link is not one tokenvend made, or it was altered")
        refresher.audit.record("authorize", "refused", provider=refresher.provider,
                               error_code=refused.code)  # fmt: skip
        return refused
    outcome = _judge(refresher, key, link, code=code, error=error)
    if isinstance(outcome, Refused):  # a redemption records itself (authorization)
        refresher.audit.record(
            "authorize",
            "refused",
            provider=link.provider,
            connection=link.connection,
            error_code=outcome.code,
        )
    return outcome


def _judge(
    refresher: Refresher, key: LinkKey, link: LinkState, *, code: str | None, error: str | None
) -> Connected | Refused:
    """A link whose state is sound: expired, used, refused by the provider, or redeemed."""
    ids = refresher.ids(link.connection)
    if link.expires_at <= refresher._clock():
        logger.warning("connect callback refused", extra={**ids, "outcome": LINK_EXPIRED})
        return Refused(
            LINK_EXPIRED,
            f"this link to connect {link.provider}/{link.connection} has expired; "
            "ask for a new one",
        )
    if not refresher.tokens.take_link(link.provider, link.connection, link.nonce):
        logger.warning("connect callback refused", extra={**ids, "outcome": LINK_USED})
        return Refused(
            LINK_USED,
            f"this link to connect {link.provider}/{link.connection} was used already, or a "
            "newer link replaced it; ask for a new one",
        )
    if error is not None:
        refused = provider_error(error)
        logger.warning("connect callback refused", extra={**ids, "outcome": refused.code})
        return refused
    verifier = pkce_verifier(key, link.nonce) if refresher.spec.pkce else None
    stored = refresher.authorize(link.connection, code, code_verifier=verifier)  # type: ignore[arg-type]
    logger.info("connected through a link", extra=ids)
    return Connected(link.provider, link.connection, stored)


def provider_error(value: str) -> Refused:
    """The provider's `error` on the callback: the user refused, or the provider could not
    ask them. Only an authorization response's own error code is repeated, and never as one
    of tokenvend's own codes."""
    known = value in PROVIDER_ERRORS
    own = value in ERRORS_BY_CODE or value in LINK_CODES
    code = value if known and not own else ACCESS_DENIED
    said = f"the provider answered {value!r}" if known else "the provider answered an error"
    return Refused(
        code, f"{said}: the connection was not authorized; ask for a new link to try again"
    )
