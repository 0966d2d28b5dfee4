"""SigV4 verification as API Gateway does it for `AWS_IAM` routes (service `execute-api`).

The signature is recomputed with botocore's own signer over the request as received (same
method, path, query, signed headers, body, date), with the secret key of the access key the
request names, and compared in constant time. The messages are API Gateway's own, so that
what a caller reads locally is what it would read in AWS. Every refusal happens before any
function runs.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_tz
from typing import Any, Protocol

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from ..awslocal import Principal

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "execute-api"
MAX_SKEW = 300  # seconds: API Gateway refuses a signature dated more than 5 minutes off
_STAMP = "%Y%m%dT%H%M%SZ"
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


class KeyDirectory(Protocol):
    def lookup(self, access_key_id: str) -> Principal | None: ...


@dataclass(frozen=True, slots=True)
class Refused(Exception):
    """A request API Gateway would refuse; `kind` is its gateway response type."""

    kind: str
    message: str


MISSING = "MISSING_AUTHENTICATION_TOKEN"
INVALID = "INVALID_SIGNATURE"
EXPIRED = "EXPIRED_TOKEN"
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)


class _Recompute(SigV4Auth):
    """botocore's signer, told exactly which headers the caller signed."""

    def __init__(self, credentials: Credentials, region: str, signed: list[str]) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        chosen = HTTPHeaders()
        for name in self._signed:
            chosen[name] = request.headers[name]
        return chosen


class Verifier:
    def __init__(
        self,
        keys: KeyDirectory,
        *,
        region: str,
        max_skew: float = MAX_SKEW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._region = region
        self._max_skew = max_skew
        self._clock = clock

    def verify(
        self,
        *,
        method: str,
        host: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Principal:
        """The caller, or Refused. `headers` are keyed by lower-case name, one value each
        (repeated headers joined with commas, as the HTTP server hands them over)."""
        authorization = headers.get("authorization")
        if not authorization:
            raise Refused(MISSING, "Missing Authentication Token")
        credential, signed, signature = _parse(authorization)
        access_key_id, scope_date, region, service, terminator = credential
        if terminator != "aws4_request":
            raise Refused(
                INVALID, "Credential should be scoped with a valid terminator: 'aws4_request'."
            )
        if service != SERVICE:
            raise Refused(INVALID, f"Credential should be scoped to correct service: '{SERVICE}'.")
        if region != self._region:
            raise Refused(INVALID, "Credential should be scoped to a valid region.")
        if "host" not in signed:
            raise Refused(INVALID, "'Host' must be a 'SignedHeader' in the AWS Authorization.")
        missing = [name for name in signed if headers.get(name) is None]
        if missing:
            raise Refused(INVALID, f"The signed header {missing[0]!r} is not in the request.")
        stamp = self._timestamp(headers, signed)
        if scope_date != stamp[:8]:
            raise Refused(
                INVALID,
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                f"date from HTTP: '{scope_date}' != '{stamp[:8]}', from '{stamp}'.",
            )
        self._check_skew(stamp)
        principal = self._keys.lookup(access_key_id)
        if principal is None:
            raise Refused(INVALID, "The security token included in the request is invalid.")
        token = headers.get("x-amz-security-token")
        if principal.session_token is not None:
            if token is None or not hmac.compare_digest(token, principal.session_token):
                raise Refused(INVALID, "The security token included in the request is invalid.")
            if principal.expired:
                raise Refused(EXPIRED, "The security token included in the request is expired")
        content_sha = (
            headers.get("x-amz-content-sha256") if "x-amz-content-sha256" in signed else None
        )
        if (
            content_sha is not None
            and content_sha != _UNSIGNED_PAYLOAD
            and not hmac.compare_digest(content_sha.lower(), hashlib.sha256(body).hexdigest())
        ):
            raise Refused(
                INVALID,
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        expected = self._signature(
            principal, method, host, raw_path, raw_query, headers, signed, body, stamp
        )
        if not hmac.compare_digest(expected, signature):
            raise Refused(INVALID, MISMATCH)
        return principal

    def _timestamp(self, headers: Mapping[str, str], signed: list[str]) -> str:
        amz_date = headers.get("x-amz-date")
        if amz_date is not None:
            if "x-amz-date" not in signed:
                raise Refused(INVALID, "'X-Amz-Date' must be a 'SignedHeader'.")
            try:
                datetime.strptime(amz_date, _STAMP)
            except ValueError:
                raise Refused(INVALID, f"Invalid X-Amz-Date: {amz_date!r}") from None
            return amz_date
        date = headers.get("date")
        parsed = parsedate_tz(date) if date else None
        if parsed is None or "date" not in signed:
            raise Refused(
                INVALID,
                "Authorization header requires existence of either a 'X-Amz-Date' or a "
                "'Date' header.",
            )
        epoch = calendar.timegm(parsed[:9]) - (parsed[9] or 0)
        return datetime.fromtimestamp(epoch, UTC).strftime(_STAMP)

    def _check_skew(self, stamp: str) -> None:
        signed_at = calendar.timegm(time.strptime(stamp, _STAMP))
        now = self._clock()
        five = int(self._max_skew // 60)
        if signed_at < now - self._max_skew:
            raise Refused(
                INVALID,
                f"Signature expired: {stamp} is now earlier than {_stamp(now - self._max_skew)} "
                f"({_stamp(now)} - {five} min.)",
            )
        if signed_at > now + self._max_skew:
            raise Refused(
                INVALID,
                f"Signature not yet current: {stamp} is still later than "
                f"{_stamp(now + self._max_skew)} ({_stamp(now)} + {five} min.)",
            )

    def _signature(
        self,
        principal: Principal,
        method: str,
        host: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
        signed: list[str],
        body: bytes,
        stamp: str,
    ) -> str:
        url = f"http://{host}{raw_path or '/'}" + (f"?{raw_query}" if raw_query else "")
        # Only the signed headers: botocore also reads X-Amz-Content-SHA256 from these, as
        # the caller's signer did when it signed that header.
        copied: dict[str, Any] = {name: headers[name] for name in signed}
        request = AWSRequest(method=method, url=url, headers=copied, data=body)
        request.context["timestamp"] = stamp
        credentials = Credentials(
            principal.access_key_id, principal.secret_access_key, principal.session_token
        )
        signer = _Recompute(credentials, self._region, signed)
        canonical = signer.canonical_request(request)
        string_to_sign = signer.string_to_sign(request, canonical)
        return str(signer.signature(string_to_sign, request))


def _parse(authorization: str) -> tuple[tuple[str, ...], list[str], str]:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise Refused(
            INVALID,
            f"Authorization header requires '{ALGORITHM}' with the 'Credential', "
            "'SignedHeaders' and 'Signature' parameters.",
        )
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, _, value = part.strip().partition("=")
        params[key] = value
    for required in ("Credential", "SignedHeaders", "Signature"):
        if not params.get(required):
            raise Refused(INVALID, f"Authorization header requires '{required}' parameter.")
    credential = tuple(params["Credential"].split("/"))
    if len(credential) != 5 or not credential[0]:
        raise Refused(
            INVALID,
            "Credential should be of the form AKID/YYYYMMDD/REGION/SERVICE/aws4_request.",
        )
    signed = [name.strip().lower() for name in params["SignedHeaders"].split(";") if name.strip()]
    return credential, signed, params["Signature"].strip().lower()


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(_STAMP)
