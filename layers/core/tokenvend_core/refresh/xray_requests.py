"""Sending a token request where the X-Ray SDK's `requests` patch cannot see it, and tracing
it here instead: the one module that relies on what that patch does inside.

The provider function turns the patch on (`tracer.patch(["requests"])` in refresh/runtime.py). The
patch wraps `requests.Session.request`, in a subsegment named after the URL's host, and
`Session.prepare_request`, to add the trace header. Into the subsegment it writes the URL
without its query string and, when the call raises, the exception itself: its type, its
text and its stack. The text of a connection, TLS or connect-timeout error names the whole
URL, query string and all: with `query` client authentication, the client secret.

So a token request goes through the steps `Session.request` is made of (`prepare_request`,
`merge_environment_settings`, `send`: public API of requests, with the session's and the
environment's proxy and CA settings kept). Of these the patch wraps only `prepare_request`,
where it adds the trace header and records nothing; the sending, and any failure, happen
where it does not look. The request is traced by `traced` below instead, in a subsegment
that holds the host, the URL without query string or user info, the method, and the status
or the kind of failure: never an exception or its text. `tests/security/test_traces.py` pins
the versions this was read against (`CHECKED`) and checks that the patch wraps `PATCHED` and
nothing else of the HTTP stack, so that an upgrade that changes either fails there, loudly.
Tracing never breaks a token request: the recorder's own failures are ignored.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from tokenvend_core.catalogue.urls import safe_url

if TYPE_CHECKING:
    import requests

#: What the X-Ray SDK's requests patch wraps, as `module.attribute` names of `requests`.
PATCHED = ("Session.request", "Session.prepare_request")
#: The versions whose patch was read.
CHECKED = {"aws-xray-sdk": "2.15.0", "requests": "2.34.2"}


def send(
    session: requests.Session,
    url: str,
    *,
    params: dict[str, str] | None,
    data: dict[str, str] | None,
    json: dict[str, str] | None,
    headers: dict[str, str],
    timeout: tuple[float, float],
    cert: tuple[str, str] | None = None,
    verify: str | None = None,
) -> requests.Response:
    """POST as `session.post(..., allow_redirects=False, cert=cert, verify=verify)` would,
    without `Session.request`. `cert` is a TLS client certificate's (certificate file, key
    file); `verify`, a CA bundle to trust instead of requests' own choice (None keeps it)."""
    import requests

    request = requests.Request(
        method="POST", url=url, headers=headers, data=data or {}, json=json, params=params or {}
    )
    prepared = session.prepare_request(request)
    settings = session.merge_environment_settings(prepared.url, {}, None, verify, cert)
    return session.send(prepared, timeout=timeout, allow_redirects=False, **settings)


class Trace:
    """What the subsegment of one token request may hold (nothing when not tracing)."""

    def __init__(self, subsegment: Any) -> None:
        self._subsegment = subsegment

    def answered(self, status: int) -> None:
        if self._subsegment is not None:
            self._subsegment.put_http_meta("status", status)

    def failed(self, kind: str) -> None:
        """A failure, by its kind alone ("timeout", "TLS error", an exception's class name)."""
        if self._subsegment is not None:
            self._subsegment.add_fault_flag()
            self._subsegment.put_metadata("failure", kind, "tokenvend")


@contextmanager
def traced(url: str) -> Iterator[Trace]:
    """A subsegment for one token request to `url`, when this process traces."""
    recorder = _recorder()
    subsegment = None
    if recorder is not None:
        # Without a segment to hang it on (context_missing), the request goes untraced, as
        # the patch would leave it.
        with suppress(Exception):
            subsegment = recorder.begin_subsegment(_host(url), "remote")
        if subsegment is not None:
            subsegment.put_http_meta("method", "POST")
            subsegment.put_http_meta("url", safe_url(url))
    trace = Trace(subsegment)
    try:
        yield trace
    except BaseException:
        trace.failed("crashed")  # and nothing of the exception itself
        raise
    finally:
        if recorder is not None and subsegment is not None:
            with suppress(Exception):
                recorder.end_subsegment()


def _recorder() -> Any:
    """The X-Ray recorder, if this process has loaded it (the Tracer and the patch do);
    otherwise nothing traces here, and it is not loaded for nothing."""
    core = sys.modules.get("aws_xray_sdk.core")
    return getattr(core, "xray_recorder", None)


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).hostname or "token endpoint"
    except ValueError:
        return "token endpoint"
