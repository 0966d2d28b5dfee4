"""Token URLs: filling a catalogue entry's `token_url` template from a connection's secret,
and judging the result as the HTTP library will read it, before any credential goes there.

Two rules keep a request on the host the catalogue names. A `{field}` that starts the
template is a base (Azure's `authority_host`): it is put in as it is, and `check_url` judges
the whole URL. Any other `{field}` is held to its entry's `url_fields` pattern, or, without
one, to a single plain path segment; and whatever its pattern says, a value that could leave
its place in the URL (``/``, ``\\``, ``@``, ``:``, ``?``, ``#``, ``%``, whitespace, ``..``) is
refused, never escaped. So a field inside a host name (``https://{my_domain}.example.com``)
can only name a sub-domain of the host the entry chose.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from tokenvend_core.errors import InvalidRequest

if TYPE_CHECKING:
    from tokenvend_core.catalogue.spec import ProviderSpec

#: A `{field}` of a token URL template.
FIELD = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
#: A field value with no entry in `url_fields`: one plain path segment.
PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
#: What no field value may hold, whatever its pattern allows: it could move the request.
LEAVES_ITS_PLACE = re.compile(r"[/\\@:?#%\[\]\s\x00-\x1f\x7f]|^\.{1,2}$|\.\.")


def safe_url(url: str) -> str:
    """A URL without its query string, fragment or user info: fit to log or tell when the
    URL is tokenvend's own (a provider's URL goes through `scrub` as well)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unreadable address)"
    if not parts.scheme and not parts.netloc:
        return parts.path
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def template_fields(template: str) -> list[tuple[str, bool]]:
    """The `{field}`s of a token URL template, each with whether it is a leading base."""
    return [(match.group(1), match.start() == 0) for match in FIELD.finditer(template)]


def token_url(spec: ProviderSpec, secret: Mapping[str, Any]) -> str:
    """The token URL with its {fields} filled in (see the module's docstring for the rules).
    A field with no value is left as it is, for `check_url` to refuse."""
    template = secret.get("token_url") or spec.token_url or ""
    values = {**spec.defaults, **{k: v for k, v in secret.items() if isinstance(v, str)}}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        if match.start() == 0:
            return value.rstrip("/")
        return quote(field_value(spec, name, value), safe="")

    return FIELD.sub(fill, template)


def field_value(spec: ProviderSpec, name: str, value: str) -> str:
    """`value` if it may fill `{name}` (not a leading base); raise InvalidRequest otherwise.
    The message names the field and what it must be, never the value."""
    pattern = spec.url_fields.get(name)
    if pattern is None:
        if not PLAIN_SEGMENT.fullmatch(value) or value in (".", ".."):
            raise InvalidRequest(
                f"{name} must be one plain path segment: letters, digits, '.', '_', '-', '~'"
            )
        return value
    if not value.isascii() or LEAVES_ITS_PLACE.search(value):
        raise InvalidRequest(
            f"{name} may not hold '/', '\\', '@', ':', '?', '#', '%', whitespace or '..'"
        )
    if re.fullmatch(pattern, value) is None:
        raise InvalidRequest(f"{name} does not have the form {spec.name} expects: {pattern}")
    return value


def check_url(
    url: str,
    *,
    allow_http_loopback: bool,
    plain_http_hosts: Collection[str] = (),
    what: str = "the token URL",
) -> str:
    """`url` if it is fit to send credentials to; raise InvalidRequest otherwise.

    The URL is judged as the HTTP library will use it: `requests` prepares it and urllib3
    reads the host to connect to with `urllib3.util.parse_url`, which does not read every URL
    as `urllib.parse.urlsplit` does (``http://a\\@b/`` is host ``a`` to one and ``b`` to the
    other). So whatever the two could read differently is refused outright: backslashes, user
    info, fragments, whitespace and control characters, non-ASCII text, dot segments, and
    any URL whose scheme, host or port differ between the two readings. https only; plain
    http only on a loopback host and only with `allow_http_loopback` (the local stack and the
    tests), or on one of `plain_http_hosts` (host names or IP addresses, as
    Settings.plain_http_hosts holds them: the local stack's docker bridge address). The
    messages never repeat the URL; they call it `what` (a link's authorization URL is
    judged by the same rules).
    """
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{what} is empty")
    if "{" in url or "}" in url:
        raise InvalidRequest(f"{what} is not a complete URL: a {{field}} was not filled in")
    if not url.isascii():
        raise InvalidRequest(f"{what} must be ASCII (percent-encode its path)")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidRequest(f"{what} holds whitespace or a control character")
    if "\\" in url:
        raise InvalidRequest(f"{what} holds a backslash")
    if "#" in url:
        raise InvalidRequest(f"{what} may not have a fragment (#)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequest(f"{what} is malformed") from None
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme not in ("https", "http"):
        raise InvalidRequest(f"{what} must be https (http only on a loopback address)")
    if "@" in parts.netloc:
        raise InvalidRequest(f"{what} may not carry user info (user@)")
    if not host:
        raise InvalidRequest(f"{what} is not a complete URL: it names no host")
    if not _plain_host(host):
        raise InvalidRequest(f"{what}'s host is not a plain DNS name or IP address")
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        raise InvalidRequest(f"{what}'s path may not hold . or .. segments")
    for seen in _as_the_http_library_reads(url, what):
        if seen != (scheme, host, port):
            raise InvalidRequest(f"{what} reads differently to the HTTP library: refused")
    if scheme == "http" and not (
        (allow_http_loopback and _is_loopback(host)) or _listed(host, plain_http_hosts)
    ):
        raise InvalidRequest(
            f"{what} must be https (plain http only on a loopback address or a host "
            "the stack lists, where the stack allows it)"
        )
    return url


def _listed(host: str, hosts: Collection[str]) -> bool:
    """`host` (as urlsplit reads it: lower case, no brackets) is one of `hosts`; an IP
    address matches in any of its spellings."""
    if not hosts:
        return False
    try:
        return str(ipaddress.ip_address(host)) in hosts
    except ValueError:  # a host name
        return host in hosts


def _plain_host(host: str) -> bool:
    if ":" in host:  # a bracketed IPv6 address, without a zone
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return re.fullmatch(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?", host) is not None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _as_the_http_library_reads(url: str, what: str) -> list[tuple[str, str, int | None]]:
    """(scheme, host, port) as urllib3 reads the URL, and as it reads the URL that `requests`
    prepares from it (the one its connection pool is chosen by)."""
    import requests
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    def read(text: str) -> tuple[str, str, int | None]:
        parsed = parse_url(text)
        if parsed.auth:
            raise InvalidRequest(f"{what} may not carry user info (user@)")
        host = (parsed.host or "").lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return (parsed.scheme or "").lower(), host, parsed.port

    try:
        prepared = requests.Request("POST", url).prepare().url or ""
        return [read(url), read(prepared)]
    except (LocationParseError, requests.RequestException, ValueError):
        raise InvalidRequest(f"{what} is malformed") from None
