"""A token request built from a catalogue entry and a connection's secret: the grant's
parameters, the client authentication, the request format, and every form in which the
request carries a secret (so that nothing the endpoint says back can show one).

Nothing here touches the network; `refresh/endpoint.py` sends what this module builds. The
JOSE library that signs client assertions (RFC 7523) is loaded here only when a connection
uses private_key_jwt: the vend path never imports it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from secrets import token_urlsafe
from typing import Any
from urllib.parse import quote, quote_plus

from tokenvend_core.catalogue.spec import SECRET_FIELD, ProviderSpec, client_auth_for
from tokenvend_core.catalogue.urls import check_url, safe_url, token_url
from tokenvend_core.errors import AuthorizationRequired, InvalidRequest

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: How long a client assertion is valid: long enough for one attempt's retries.
ASSERTION_LIFETIME = 300
PEM_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]+-----(.*?)-----END [A-Z0-9 ]+-----", re.DOTALL)
JWS_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.([A-Za-z0-9_-]+)")


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The connection's TLS client certificate and its key, as PEM text (RFC 8705)."""

    cert_pem: str = field(repr=False)
    key_pem: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ClientAssertion:
    """What a private_key_jwt client assertion says (RFC 7523 section 3): signed afresh for
    every try, so that no two requests carry the same `jti`."""

    client_id: str
    audience: str
    alg: str
    key_pem: str = field(repr=False)
    key_id: str | None = None
    lifetime: int = ASSERTION_LIFETIME

    def sign(self, now: float) -> str:
        from joserfc import jwt

        header: dict[str, Any] = {"alg": self.alg}
        if self.key_id:
            header["kid"] = self.key_id
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.audience,
            "jti": token_urlsafe(24),
            "iat": int(now),
            "exp": int(now) + self.lifetime,
        }
        key = _signing_key(self.key_pem, self.alg)
        try:
            return jwt.encode(header, claims, key, algorithms=[self.alg])
        except Exception:  # the library's own words may quote the key: never shown
            raise InvalidRequest(_KEY_UNFIT.format(alg=self.alg)) from None


_KEY_UNFIT = (
    "the connection's private_key cannot sign {alg} client assertions: it must be an "
    "unencrypted PEM private key of the kind {alg} needs (RS/PS: RSA; ES256/384/512: EC "
    "P-256/384/521)"
)


@lru_cache(maxsize=32)
def _signing_key(pem: str, alg: str) -> Any:
    from joserfc.jwk import import_key

    try:
        key = import_key(pem, "EC") if alg.startswith("ES") else import_key(pem, "RSA")
    except Exception:  # the library's own words may quote the key: never shown
        raise InvalidRequest(_KEY_UNFIT.format(alg=alg)) from None
    if not key.is_private:
        raise InvalidRequest(_KEY_UNFIT.format(alg=alg))
    return key


def check_signing_key(pem: str, alg: str) -> None:
    """Raise InvalidRequest unless `pem` can sign `alg` client assertions."""
    ClientAssertion("check", "https://check.invalid/", alg, pem).sign(time.time())


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One HTTP request to a token endpoint. `secrets` lists every form in which this
    request carries a secret (see `secret_forms`): none may appear in anything its outcome
    says. `url` has been judged by `check_url`. With a client assertion, `renewed` signs a
    new one for another try; with a client certificate, the sender presents it."""

    url: str
    query: dict[str, str]
    form: dict[str, str] | None
    json_body: dict[str, str] | None
    headers: dict[str, str]
    secrets: tuple[str, ...]
    client_cert: ClientCertificate | None = field(default=None, repr=False)
    assertion: ClientAssertion | None = field(default=None, repr=False)
    # The raw secret values (the client secret first) and the client id, from which
    # `secrets` is made: kept to make it again for a renewed assertion.
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    client_id: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"TokenRequest(url={safe_url(self.url)!r})"

    def renewed(self, now: float) -> TokenRequest:
        """This request with a freshly signed client assertion (itself when it has none)."""
        if self.assertion is None:
            return self
        signed = self.assertion.sign(now)

        def swap(params: dict[str, str] | None) -> dict[str, str] | None:
            if params is None or "client_assertion" not in params:
                return params
            return {**params, "client_assertion": signed}

        values = (*self.secret_values, signed)
        return replace(
            self,
            query=swap(self.query) or {},
            form=swap(self.form),
            json_body=swap(self.json_body),
            secrets=secret_forms(values, client_id=self.client_id),
        )


def build_request(
    spec: ProviderSpec,
    secret: Mapping[str, Any],
    *,
    code: str | None = None,
    redirect_uri: str | None = None,
    code_verifier: str | None = None,
    allow_http_loopback: bool = False,
    plain_http_hosts: Collection[str] = (),
    now: float | None = None,
) -> TokenRequest:
    """The token request for this connection: a code exchange when `code` is given, a
    refresh-token grant for providers that authorize users, else client credentials. A code
    exchange sends `code_verifier` when given (PKCE, RFC 7636 section 4.5).

    The URL is judged again here (`check_url`), so that none reaches the HTTP library
    unchecked. Whether plain http on loopback (or on a listed host) is allowed is the
    stack's setting, applied by `validate_secret`, which every caller runs on the secret
    first; callers that know the setting pass it here too. `now` (epoch seconds, default
    the clock) dates a client assertion."""
    url = check_url(
        token_url(spec, secret),
        allow_http_loopback=allow_http_loopback,
        plain_http_hosts=plain_http_hosts,
    )
    params: dict[str, str] = {}
    values: list[str] = []
    client_secret = secret.get("client_secret")
    if isinstance(client_secret, str) and client_secret:
        values.append(client_secret)  # first: secret_forms makes HTTP Basic forms with it
    if spec.uses_refresh_token:
        if code is not None:
            params.update(
                grant_type="authorization_code",
                code=code,
                redirect_uri=redirect_uri or secret["redirect_uri"],
            )
            values.append(code)
            if code_verifier is not None:
                params["code_verifier"] = code_verifier
                values.append(code_verifier)
        else:
            refresh_token = secret.get("refresh_token")
            if not refresh_token:
                raise AuthorizationRequired(
                    "this connection has not been authorized yet: redeem a code with "
                    "`tokenvend authorize PROVIDER CONNECTION --code CODE`"
                )
            params.update(grant_type="refresh_token", refresh_token=refresh_token)
            values.append(refresh_token)
    elif spec.grant_type is None:
        params["grant_type"] = "client_credentials"
    elif spec.grant_type:
        params["grant_type"] = spec.grant_type
    for name in spec.params:
        if secret.get(name):
            params[name] = secret[name]
    extra_params = secret.get("extra_params") or {}
    params.update(extra_params)
    values += [v for name, v in secret.items() if SECRET_FIELD.search(name) and v != client_secret]
    values += extra_params.values()

    auth = client_auth_for(spec, secret, url)
    client_id = str(secret["client_id"])
    id_name, secret_name = spec.wire_name("client_id"), spec.wire_name("client_secret")
    headers = {"Accept": "application/json"}
    credentials: dict[str, str] = {}
    in_query: dict[str, str] = {}
    assertion = None
    if auth.method in ("client_secret_basic", "client_secret_post", "client_secret_query"):
        if not isinstance(client_secret, str) or not client_secret:
            raise InvalidRequest(f"{spec.name} needs the field(s): client_secret")
        if auth.method == "client_secret_basic":
            # RFC 6749 section 2.3.1: each form-urlencoded, then base64 of "id:secret".
            pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        elif auth.method == "client_secret_post":
            credentials = {id_name: client_id, secret_name: client_secret}
        else:
            in_query = {id_name: client_id, secret_name: client_secret}
    elif auth.method == "private_key_jwt":
        if not secret.get("private_key"):
            raise InvalidRequest("client_auth private_key_jwt needs the field private_key (PEM)")
        assertion = ClientAssertion(
            client_id=client_id,
            audience=url if spec.assertion_audience == "token_url" else spec.assertion_audience,
            alg=spec.assertion_alg,
            key_pem=secret["private_key"],
            key_id=secret.get("private_key_id") or None,
        )
        signed = assertion.sign(time.time() if now is None else now)
        values.append(signed)
        credentials = {
            id_name: client_id,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": signed,
        }
    elif auth.method == "tls_client_auth":
        credentials = {id_name: client_id}  # RFC 8705 section 2: no secret, the certificate
    else:
        raise InvalidRequest(f"client_auth {auth.method} is not a client authentication")
    client_cert = None
    if secret.get("tls_client_cert") and secret.get("tls_client_key"):
        client_cert = ClientCertificate(secret["tls_client_cert"], secret["tls_client_key"])
    elif auth.method == "tls_client_auth":
        raise InvalidRequest(
            "client_auth tls_client_auth needs the fields tls_client_cert and tls_client_key (PEM)"
        )

    body = {**credentials, **params}
    query, form, json_body = dict(in_query), None, None
    if auth.request_format == "query":
        query.update(body)
    elif auth.request_format == "json":
        json_body = body
    else:
        form = body
    return TokenRequest(
        url,
        query,
        form,
        json_body,
        headers,
        secret_forms(values, client_id=client_id),
        client_cert=client_cert,
        assertion=assertion,
        secret_values=tuple(v for v in values if isinstance(v, str)),
        client_id=client_id,
    )


def secret_forms(values: Iterable[Any], *, client_id: str = "") -> tuple[str, ...]:
    """Every form in which tokenvend sends these secret values, longest first: as they are,
    form- and URL-encoded (`quote_plus`, as requests encodes forms and query strings, and
    `quote`), JSON-escaped (as requests writes a JSON body, and as many servers echo one),
    base64 (standard and URL-safe, unpadded); for the client secret (the first value), the
    HTTP Basic credentials built from it: the base64 of ``id:secret`` and the whole
    ``Basic …`` value; for PEM key material, each line of its base64 body and the body in
    one piece; for a signed JWT (a client assertion), its signature alone."""
    forms: set[str] = set()
    texts = [value for value in values if isinstance(value, str) and value]
    for value in texts:
        for text in (value, *_parts(value)):
            escaped = json.dumps(text)[1:-1]
            forms.update(
                {
                    text,
                    quote_plus(text),
                    quote_plus(text, safe="/"),
                    quote(text),
                    quote(text, safe=""),
                    escaped,
                    escaped.replace("/", "\\/"),
                    json.dumps(text, ensure_ascii=False)[1:-1],
                }
            )
        if len(value) >= 8:
            raw = value.encode("utf-8")
            forms.add(base64.b64encode(raw).decode("ascii").rstrip("="))
            forms.add(base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="))
    if texts:
        pair = f"{quote_plus(client_id)}:{quote_plus(texts[0])}"
        basic = base64.b64encode(pair.encode()).decode("ascii")
        forms.update({basic, basic.rstrip("="), f"Basic {basic}"})
    return tuple(sorted(forms, key=lambda form: (-len(form), form)))


def _parts(value: str) -> list[str]:
    """The pieces of a secret that may travel or be echoed alone: the base64 lines of PEM
    blocks (and each body joined), and the signature of a compact JWS."""
    parts: list[str] = []
    for block in PEM_BLOCK.findall(value):
        lines = [line.strip() for line in block.splitlines()]
        body = [line for line in lines if line and ":" not in line]
        parts += [line for line in body if len(line) >= 16]
        joined = "".join(body)
        try:
            base64.b64decode(joined, validate=True)
        except (binascii.Error, ValueError):
            continue
        parts.append(joined)
    jws = JWS_COMPACT.fullmatch(value)
    if jws is not None and len(jws.group(1)) >= 16:
        parts.append(jws.group(1))
    return parts
