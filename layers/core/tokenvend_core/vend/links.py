"""The link flow as the vend function sees it: what it reads of a callback before any
provider function runs, and whom it asks.

The vend function holds no key and checks no state: only the provider functions may use
the link key (template.yaml's LinkKey). It reads the state's payload for one thing only, the
provider's name, to choose which provider function to invoke; a name that is not a
deployed provider's is an invalid link, answered without invoking anything. Everything in
the payload is untrusted here, and nothing else of it is used.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tokenvend_core.names import AUTHORIZING
from tokenvend_core.vend.invoker import Callback, Link

# Bounds on what a browser may bring back. A state is about 250 characters; codes are
# opaque and some providers' are long (Microsoft's run to a couple of thousand).
MAX_STATE = 1024
MAX_CODE = 4096
MAX_ERROR = 128
B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
# RFC 6749 section 4.1.2.1: an error code is printable ASCII without '"' and '\'.
ERROR_RE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")
# Whatever else a provider adds (error_description, error_uri, iss, session_state, ...)
# is neither read nor shown.
READ = ("state", "code", "error")


@runtime_checkable
class LinkInvoker(Protocol):
    def connect(self, provider: str, connection: str, caller_arn: str | None = None) -> Link: ...

    def callback(
        self, provider: str, *, state: str, code: str | None, error: str | None
    ) -> Callback: ...


@dataclass(frozen=True, slots=True)
class CallbackQuery:
    provider: str  # from the state's payload, unverified: only which function to ask
    state: str
    code: str | None
    error: str | None


def parse_callback(event: dict[str, Any]) -> CallbackQuery | None:
    """The callback's query, or None when it cannot be a provider's redirect carrying one
    of tokenvend's states (then nothing is invoked)."""
    single = event.get("queryStringParameters") or {}
    multi = event.get("multiValueQueryStringParameters") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        return None
    values: dict[str, str | None] = {}
    for name in READ:
        given = multi.get(name)
        if isinstance(given, list) and len(given) > 1:
            return None  # state=a&state=b: which one the provider meant is anyone's guess
        value = single.get(name)
        if value is not None and not isinstance(value, str):
            return None
        values[name] = value or None
    state, code, error = values["state"], values["code"], values["error"]
    if state is None or len(state) > MAX_STATE:
        return None
    if code is None and error is None:
        return None
    if code is not None and len(code) > MAX_CODE:
        return None
    if error is not None and (len(error) > MAX_ERROR or not ERROR_RE.fullmatch(error)):
        return None
    provider = provider_of_state(state)
    if provider is None:
        return None
    return CallbackQuery(provider, state, code, error)


def provider_of_state(state: str) -> str | None:
    """The provider named in a state's payload, if it is a deployed provider with an
    authorization-code grant (no other makes links); unverified."""
    payload, dot, mac = state.partition(".")
    if not dot or not B64URL_RE.fullmatch(payload) or not B64URL_RE.fullmatch(mac):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return None
    provider = data.get("p") if isinstance(data, dict) else None
    return provider if isinstance(provider, str) and provider in AUTHORIZING else None
