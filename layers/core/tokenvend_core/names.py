"""The names callers send: providers, connections, `min_ttl`, request bodies."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources
from typing import Any

from tokenvend_core.errors import InvalidRequest, UnknownProvider


def is_deployed(entry: dict[str, Any]) -> bool:
    """Whether a catalogue entry is deployed: `deploy` true, or not given."""
    return entry.get("deploy", True) is not False


def deployed_entries(text: str | None = None) -> dict[str, dict[str, Any]]:
    """The entries the catalogue deploys (catalogue/providers.toml, or `text`), read once,
    in its order: the names the API accepts and the template's provider functions
    (template.yaml is generated from the same catalogue)."""
    if text is None:
        text = resources.files("tokenvend_core.catalogue").joinpath("providers.toml").read_text()
    return {name: entry for name, entry in tomllib.loads(text).items() if is_deployed(entry)}


def deployed_providers(text: str | None = None) -> tuple[str, ...]:
    """The names of `deployed_entries`."""
    return tuple(deployed_entries(text))


_DEPLOYED = deployed_entries()
PROVIDERS = tuple(_DEPLOYED)
# The deployed providers whose grant is an authorization code: the only ones a connect link
# (and so the link callback) can name.
AUTHORIZING = tuple(
    name for name, entry in _DEPLOYED.items() if entry.get("grant") == "authorization_code"
)
CONNECTION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PROVIDER_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
MIN_TTL_DEFAULT = 300
MIN_TTL_MAX = 3600
MAX_BODY = 4096


def check_provider(name: Any, known: tuple[str, ...] = PROVIDERS) -> str:
    if not isinstance(name, str) or not PROVIDER_RE.fullmatch(name):
        raise InvalidRequest("provider must be a lower-case name such as 'dingtalk'")
    if name not in known:
        raise UnknownProvider(f"no provider {name!r}; known: {', '.join(known)}")
    return name


def check_connection(name: Any) -> str:
    if not isinstance(name, str) or not CONNECTION_RE.fullmatch(name):
        raise InvalidRequest(
            "connection must be 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_min_ttl(raw: Any) -> int:
    if raw is None:
        return MIN_TTL_DEFAULT
    if isinstance(raw, bool):
        raise InvalidRequest("min_ttl must be an integer from 0 to 3600")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and re.fullmatch(r"[0-9]{1,4}", raw):
        value = int(raw)
    else:
        raise InvalidRequest("min_ttl must be an integer from 0 to 3600")
    if not 0 <= value <= MIN_TTL_MAX:
        raise InvalidRequest("min_ttl must be an integer from 0 to 3600")
    return value


def parse_refresh_body(body: str | None, is_base64: bool = False) -> str | None:
    """The POST body: empty, or {"rejected_token_sha256": "<hex>"}. Returns the lower-case hex."""
    if body is None or body.strip() == "":
        return None
    if is_base64:
        import base64
        import binascii

        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):  # not base64 (or not ASCII), or not UTF-8
            raise InvalidRequest("the body must be JSON") from None
    if len(body) > MAX_BODY:
        raise InvalidRequest("the body is too large")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest("the body must be JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest('the body must be a JSON object {"rejected_token_sha256": "<hex>"}')
    unknown = set(data) - {"rejected_token_sha256"}
    if unknown:
        raise InvalidRequest("the body may only hold rejected_token_sha256")
    digest = data.get("rejected_token_sha256")
    if digest is None:
        return None
    if not isinstance(digest, str) or not SHA256_RE.fullmatch(digest):
        raise InvalidRequest("rejected_token_sha256 must be 64 hexadecimal characters")
    return digest.lower()
