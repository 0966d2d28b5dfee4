"""The pages a user's browser lands on at the end of the link flow (GET /connect/callback).

A page is fixed text for its outcome; the only words that come from elsewhere are the
provider's and the connection's names on the "connected" page, and a provider's error code
on its refusal page, each HTML-escaped. A page never holds a token, a secret, the code or
the state: nothing on it is worth taking from a screenshot or a shoulder. Its headers keep
it out of caches, frames and referrers, and its Content-Security-Policy lets it load
nothing at all (the style is inline).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

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
# A provider's error code as RFC 6749 section 4.1.2.1 spells them (access_denied,
# invalid_scope, ...): shown only when it looks like one.
ERROR_CODE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
NEW_LINK = "Ask whoever sent you the link for a new one."

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}"
    "main{max-width:32rem;margin:12vh auto;padding:2rem;background:#fff;border-radius:8px;"
    "box-shadow:0 1px 4px rgba(0,0,0,.12)}h1{font-size:1.4rem;margin:0 0 1rem}"
    "p{line-height:1.5}.ok h1{color:#17733a}.refused h1{color:#a8321d}"
)


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    outcome: str  # a word tests and browsers can find: connected, link_expired, ...
    title: str
    paragraphs: tuple[str, ...]  # plain text, escaped when rendered

    def render(self) -> str:
        kind = "ok" if self.status == 200 else "refused"
        body = "".join(f"<p>{html.escape(text)}</p>" for text in self.paragraphs)
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="robots" content="noindex">'
            f"<title>{html.escape(self.title)} - tokenvend</title>"
            f"<style>{_STYLE}</style></head>"
            f'<body><main class="{kind}" data-outcome="{html.escape(self.outcome)}">'
            f"<h1>{html.escape(self.title)}</h1>{body}</main></body></html>"
        )

    def response(self) -> dict[str, Any]:
        """The page as API Gateway's REST proxy answer."""
        return {
            "statusCode": self.status,
            "headers": dict(HEADERS),
            "body": self.render(),
            "isBase64Encoded": False,
        }


def connected(provider: str, connection: str) -> Page:
    return Page(
        200,
        "connected",
        "Connected",
        (
            f"The connection {connection} of {provider} is authorized.",
            "You can close this page.",
        ),
    )


def link_invalid() -> Page:
    return Page(
        400,
        "link_invalid",
        "This link is not valid",
        ("The link is incomplete or altered, so nothing was changed.", NEW_LINK),
    )


def link_expired() -> Page:
    return Page(
        400,
        "link_expired",
        "This link has expired",
        ("A link works for 10 minutes after it is made; nothing was changed.", NEW_LINK),
    )


def link_used() -> Page:
    return Page(
        400,
        "link_used",
        "This link was already used",
        (
            "A link works once, and only the newest link of a connection works; "
            "nothing was changed.",
            NEW_LINK,
        ),
    )


def access_denied() -> Page:
    return Page(
        400,
        "access_denied",
        "Access was not allowed",
        (
            "Access was refused at the provider, so the connection was not authorized.",
            f"To authorize it, open a new link and allow access. {NEW_LINK}",
        ),
    )


def provider_error(code: str) -> Page:
    """The provider sent the browser back with an error of its own (other than
    access_denied)."""
    said = f" (it answered {code})" if ERROR_CODE_RE.fullmatch(code) else ""
    return Page(
        400,
        "provider_error",
        "The provider did not authorize the connection",
        (f"The provider refused the request{said}; nothing was changed.", NEW_LINK),
    )


def code_refused() -> Page:
    return Page(
        400,
        "code_refused",
        "The provider did not accept the authorization",
        (
            "The provider refused to complete the authorization, so the connection is as it was.",
            NEW_LINK,
        ),
    )


def unknown_connection() -> Page:
    return Page(
        400,
        "unknown_connection",
        "This connection no longer exists",
        ("The connection this link was made for has been deleted; nothing was changed.",),
    )


# The contract gives the callback two answers, 200 and 400: a page that says what went
# wrong is a 400 whatever the cause (the vend function's log says the cause).
def unavailable() -> Page:
    return Page(
        400,
        "unavailable",
        "The provider could not be reached",
        (
            "The authorization could not be completed just now; the connection is as it was.",
            f"Try again in a moment with a new link. {NEW_LINK}",
        ),
    )


def internal() -> Page:
    return Page(
        400,
        "internal",
        "Something went wrong",
        ("The authorization could not be completed; the connection is as it was.", NEW_LINK),
    )


# A provider function's error code on a callback -> its page. Codes not listed are the
# provider's own `error` values (invalid_request, invalid_scope, server_error, ...): RFC
# 6749's invalid_request is one of those, so it is not read as tokenvend's own.
_BY_CODE = {
    "link_invalid": link_invalid,
    "link_expired": link_expired,
    "link_used": link_used,
    "access_denied": access_denied,
    "authorization_required": code_refused,
    "provider_rejected": code_refused,
    "unknown_connection": unknown_connection,
    "unknown_provider": link_invalid,
    "forbidden": link_invalid,
    "provider_unavailable": unavailable,
    "internal": internal,
}


def refused(code: str) -> Page:
    """The page for a callback the provider function refused with `code`."""
    page = _BY_CODE.get(code)
    return page() if page is not None else provider_error(code)
