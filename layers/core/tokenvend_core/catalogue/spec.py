"""What a catalogue entry can say (providers.toml, checked against providers.schema.json),
read into a `ProviderSpec`; and a connection's secret checked against its provider's entry.

The loader refuses a bad entry when the catalogue is read, with a message that names the
entry and the key: the schema is for tools and tests (jsonschema is not shipped in the
layer), and this module holds the same rules for the runtime.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from tokenvend_core.catalogue.urls import FIELD, check_url, template_fields, token_url
from tokenvend_core.errors import InvalidRequest
from tokenvend_core.tokens import seconds

GRANTS = ("client_credentials", "authorization_code")
#: A grant_type value an entry may send instead of client_credentials; empty sends none.
GRANT_TYPE = re.compile(r"(?:[A-Za-z][A-Za-z0-9_.:/-]{0,127})?")
#: Every client authentication a catalogue entry or a connection may name.
CLIENT_AUTH_METHODS = (
    "client_secret_basic",
    "client_secret_post",
    "client_secret_query",
    "private_key_jwt",
    "tls_client_auth",
    "query",
    "json",
)
#: The legacy names the contract gives as a connection's `client_auth`, each of which fixes
#: the request format as well as the client authentication.
ALIASES = {"query": ("client_secret_query", "query"), "json": ("client_secret_post", "json")}
#: The client authentications the contract names (each sends the client secret).
CLIENT_AUTHS = ("query", "client_secret_post", "client_secret_basic", "json")
#: The client authentications that send the client secret, by their own names.
SECRET_AUTHS = ("client_secret_basic", "client_secret_post", "client_secret_query")
REQUEST_FORMATS = ("form", "json", "query")
EXPIRES_KINDS = ("seconds", "milliseconds", "absolute")
ASSERTION_ALGS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
)  # fmt: skip
#: The providers of the mission's seed documents; every other entry cites its vendor's
#: document (`docs`).
SEEDS = frozenset({"aspose", "wps365", "azure", "dingtalk", "oauth2"})
COMMON_OPTIONAL = (
    "token_url",
    "client_auth",
    "request_format",
    "extra_params",
    "default_lifetime",
    "allowed_principals",
    "private_key",
    "private_key_id",
    "tls_client_cert",
    "tls_client_key",
)
#: Optional fields of a connection's secret for entries whose grant is authorization_code:
#: the link flow's authorization endpoint (overriding the entry's) and the scope asked for.
LINK_OPTIONAL = ("authorize_url", "scope")
#: What may separate scopes in a provider's `scope` parameter (scope_separator).
SCOPE_SEPARATORS = (" ", ",", "+", ";")
#: Fields of a connection's secret that are text.
TEXT_FIELDS = (
    *LINK_OPTIONAL,
    "token_url",
    "client_auth",
    "request_format",
    "private_key",
    "private_key_id",
    "tls_client_cert",
    "tls_client_key",
)
# Fields of a connection's secret whose values are secret (client_secret, refresh_token,
# private_key, tls_client_key, and whatever key material a provider may come to need);
# every extra_params value is secret too.
SECRET_FIELD = re.compile(r"secret|password|private_key|assertion|(?:^|_)token$|(?:^|_)key$")
#: A passthrough name that looks secret, in any of its dotted path's parts.
SECRET_LOOKING = re.compile(r"secret|password|private_?key|assertion|token$", re.IGNORECASE)
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
DOTTED = re.compile(r"[A-Za-z0-9_-]{1,64}(?:\.[A-Za-z0-9_-]{1,64}){0,7}")
WIRE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SECRET_NAME = re.compile(r"[a-z][A-Za-z0-9_]{0,63}")


class CatalogueError(ValueError):
    """The catalogue holds an entry that cannot work: tokenvend refuses to start with it."""


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One catalogue entry: every key of providers.toml, with its default (the keys are
    described in providers.toml's header and in providers.schema.json)."""

    name: str
    grant: str
    required: tuple[str, ...]
    title: str = ""
    docs: str | None = None
    deploy: bool = True
    token_url: str | None = None
    url_fields: dict[str, str] = field(default_factory=dict)
    optional: tuple[str, ...] = ()
    defaults: dict[str, str] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    client_auth: str = "client_secret_post"
    request_format: str = "form"
    # The grant_type a client-credentials request sends in place of the standard one (a
    # server's own grant, e.g. account_credentials); "" sends none.
    grant_type: str | None = None
    credential_names: dict[str, str] = field(default_factory=dict)
    url_client_auth: dict[str, str] = field(default_factory=dict)
    token_field: str = "access_token"  # noqa: S105 (a field's name, not a credential)
    expires_field: str = "expires_in"
    expires_kind: str = "seconds"
    passthrough: tuple[str, ...] = ()
    assertion_alg: str = "RS256"
    assertion_audience: str = "token_url"
    error_name: str = "error"
    error_code: str | None = None
    error_code_prefix: str = ""
    error_message: tuple[str, ...] = ("error_description",)
    throttle_codes: tuple[str, ...] = ()
    # The link flow (authorization_code entries): the provider's authorization endpoint,
    # whether it takes PKCE (RFC 7636, S256), and what separates scopes in its `scope`.
    authorize_url: str | None = None
    pkce: bool = False
    scope_separator: str = " "

    @property
    def uses_refresh_token(self) -> bool:
        return self.grant == "authorization_code"

    @property
    def fields(self) -> tuple[str, ...]:
        link = LINK_OPTIONAL if self.uses_refresh_token else ()
        return tuple(dict.fromkeys(self.required + self.optional + COMMON_OPTIONAL + link))

    def wire_name(self, credential: str) -> str:
        """The name `client_id` or `client_secret` takes on the wire."""
        return self.credential_names.get(credential, credential)


# -- reading the catalogue --------------------------------------------------------------

KEYS = frozenset(ProviderSpec.__dataclass_fields__) - {"name"}
LISTS = ("required", "optional", "params", "error_message", "throttle_codes", "passthrough")
TABLES = ("url_fields", "defaults", "credential_names", "url_client_auth")
TEXTS = (
    "title", "docs", "grant", "token_url", "client_auth", "request_format", "token_field",
    "expires_field", "expires_kind", "assertion_alg", "assertion_audience", "error_name",
    "error_code", "error_code_prefix", "authorize_url", "scope_separator",
)  # fmt: skip


@cache
def load_specs() -> dict[str, ProviderSpec]:
    """The catalogue shipped beside this module, read and checked once per process."""
    text = resources.files(__package__).joinpath("providers.toml").read_text("utf-8")
    return parse_catalogue(text)


def spec_for(name: str) -> ProviderSpec:
    return load_specs()[name]


def parse_catalogue(text: str, source: str = "providers.toml") -> dict[str, ProviderSpec]:
    """Every entry of a catalogue in TOML; raise CatalogueError for the first bad one."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{source}: not valid TOML: {exc}") from None
    return {name: entry_spec(name, entry, source) for name, entry in data.items()}


def entry_spec(name: str, entry: Any, source: str = "providers.toml") -> ProviderSpec:
    """One entry as a ProviderSpec; raise CatalogueError naming the entry and its key."""

    def bad(what: str) -> CatalogueError:
        return CatalogueError(f"{source}: [{name}] {what}")

    if not NAME.fullmatch(name):
        raise bad("the provider's name must match [a-z0-9][a-z0-9_-]{0,31}")
    if not isinstance(entry, dict):
        raise bad("must be a table")
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        raise bad(f"unknown key(s): {', '.join(unknown)}; allowed: {', '.join(sorted(KEYS))}")
    for key in ("grant", "required"):
        if key not in entry:
            raise bad(f"needs the key {key}")
    for key in TEXTS:
        if key in entry and (not isinstance(entry[key], str) or not entry[key]):
            raise bad(f"{key} must be a non-empty string")
    for key in LISTS:
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad(f"{key} must be a list of non-empty strings")
        if len(set(value)) != len(value):
            raise bad(f"{key} lists a name twice")
    for key in TABLES:
        value = entry.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
            raise bad(f"{key} must be a table of non-empty strings")
    for key in ("deploy", "pkce"):
        if key in entry and not isinstance(entry[key], bool):
            raise bad(f"{key} must be true or false")
    if name not in SEEDS and "docs" not in entry:
        raise bad("needs docs: the URL of the vendor's document the entry was checked against")
    if "docs" in entry and not entry["docs"].startswith("https://"):
        raise bad("docs must be an https URL")

    _check_choices(entry, bad)
    _check_fields(entry, bad)
    _check_token_url(entry, bad)
    _check_link(entry, bad)
    _check_answer(entry, bad)

    values = dict(entry)
    for key in LISTS:
        if key in values:
            values[key] = tuple(values[key])
    values.setdefault("title", name)
    return ProviderSpec(name=name, **values)


def _check_choices(entry: dict[str, Any], bad: Any) -> None:
    if entry["grant"] not in GRANTS:
        raise bad(f"grant must be one of: {', '.join(GRANTS)}")
    if "grant_type" in entry:
        grant_type = entry["grant_type"]
        if not isinstance(grant_type, str) or not GRANT_TYPE.fullmatch(grant_type):
            raise bad("grant_type must be a grant type's name (a URN allowed), or empty")
        if entry["grant"] != "client_credentials":
            raise bad("grant_type replaces only the client_credentials grant's name")
    auths = [("client_auth", entry.get("client_auth", "client_secret_post"))]
    auths += [(f"url_client_auth {k!r}", v) for k, v in entry.get("url_client_auth", {}).items()]
    for where, auth in auths:
        if auth not in CLIENT_AUTH_METHODS:
            raise bad(f"{where} must be one of: {', '.join(CLIENT_AUTH_METHODS)}")
    request_format = entry.get("request_format", "form")
    if request_format not in REQUEST_FORMATS:
        raise bad(f"request_format must be one of: {', '.join(REQUEST_FORMATS)}")
    alias = ALIASES.get(entry.get("client_auth", ""))
    if alias and "request_format" in entry and request_format != alias[1]:
        raise bad(
            f"client_auth {entry['client_auth']!r} sends a {alias[1]} request: "
            f"request_format {request_format!r} contradicts it"
        )
    for ending in entry.get("url_client_auth", {}):
        if not ending.startswith("/"):
            raise bad("url_client_auth keys are URL path endings, starting with '/'")
    if entry.get("expires_kind", "seconds") not in EXPIRES_KINDS:
        raise bad(f"expires_kind must be one of: {', '.join(EXPIRES_KINDS)}")
    if entry.get("assertion_alg", "RS256") not in ASSERTION_ALGS:
        raise bad(f"assertion_alg must be one of: {', '.join(ASSERTION_ALGS)}")
    audience = entry.get("assertion_audience", "token_url")
    if audience != "token_url" and not audience.startswith("https://"):
        raise bad("assertion_audience must be 'token_url' or an https URL")
    names = entry.get("credential_names", {})
    if set(names) - {"client_id", "client_secret"}:
        raise bad("credential_names may rename only client_id and client_secret")
    if not all(WIRE_NAME.fullmatch(v) for v in names.values()):
        raise bad("credential_names values must be parameter names ([A-Za-z0-9_.-]{1,64})")


def _check_fields(entry: dict[str, Any], bad: Any) -> None:
    required, optional = entry["required"], entry.get("optional", [])
    for name in required + optional + list(entry.get("defaults", {})):
        if not SECRET_NAME.fullmatch(name):
            raise bad(f"a secret field's name is a word ([a-z][A-Za-z0-9_]*): {name!r}")
    if "client_id" not in required:
        raise bad("required must hold client_id: every client authentication sends it")
    if set(required) & set(optional):
        raise bad("a field is both required and optional")
    unknown = set(entry.get("params", [])) - set(required) - set(optional)
    if unknown:
        raise bad(f"params must be secret fields (required or optional): {', '.join(unknown)}")
    if "token_url" not in entry and "token_url" not in required:
        raise bad("without a token_url, required must hold token_url")


def _check_token_url(entry: dict[str, Any], bad: Any) -> None:
    patterns = entry.get("url_fields", {})
    for field_name, pattern in patterns.items():
        try:
            re.compile(pattern)
        except re.error:
            raise bad(f"url_fields {field_name!r} is not a valid regular expression") from None
    template = entry.get("token_url")
    if template is None:
        return
    fields = template_fields(template)
    if any(brace in FIELD.sub("x", template) for brace in "{}"):
        raise bad("token_url has a malformed {field}")
    if not (template.startswith("https://") or (fields and fields[0][1])):
        raise bad("token_url must be an https URL or start with a {field} base")
    known = set(entry["required"]) | set(entry.get("optional", [])) | set(entry.get("defaults", {}))
    for field_name, _ in fields:
        if field_name not in known:
            raise bad(f"token_url's {{{field_name}}} is no secret field and has no default")
    inner = {name for name, leading in fields if not leading}
    stray = set(patterns) - inner
    if stray:
        raise bad(f"url_fields names no {{field}} inside token_url: {', '.join(sorted(stray))}")


def _check_link(entry: dict[str, Any], bad: Any) -> None:
    link_keys = [key for key in ("authorize_url", "pkce", "scope_separator") if key in entry]
    if link_keys and entry["grant"] != "authorization_code":
        raise bad(f"{', '.join(link_keys)}: only an authorization_code grant has a link flow")
    if "authorize_url" in entry:
        # Judged in full (check_url) where a link is made; here, without the HTTP library.
        url = entry["authorize_url"]
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
        if not url.startswith("https://") or not host:
            raise bad("authorize_url must be an https URL")
        if any(ch in url for ch in "{}#\\@") or any(ch.isspace() for ch in url):
            raise bad("authorize_url must be a plain URL (no {field}, #, @, \\ or spaces)")
    if entry.get("scope_separator", " ") not in SCOPE_SEPARATORS:
        raise bad(f"scope_separator must be one of: {', '.join(map(repr, SCOPE_SEPARATORS))}")


def _check_answer(entry: dict[str, Any], bad: Any) -> None:
    for key in ("token_field", "expires_field"):
        if key in entry and not DOTTED.fullmatch(entry[key]):
            raise bad(f"{key} must be a dotted path of answer fields (a.b.c)")
    for path in entry.get("passthrough", []):
        if not DOTTED.fullmatch(path):
            raise bad(f"passthrough {path!r} must be a dotted path of answer fields (a.b.c)")
        if any(SECRET_LOOKING.search(part) for part in path.split(".")):
            raise bad(
                f"passthrough {path!r} looks like a secret (secret, password, private_key, "
                "assertion, ...token): a secret is never passed through"
            )
    for path in entry.get("error_message", []):
        if not DOTTED.fullmatch(path):
            raise bad(f"error_message {path!r} must be a dotted path of answer fields")


# -- a connection's client authentication ------------------------------------------------


class ClientAuth(NamedTuple):
    """How one request authenticates the client (`method`, one of the RFC names) and where
    its parameters go (`request_format`)."""

    method: str
    request_format: str


def client_auth_for(spec: ProviderSpec, secret: Mapping[str, Any], url: str) -> ClientAuth:
    """The connection's own `client_auth`, else the entry's for a token URL whose path ends
    so (`url_client_auth`), else the entry's; the request format likewise, except that a
    legacy alias (`query`, `json`) fixes it."""
    auth = secret.get("client_auth")
    if not auth:
        path = urlsplit(url).path
        auth = next(
            (a for ending, a in spec.url_client_auth.items() if path.endswith(ending)),
            spec.client_auth,
        )
    if isinstance(auth, str) and auth in ALIASES:
        return ClientAuth(*ALIASES[auth])
    return ClientAuth(str(auth), str(secret.get("request_format") or spec.request_format))


# -- a connection's secret --------------------------------------------------------------


def validate_secret(
    spec: ProviderSpec,
    value: Any,
    *,
    allow_http_loopback: bool = False,
    plain_http_hosts: Collection[str] = (),
) -> dict[str, Any]:
    """Check a connection's secret against the provider's fields; raise InvalidRequest.
    A private key is checked by signing with it (this loads the JOSE library, and only
    for a connection that uses private_key_jwt); a client certificate by matching its key."""
    if not isinstance(value, dict):
        raise InvalidRequest("the connection's secret must be a JSON object")
    unknown = sorted(set(value) - set(spec.fields))
    if unknown:
        raise InvalidRequest(
            f"unknown field(s) for {spec.name}: {', '.join(unknown)}; "
            f"allowed: {', '.join(spec.fields)}"
        )
    # Whether the client secret is needed depends on the client authentication; the URL's
    # part in that (url_client_auth) is read from its template here, and again, filled in,
    # once the URL is judged.
    # A field of the wrong type is named as such before any is called missing: {"client_id":
    # 1} is a number where text belongs, not a missing client_id.
    text_fields = (set(spec.required) | set(spec.optional) | set(TEXT_FIELDS)) - {
        "refresh_expires_at"
    }
    wrong = [
        f"field {name} must be a string, not {_json_type(field_value)}"
        for name, field_value in value.items()
        if name in text_fields and not isinstance(field_value, str)
    ]
    if wrong:
        raise InvalidRequest("; ".join(wrong))
    needs_secret = _uses_secret(spec, value)
    missing = [
        name
        for name in spec.required
        if (name != "client_secret" or needs_secret) and not _text(value.get(name))
    ]
    if missing:
        raise InvalidRequest(f"{spec.name} needs the field(s): {', '.join(missing)}")
    if "refresh_expires_at" in value and seconds(value["refresh_expires_at"]) is None:
        raise InvalidRequest("field refresh_expires_at must be a number")
    auth = value.get("client_auth")
    if auth is not None and auth not in CLIENT_AUTH_METHODS:
        raise InvalidRequest(f"client_auth must be one of: {', '.join(CLIENT_AUTH_METHODS)}")
    request_format = value.get("request_format")
    if request_format is not None and request_format not in REQUEST_FORMATS:
        raise InvalidRequest(f"request_format must be one of: {', '.join(REQUEST_FORMATS)}")
    if auth in ALIASES and request_format not in (None, ALIASES[auth][1]):
        raise InvalidRequest(
            f"client_auth {auth} sends a {ALIASES[auth][1]} request: request_format "
            f"{request_format} contradicts it"
        )
    extra = value.get("extra_params")
    if extra is not None and not (
        isinstance(extra, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items())
    ):
        raise InvalidRequest("extra_params must be an object of strings")
    lifetime = value.get("default_lifetime")
    if lifetime is not None and (
        isinstance(lifetime, bool) or not isinstance(lifetime, int) or not 60 <= lifetime <= 86400
    ):
        raise InvalidRequest("default_lifetime must be an integer from 60 to 86400 seconds")
    principals = value.get("allowed_principals")
    if principals is not None and not (
        isinstance(principals, list)
        and all(isinstance(p, str) and p.startswith("arn:") for p in principals)
    ):
        raise InvalidRequest("allowed_principals must be a list of ARN patterns")
    url = check_url(
        token_url(spec, value),
        allow_http_loopback=allow_http_loopback,
        plain_http_hosts=plain_http_hosts,
    )
    _check_credentials(spec, value, client_auth_for(spec, value, url))
    if spec.uses_refresh_token:
        _check_link_fields(value, allow_http_loopback, plain_http_hosts)
    return value


def _check_link_fields(
    value: dict[str, Any], allow_http_loopback: bool, plain_http_hosts: Collection[str]
) -> None:
    """A connection's own authorization endpoint is judged as its token URL is: a link sends
    the user's browser there with the connection's client id."""
    if "authorize_url" in value:
        check_url(
            value["authorize_url"],
            allow_http_loopback=allow_http_loopback,
            plain_http_hosts=plain_http_hosts,
            what="authorize_url",
        )
    if "scope" in value and not _text(value["scope"]):
        raise InvalidRequest("scope must be a non-empty string")


def _uses_secret(spec: ProviderSpec, value: dict[str, Any]) -> bool:
    template = value.get("token_url") or spec.token_url or ""
    try:
        auth = client_auth_for(spec, value, template if isinstance(template, str) else "")
    except ValueError:  # a template urlsplit cannot read: check_url says so later
        return True
    return auth.method not in ("private_key_jwt", "tls_client_auth")


def _check_credentials(spec: ProviderSpec, value: dict[str, Any], auth: ClientAuth) -> None:
    if auth.method in SECRET_AUTHS and not _text(value.get("client_secret")):
        raise InvalidRequest(f"{spec.name} needs the field(s): client_secret")
    if auth.method == "private_key_jwt":
        if not _text(value.get("private_key")):
            raise InvalidRequest("client_auth private_key_jwt needs the field private_key (PEM)")
        from tokenvend_core.catalogue.request import check_signing_key

        check_signing_key(value["private_key"], spec.assertion_alg)
    has_cert = [_text(value.get(name)) for name in ("tls_client_cert", "tls_client_key")]
    if auth.method == "tls_client_auth" and not all(has_cert):
        raise InvalidRequest(
            "client_auth tls_client_auth needs the fields tls_client_cert and tls_client_key (PEM)"
        )
    if any(has_cert):
        if not all(has_cert):
            raise InvalidRequest("tls_client_cert and tls_client_key go together")
        _check_client_certificate(value["tls_client_cert"], value["tls_client_key"])


def _check_client_certificate(cert_pem: str, key_pem: str) -> None:
    """The certificate is PEM, the key an unencrypted PEM private key, and they belong
    together. The messages say which is wrong, never what it holds."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode("utf-8"))
    except (ValueError, TypeError):
        raise InvalidRequest("tls_client_cert must be a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode("utf-8"), password=None)
    except (ValueError, TypeError):
        raise InvalidRequest("tls_client_key must be an unencrypted PEM private key") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise InvalidRequest("tls_client_key is not the key of tls_client_cert")


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _json_type(value: Any) -> str:
    """What a JSON value is, as a message names it (never the value: it may be a secret)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else type(value).__name__
