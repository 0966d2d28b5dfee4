"""What a catalogue entry can say, spoken over real HTTP to a token endpoint on 127.0.0.1:
client authentication apart from the request format, credential names, private_key_jwt,
templated token URLs, where the token and its lifetime are in the answer, and the fields
passed through to callers. Each entry here is TOML, read by the catalogue's own loader."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from servers import LoopbackServer, send_json
from tokenvend_core.catalogue.answer import Failure
from tokenvend_core.catalogue.request import JWT_BEARER, build_request
from tokenvend_core.catalogue.spec import ProviderSpec, parse_catalogue, validate_secret
from tokenvend_core.errors import InvalidRequest, ProviderRejected, ProviderUnavailable
from tokenvend_core.refresh.endpoint import RetryPolicy, TokenEndpoint
from tokenvend_core.tokens import Token

FAST = RetryPolicy(base=0.01, cap=0.02, max_tries=3, connect_timeout=2, read_timeout=3)
CLIENT_ID = "client id/+é"
CLIENT_SECRET = 'S3cr3t/+ =&"é\\~wire-4410'


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None

    def basic(self) -> tuple[str, str] | None:
        value = self.headers.get("authorization", "")
        if not value.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return parse_qs(f"u={user}")["u"][0], parse_qs(f"p={password}")["p"][0]


Answer = tuple[int, dict[str, Any]]


class TokenServer(LoopbackServer):
    """A token endpoint on 127.0.0.1 that records every request and answers with what the
    test queued (or a token when nothing is queued)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.answers: list[Answer | Callable[[Seen], Answer]] = []
        self.serve()
        self.url = f"{self.base_url}/token"

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length)
        seen = Seen(
            path=parts.path,
            query={k: v[0] for k, v in parse_qs(parts.query).items()},
            headers={k.lower(): v for k, v in http.headers.items()},
            body=body,
        )
        kind = seen.headers.get("content-type", "")
        if "x-www-form-urlencoded" in kind:
            seen.form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        elif "json" in kind:
            seen.json = json.loads(body)
        self.seen.append(seen)
        answer = self.answers.pop(0) if self.answers else None
        if callable(answer):
            answer = answer(seen)
        status, data = answer or (200, {"access_token": "tok-1", "expires_in": 3600})
        send_json(http, status, data)


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer() as running:
        yield running


def entry(text: str, name: str = "acme") -> ProviderSpec:
    header = f'[{name}]\ndocs = "https://docs.example.com/oauth"\ngrant = "client_credentials"\n'
    return parse_catalogue(header + text)[name]


def fetch(spec: ProviderSpec, secret: dict[str, Any], **kw: Any) -> Token | Failure:
    checked = validate_secret(spec, secret, allow_http_loopback=True)
    request = build_request(spec, checked, allow_http_loopback=True)
    return TokenEndpoint(policy=FAST, **kw).fetch(
        spec, request, deadline=time.monotonic() + 5, default_lifetime=3300
    )


BASE = 'required = ["token_url", "client_id", "client_secret"]\n'


def credentials(server: TokenServer, **extra: Any) -> dict[str, Any]:
    return {
        "token_url": server.url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **extra,
    }


# -- client authentication, apart from the request format -----------------------------------

METHODS = ["client_secret_basic", "client_secret_post", "client_secret_query"]
FORMATS = ["form", "json", "query"]


def where_params_went(seen: Seen, request_format: str) -> dict[str, Any]:
    return {"form": seen.form, "json": seen.json or {}, "query": seen.query}[request_format]


def places_of_the_secret(seen: Seen) -> set[str]:
    places = {
        "basic": seen.basic(),
        "query": (seen.query.get("client_id"), seen.query.get("client_secret")),
        "form": (seen.form.get("client_id"), seen.form.get("client_secret")),
        "json": ((seen.json or {}).get("client_id"), (seen.json or {}).get("client_secret")),
    }
    return {place for place, pair in places.items() if pair == (CLIENT_ID, CLIENT_SECRET)}


@pytest.mark.parametrize("request_format", FORMATS)
@pytest.mark.parametrize("method", METHODS)
def test_each_client_authentication_with_each_request_format(
    server: TokenServer, method: str, request_format: str
) -> None:
    # Given an entry that names both, and a connection that takes the entry's defaults
    spec = entry(BASE + f'client_auth = "{method}"\nrequest_format = "{request_format}"\n')
    # When tokenvend fetches a token
    outcome = fetch(spec, credentials(server))
    # Then the grant's parameters are where the format says, and the credentials where the
    # client authentication says, and nowhere else
    assert isinstance(outcome, Token), outcome
    seen = server.seen[-1]
    assert where_params_went(seen, request_format)["grant_type"] == "client_credentials"
    if request_format == "query":
        assert seen.body == b""
    expected = {
        "client_secret_basic": {"basic"},
        "client_secret_post": {request_format},
        "client_secret_query": {"query"},
    }[method]
    assert places_of_the_secret(seen) == expected
    assert CLIENT_SECRET not in seen.body.decode() or method == "client_secret_post"


@pytest.mark.parametrize("request_format", FORMATS)
@pytest.mark.parametrize("method", METHODS)
def test_a_connection_chooses_its_own_client_authentication_and_format(
    server: TokenServer, method: str, request_format: str
) -> None:
    spec = entry(BASE + 'client_auth = "client_secret_basic"\n')
    secret = credentials(server, client_auth=method, request_format=request_format)
    assert isinstance(fetch(spec, secret), Token)
    params = where_params_went(server.seen[-1], request_format)
    assert params["grant_type"] == "client_credentials"


@pytest.mark.parametrize(
    ("alias", "where"), [("query", "query"), ("json", "json")]
)  # the contract's legacy names: each fixes the format as well
def test_the_legacy_client_auth_names(server: TokenServer, alias: str, where: str) -> None:
    spec = entry(BASE + f'client_auth = "{alias}"\n')
    assert isinstance(fetch(spec, credentials(server)), Token)
    seen = server.seen[-1]
    params = where_params_went(seen, where)
    assert (params["client_id"], params["client_secret"]) == (CLIENT_ID, CLIENT_SECRET)
    assert params["grant_type"] == "client_credentials"
    assert seen.basic() is None
    if alias == "query":
        assert seen.body == b""


def test_a_legacy_name_and_a_contrary_format_are_refused(server: TokenServer) -> None:
    spec = entry(BASE)
    with pytest.raises(InvalidRequest, match="contradicts"):
        validate_secret(
            spec, credentials(server, client_auth="json", request_format="form"),
            allow_http_loopback=True,
        )  # fmt: skip
    assert server.seen == []


@pytest.mark.parametrize("request_format", FORMATS)
def test_credential_names_on_the_wire(server: TokenServer, request_format: str) -> None:
    # Given an endpoint that wants the credentials as username and password
    spec = entry(
        BASE + f'request_format = "{request_format}"\n'
        'credential_names = { client_id = "username", client_secret = "password" }\n'
    )
    # When tokenvend fetches (the secret keeps its own field names)
    assert isinstance(fetch(spec, credentials(server)), Token)
    # Then the wire carries username/password, and no client_id/client_secret
    params = where_params_went(server.seen[-1], request_format)
    assert (params["username"], params["password"]) == (CLIENT_ID, CLIENT_SECRET)
    assert "client_id" not in params and "client_secret" not in params


def test_credential_names_in_the_query_string(server: TokenServer) -> None:
    spec = entry(
        BASE + 'client_auth = "client_secret_query"\n'
        'credential_names = { client_id = "appkey", client_secret = "appsecret" }\n'
    )
    assert isinstance(fetch(spec, credentials(server)), Token)
    seen = server.seen[-1]
    assert (seen.query["appkey"], seen.query["appsecret"]) == (CLIENT_ID, CLIENT_SECRET)
    assert seen.form == {"grant_type": "client_credentials"}


def test_a_servers_own_grant_type_and_its_parameter(server: TokenServer) -> None:
    # Given a server whose client-credentials grant has its own name and an account field
    spec = entry(
        'required = ["token_url", "client_id", "client_secret", "account_id"]\n'
        'grant_type = "account_credentials"\nparams = ["account_id"]\n'
        'client_auth = "client_secret_basic"\n'
    )
    # When tokenvend fetches
    assert isinstance(fetch(spec, credentials(server, account_id="acct-7")), Token)
    # Then the grant goes by the server's name, with the field beside it
    assert server.seen[-1].form == {"grant_type": "account_credentials", "account_id": "acct-7"}


def test_a_server_that_takes_no_grant_type_is_sent_none(server: TokenServer) -> None:
    spec = entry(BASE + 'grant_type = ""\nrequest_format = "json"\n')
    assert isinstance(fetch(spec, credentials(server)), Token)
    assert server.seen[-1].json == {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


@pytest.mark.parametrize("value", ["client credentials", "a\nb", "&x=1", 7])
def test_a_grant_type_that_is_no_name_is_refused(value: Any) -> None:
    from tokenvend_core.catalogue.spec import CatalogueError

    with pytest.raises(CatalogueError, match="grant_type"):
        entry(BASE + f"grant_type = {json.dumps(value)}\n")


# -- private_key_jwt ----------------------------------------------------------------------

KEYS: dict[str, Callable[[], RSAKey | ECKey]] = {
    "RS256": lambda: RSAKey.generate_key(2048),
    "PS256": lambda: RSAKey.generate_key(2048),
    "ES256": lambda: ECKey.generate_key("P-256"),
    "ES384": lambda: ECKey.generate_key("P-384"),
}


def verifying(public_pem: bytes, kind: str, alg: str, audience: str) -> Callable[[Seen], Answer]:
    """An endpoint that checks the client assertion as an authorization server does."""
    from joserfc.jwk import import_key

    key = import_key(public_pem, "EC") if kind == "EC" else import_key(public_pem, "RSA")

    def answer(seen: Seen) -> Answer:
        form = seen.form
        if form.get("client_assertion_type") != JWT_BEARER:
            return 400, {"error": "invalid_client"}
        try:
            token = jwt.decode(form["client_assertion"], key, algorithms=[alg])
        except Exception:
            return 401, {"error": "invalid_client", "error_description": "bad signature"}
        claims = token.claims
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": CLIENT_ID},
            sub={"essential": True, "value": CLIENT_ID},
            aud={"essential": True, "value": audience},
            jti={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        )
        try:
            registry.validate(claims)
        except Exception:
            return 401, {"error": "invalid_client", "error_description": "bad claims"}
        if not 0 < claims["exp"] - claims["iat"] <= 600 or token.header["alg"] != alg:
            return 401, {"error": "invalid_client", "error_description": "bad lifetime"}
        if "client_secret" in form or "authorization" in seen.headers:
            return 400, {"error": "invalid_request", "error_description": "two methods"}
        return 200, {"access_token": f"tok-{claims['jti']}", "expires_in": 3600}

    return answer


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_private_key_jwt_with_rsa_and_ec_keys(server: TokenServer, alg: str) -> None:
    # Given a connection whose client authenticates with a signed assertion
    key = KEYS[alg]()
    kind = "EC" if alg.startswith("ES") else "RSA"
    spec = entry(
        'required = ["token_url", "client_id", "client_secret"]\n'
        f'client_auth = "private_key_jwt"\nassertion_alg = "{alg}"\n'
    )
    secret = {
        "token_url": server.url,
        "client_id": CLIENT_ID,
        "private_key": key.as_pem(private=True).decode(),
        "private_key_id": "key-1",
    }
    server.answers.append(verifying(key.as_pem(private=False), kind, alg, server.url))
    # When tokenvend fetches a token
    outcome = fetch(spec, secret)
    # Then the endpoint verified the signature and the claims, and no secret was sent
    assert isinstance(outcome, Token), outcome
    seen = server.seen[-1]
    assert seen.form["client_id"] == CLIENT_ID
    assert jwt.decode(seen.form["client_assertion"], key, [alg]).header["kid"] == "key-1"
    assert "-----BEGIN" not in seen.body.decode()


def test_private_key_jwt_signs_a_new_assertion_for_every_try(server: TokenServer) -> None:
    key = RSAKey.generate_key(2048)
    spec = entry(BASE + 'client_auth = "private_key_jwt"\n')
    secret = {
        "token_url": server.url,
        "client_id": CLIENT_ID,
        "private_key": key.as_pem(private=True).decode(),
    }
    check = verifying(key.as_pem(private=False), "RSA", "RS256", server.url)
    server.answers += [(503, {"error": "temporarily_unavailable"}), check]
    outcome = fetch(spec, secret)
    assert isinstance(outcome, Token), outcome
    ids = [jwt.decode(s.form["client_assertion"], key).claims["jti"] for s in server.seen]
    assert len(ids) == 2 and ids[0] != ids[1]


def test_private_key_jwt_with_a_fixed_audience(server: TokenServer) -> None:
    key = ECKey.generate_key("P-256")
    spec = entry(
        BASE + 'client_auth = "private_key_jwt"\nassertion_alg = "ES256"\n'
        'assertion_audience = "https://login.example.com/"\n'
    )
    secret = {
        "token_url": server.url,
        "client_id": CLIENT_ID,
        "private_key": key.as_pem(private=True).decode(),
    }
    server.answers.append(
        verifying(key.as_pem(private=False), "EC", "ES256", "https://login.example.com/")
    )
    assert isinstance(fetch(spec, secret), Token)


def test_an_assertion_signed_with_the_wrong_key_is_refused_and_never_shown(
    server: TokenServer,
) -> None:
    # Given an endpoint that knows another key and echoes the request in its refusal
    key, other = RSAKey.generate_key(2048), RSAKey.generate_key(2048)
    spec = entry(BASE + 'client_auth = "private_key_jwt"\n')
    pem = key.as_pem(private=True).decode()
    secret = {"token_url": server.url, "client_id": CLIENT_ID, "private_key": pem}
    refuse = verifying(other.as_pem(private=False), "RSA", "RS256", server.url)

    def echo(seen: Seen) -> Answer:
        status, body = refuse(seen)
        assertion = seen.form["client_assertion"]
        body["error_description"] = f"got {assertion} sig {assertion.rsplit('.', 1)[1]}"
        return status, body

    server.answers.append(echo)
    # When tokenvend fetches
    outcome = fetch(spec, secret)
    # Then the provider's refusal is told, without the assertion or any part of its signature
    assert isinstance(outcome, Failure) and isinstance(outcome.error, ProviderRejected)
    assertion = server.seen[-1].form["client_assertion"]
    message = outcome.error.message
    assert "invalid_client" in message and "[redacted]" in message
    assert assertion not in message and assertion.rsplit(".", 1)[1] not in message


@pytest.mark.parametrize(
    ("alg", "make"),
    [
        ("ES256", lambda: RSAKey.generate_key(2048).as_pem(private=True).decode()),
        ("RS256", lambda: ECKey.generate_key("P-256").as_pem(private=True).decode()),
        ("ES256", lambda: ECKey.generate_key("P-384").as_pem(private=True).decode()),
        ("RS256", lambda: RSAKey.generate_key(2048).as_pem(private=False).decode()),
        ("RS256", lambda: "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----"),
    ],
)
def test_a_key_that_cannot_sign_is_refused_before_any_request(
    server: TokenServer, alg: str, make: Callable[[], str]
) -> None:
    spec = entry(BASE + f'client_auth = "private_key_jwt"\nassertion_alg = "{alg}"\n')
    pem = make()
    secret = {"token_url": server.url, "client_id": CLIENT_ID, "private_key": pem}
    with pytest.raises(InvalidRequest, match="private_key") as caught:
        validate_secret(spec, secret, allow_http_loopback=True)
    assert pem not in caught.value.message and "BEGIN" not in caught.value.message
    assert server.seen == []


def test_private_key_jwt_needs_a_private_key_and_no_client_secret(server: TokenServer) -> None:
    spec = entry(BASE + 'client_auth = "private_key_jwt"\n')
    with pytest.raises(InvalidRequest, match="private_key"):
        validate_secret(spec, {"token_url": server.url, "client_id": "c"}, allow_http_loopback=True)


# -- templated token URLs -------------------------------------------------------------------


# An entry's own token_url is https; a connection's token_url may be a template too (as the
# contract says of azure's), held to the same url_fields: that is what reaches loopback here.
TEMPLATED = entry(
    'url_fields = { octet = "[0-9]{1,3}", org = "[A-Za-z0-9-]{1,63}" }\n'
    'required = ["token_url", "client_id", "client_secret", "octet", "org"]\n'
)


def templated_secret(server: TokenServer, **fields: str) -> dict[str, Any]:
    url = f"http://127.0.0.{{octet}}:{server.port}/{{org}}/token"
    secret = {"token_url": url, "client_id": "c", "client_secret": CLIENT_SECRET}
    return {**secret, "octet": "1", "org": "acme", **fields}


def test_an_entrys_templated_https_token_url_is_filled_in() -> None:
    spec = entry(
        'token_url = "https://{my_domain}.my.example.com/services/oauth2/token"\n'
        'url_fields = { my_domain = "[A-Za-z0-9-]{1,63}" }\n'
        'required = ["client_id", "client_secret", "my_domain"]\n'
    )
    secret = {"client_id": "c", "client_secret": "s", "my_domain": "acme-1"}
    request = build_request(spec, validate_secret(spec, secret))
    assert request.url == "https://acme-1.my.example.com/services/oauth2/token"
    for hostile in ("evil.com/x", "a@b", "..", "%2F", "evil.com", "x.evil.com:443"):
        with pytest.raises(InvalidRequest, match="my_domain"):
            validate_secret(spec, {**secret, "my_domain": hostile})


def test_a_templated_token_url_is_filled_in(server: TokenServer) -> None:
    spec = TEMPLATED
    secret = templated_secret(server, org="acme-1")
    assert isinstance(fetch(spec, secret), Token)
    assert server.seen[-1].path == "/acme-1/token"


HOSTILE = [
    ("org", "evil.com/x"),
    ("org", "a@b"),
    ("org", ".."),
    ("org", "%2F"),
    ("org", "a.b"),  # the pattern has no '.'
    ("org", "acme#x"),
    ("org", "acme?x=1"),
    ("org", "ac me"),
    ("org", "acmé"),
    ("octet", "1.evil.com"),
    ("octet", "1@evil.com"),
    ("octet", "1:9"),
    ("octet", "1/x"),
]


@pytest.mark.parametrize(("name", "value"), HOSTILE)
def test_a_field_can_never_move_the_request(server: TokenServer, name: str, value: str) -> None:
    # Given a connection whose field holds a value that would leave its place
    spec = TEMPLATED
    secret = templated_secret(server, **{name: value})
    # When it is checked, or a request is built from it regardless
    with pytest.raises(InvalidRequest) as checked:
        validate_secret(spec, secret, allow_http_loopback=True)
    with pytest.raises(InvalidRequest):
        build_request(spec, secret, allow_http_loopback=True)
    # Then it is refused, by the field's name, and nothing is sent anywhere
    assert name in checked.value.message
    assert server.seen == []


# -- reading the answer ---------------------------------------------------------------------


def answered(server: TokenServer, spec_text: str, body: dict[str, Any]) -> Token | Failure:
    server.answers.append((200, body))
    return fetch(entry(BASE + spec_text), credentials(server))


@pytest.mark.parametrize(
    ("spec_text", "body"),
    [
        ('token_field = "data.token"\n', {"data": {"token": "tok-deep"}, "expires_in": 60}),
        ('token_field = "jwt"\n', {"jwt": "tok-deep", "expires_in": 60}),
    ],
)
def test_the_token_at_its_field(server: TokenServer, spec_text: str, body: dict[str, Any]) -> None:
    outcome = answered(server, spec_text, body)
    assert isinstance(outcome, Token) and outcome.access_token == "tok-deep"


def test_an_answer_without_the_token_at_its_field_is_malformed(server: TokenServer) -> None:
    server.answers += [(200, {"access_token": "top-level"})] * FAST.max_tries
    outcome = fetch(entry(BASE + 'token_field = "data.token"\n'), credentials(server))
    assert isinstance(outcome, Failure) and isinstance(outcome.error, ProviderUnavailable)
    assert "data.token" in outcome.error.message


def in_an_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


@pytest.mark.parametrize(
    ("spec_text", "value"),
    [
        ("", 3600),
        ("", "3600"),
        ('expires_kind = "milliseconds"\n', 3_600_000),
        ('expires_kind = "milliseconds"\n', "3600000"),
        ('expires_kind = "absolute"\n', lambda: int(in_an_hour().timestamp())),
        ('expires_kind = "absolute"\n', lambda: int(in_an_hour().timestamp() * 1000)),
        ('expires_kind = "absolute"\n', lambda: str(int(in_an_hour().timestamp()))),
        ('expires_kind = "absolute"\n', lambda: in_an_hour().strftime("%Y-%m-%dT%H:%M:%SZ")),
        (
            'expires_kind = "absolute"\n',
            lambda: in_an_hour().astimezone(timezone_plus_8()).isoformat(),
        ),
    ],
)
def test_each_expiry_kind(server: TokenServer, spec_text: str, value: Any) -> None:
    body = {"access_token": "tok", "expires_in": value() if callable(value) else value}
    before = time.time()
    outcome = answered(server, spec_text, body)
    assert isinstance(outcome, Token), outcome
    assert int(before) + 3590 <= outcome.expires_at <= time.time() + 3601


def timezone_plus_8() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=8))


def test_the_lifetime_at_a_dotted_path(server: TokenServer) -> None:
    spec_text = 'expires_field = "data.expire_at"\nexpires_kind = "absolute"\n'
    at = int(time.time()) + 1800
    outcome = answered(server, spec_text, {"access_token": "tok", "data": {"expire_at": at}})
    assert isinstance(outcome, Token) and outcome.expires_at == at


def test_no_lifetime_means_the_default_lifetime(server: TokenServer) -> None:
    before = time.time()
    outcome = answered(server, 'expires_field = "data.expire_at"\n', {"access_token": "tok"})
    assert isinstance(outcome, Token)
    assert int(before) + 3300 <= outcome.expires_at <= time.time() + 3300


@pytest.mark.parametrize(
    ("spec_text", "value"),
    [
        ('expires_kind = "milliseconds"\n', 0),
        ('expires_kind = "milliseconds"\n', -1000),
        ('expires_kind = "absolute"\n', lambda: int(time.time()) - 60),
        ('expires_kind = "absolute"\n', lambda: int((time.time() - 60) * 1000)),
        ('expires_kind = "absolute"\n', lambda: "2001-01-01T00:00:00Z"),
    ],
)
def test_a_dead_token_is_still_a_failure(server: TokenServer, spec_text: str, value: Any) -> None:
    body = {"access_token": "tok-dead", "expires_in": value() if callable(value) else value}
    server.answers += [(200, body)] * FAST.max_tries
    outcome = fetch(entry(BASE + spec_text), credentials(server))
    assert isinstance(outcome, Failure) and outcome.dead_token_sha256 is not None
    assert "already expired" in outcome.error.message


# -- passthrough ----------------------------------------------------------------------------

PASSING = 'passthrough = ["instance_url", "data.region", "data.quota", "data.sandbox", "id"]\n'


def test_passthrough_fields_go_into_the_tokens_extra(server: TokenServer) -> None:
    body = {
        "access_token": "tok",
        "expires_in": 3600,
        "instance_url": "https://acme.my.example.com",
        "data": {"region": "eu-1", "quota": 5000, "sandbox": False},
        "other": "not passed",
    }
    outcome = answered(server, PASSING, body)
    assert isinstance(outcome, Token)
    assert outcome.extra == {
        "instance_url": "https://acme.my.example.com",
        "data.region": "eu-1",
        "data.quota": 5000,
        "data.sandbox": False,
    }


def test_without_passthrough_extra_is_empty(server: TokenServer) -> None:
    outcome = answered(server, "", {"access_token": "tok", "instance_url": "https://x"})
    assert isinstance(outcome, Token) and outcome.extra == {}


ECHOES = {
    "raw": CLIENT_SECRET,
    "form-encoded": quote_plus(CLIENT_SECRET),
    "url-encoded": quote(CLIENT_SECRET, safe=""),
    "json-escaped": json.dumps(CLIENT_SECRET)[1:-1],
    "upper case": CLIENT_SECRET.upper(),
    "base64": base64.b64encode(CLIENT_SECRET.encode()).decode().rstrip("="),
    "basic": base64.b64encode(
        f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}".encode()
    ).decode(),
}


@pytest.mark.parametrize("encoding", sorted(ECHOES))
def test_a_passthrough_value_that_echoes_the_client_secret_is_dropped(
    server: TokenServer, encoding: str
) -> None:
    # Given an endpoint that puts the client secret, encoded, into a passed-through field
    body = {
        "access_token": "tok",
        "instance_url": f"https://x.example.com/?s={ECHOES[encoding]}",
        "data": {"region": "eu-1"},
    }
    # When the token is read
    outcome = answered(server, PASSING, body)
    # Then that field is dropped, and the others kept
    assert isinstance(outcome, Token)
    assert outcome.extra == {"data.region": "eu-1"}


@pytest.mark.parametrize(
    "value",
    [
        {"nested": "object"},
        ["a", "list"],
        None,
        "",
        "two\nlines",
        "x" * 5000,
        float("inf"),
        "tok-secret-access",  # the access token itself
        "rt-secret-refresh",  # the refresh token the answer rotates
    ],
)
def test_a_passthrough_value_unfit_to_show_is_dropped(server: TokenServer, value: Any) -> None:
    body = {
        "access_token": "tok-secret-access",
        "refresh_token": "rt-secret-refresh",
        "instance_url": value,
    }
    server.answers.append(lambda seen: (200, body))
    outcome = fetch(entry(BASE + PASSING), credentials(server))
    assert isinstance(outcome, Token) and outcome.extra == {}
