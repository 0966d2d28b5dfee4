"""Mutual TLS (RFC 8705) against a real TLS token endpoint on 127.0.0.1 that requires a
client certificate (`ssl.CERT_REQUIRED`): the connection's certificate and key go from its
secret into private files for as long as a request needs them, and nowhere else. The
client trusts the test's own certificate authority through the endpoint's `ca_bundle` (or
the environment's REQUESTS_CA_BUNDLE), never by turning verification off."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from servers import LoopbackServer, send_json
from tokenvend_core.catalogue.answer import Failure
from tokenvend_core.catalogue.request import build_request, secret_forms
from tokenvend_core.catalogue.spec import ProviderSpec, parse_catalogue, validate_secret
from tokenvend_core.errors import InvalidRequest, ProviderUnavailable
from tokenvend_core.refresh.endpoint import RetryPolicy, TokenEndpoint
from tokenvend_core.tokens import Token

FAST = RetryPolicy(base=0.01, cap=0.02, max_tries=2, connect_timeout=2, read_timeout=3)


@dataclass(frozen=True)
class Issued:
    cert_pem: str
    key_pem: str


class Authority:
    """A certificate authority of the test's own, issuing EC P-256 certificates."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = x509.oid.ExtendedKeyUsageOID
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([usage.SERVER_AUTH if server else usage.CLIENT_AUTH]),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
        )


@dataclass
class Pki:
    ca: Authority
    ca_file: Path
    client: Issued
    stranger: Issued  # a client certificate from another authority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca, other = Authority("tokenvend test CA"), Authority("someone else's CA")
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca_file.write_text(ca.pem)
    return Pki(
        ca, ca_file, ca.issue("client-1", server=False), other.issue("client-1", server=False)
    )


class MtlsServer(LoopbackServer):
    """A token endpoint that speaks only TLS with a client certificate from the test's CA.
    It records each HTTP request it gets (with the peer's certificate subject), and each
    handshake it refuses; `during` runs inside the handler, while the client waits."""

    scheme = "https"

    def __init__(self, pki: Pki, tmp: Path) -> None:
        issued = pki.ca.issue("127.0.0.1", server=True)
        (tmp / "server.pem").write_text(issued.cert_pem)
        (tmp / "server.key").write_text(issued.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "server.pem", tmp / "server.key")
        context.load_verify_locations(cafile=str(pki.ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
        self.requests: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.during: Any = None
        outer = self

        class Server(ThreadingHTTPServer):
            def finish_request(self, request: Any, client_address: Any) -> None:
                try:  # the handshake, in the request's own thread
                    request = context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    outer.refused.append(type(exc).__name__)
                    return
                super().finish_request(request, client_address)

            def handle_error(self, request: Any, client_address: Any) -> None:
                outer.refused.append("error")

        self.serve(Server)
        self.url = f"{self.base_url}/oauth2/token"

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        body = http.rfile.read(int(http.headers.get("Content-Length") or 0))
        peer = http.connection.getpeercert()
        subject = dict(pair[0] for pair in peer["subject"]) if peer else {}
        self.requests.append(
            {
                "form": {k: v[0] for k, v in parse_qs(body.decode()).items()},
                "authorization": http.headers.get("Authorization"),
                "subject": subject.get("commonName"),
                "during": self.during() if self.during else None,
            }
        )
        send_json(http, 200, {"access_token": "tok-mtls", "expires_in": 3600})


@pytest.fixture
def server(pki: Pki, tmp_path: Path) -> Iterator[MtlsServer]:
    with MtlsServer(pki, tmp_path) as running:
        yield running


def trusting(pki: Pki) -> TokenEndpoint:
    """An endpoint that trusts the test's CA, as a deployment trusts the public ones."""
    return TokenEndpoint(policy=FAST, ca_bundle=str(pki.ca_file))


def entry(name: str, client_auth: str) -> ProviderSpec:
    """A client-credentials catalogue entry with this client authentication."""
    text = f"""
[{name}]
docs = "https://docs.example.com/mtls"
grant = "client_credentials"
required = ["token_url", "client_id", "client_secret"]
client_auth = "{client_auth}"
"""
    return parse_catalogue(text)[name]


SPEC = entry("mtls", "tls_client_auth")
BASIC = entry("both", "client_secret_basic")


def fetch(spec: ProviderSpec, secret: dict[str, Any], endpoint: TokenEndpoint) -> Token | Failure:
    request = build_request(spec, validate_secret(spec, secret))
    return endpoint.fetch(spec, request, deadline=time.monotonic() + 5, default_lifetime=3300)


def mtls_secret(server: MtlsServer, issued: Issued, **extra: Any) -> dict[str, Any]:
    secret = {
        "token_url": server.url,
        "client_id": "client-1",
        "tls_client_cert": issued.cert_pem,
        "tls_client_key": issued.key_pem,
    }
    return {**secret, **extra}


def test_tls_client_auth_presents_the_connections_certificate(pki: Pki, server: MtlsServer) -> None:
    # Given a connection with a client certificate from the CA the endpoint trusts
    endpoint = trusting(pki)
    files = endpoint.certificates

    def on_disk() -> dict[str, Any]:  # what the files look like while the request is out
        directory = files.directory
        assert directory is not None
        names = sorted(os.listdir(directory))
        return {
            "directory_mode": stat.S_IMODE(os.stat(directory).st_mode),
            "modes": [stat.S_IMODE(os.stat(os.path.join(directory, n)).st_mode) for n in names],
            "count": len(names),
        }

    server.during = on_disk
    # When tokenvend fetches a token
    outcome = fetch(SPEC, mtls_secret(server, pki.client), endpoint)
    # Then the endpoint saw the certificate and the client id, and no secret at all
    assert isinstance(outcome, Token), outcome
    (seen,) = server.requests
    assert seen["subject"] == "client-1"
    assert seen["form"] == {"client_id": "client-1", "grant_type": "client_credentials"}
    assert seen["authorization"] is None
    # And the certificate and key were private files while the request was out, gone after
    assert seen["during"] == {"directory_mode": 0o700, "modes": [0o600, 0o600], "count": 2}
    assert files.directory is not None and os.listdir(files.directory) == []


def test_a_client_certificate_beside_a_client_secret(pki: Pki, server: MtlsServer) -> None:
    secret = mtls_secret(server, pki.client, client_secret="SECRET-mtls-basic")
    outcome = fetch(BASIC, secret, trusting(pki))
    assert isinstance(outcome, Token), outcome
    (seen,) = server.requests
    assert seen["subject"] == "client-1" and seen["authorization"].startswith("Basic ")


def test_the_files_are_the_same_for_the_same_certificate_and_removed_each_time(
    pki: Pki, server: MtlsServer
) -> None:
    endpoint = trusting(pki)
    seen: list[list[str]] = []
    server.during = lambda: seen.append(sorted(os.listdir(endpoint.certificates.directory)))
    for _ in range(2):
        assert isinstance(fetch(SPEC, mtls_secret(server, pki.client), endpoint), Token)
    assert len(seen) == 2 and seen[0] == seen[1]
    assert not any(pki.client.key_pem in name or "client" in name for name in seen[0])
    assert os.listdir(endpoint.certificates.directory) == []


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_the_endpoint_refuses_a_missing_or_wrong_certificate(
    pki: Pki, server: MtlsServer, who: str
) -> None:
    # Given a connection without the certificate the endpoint wants
    if who == "no certificate":
        spec = BASIC
        secret = {"token_url": server.url, "client_id": "client-1", "client_secret": "SECRET-x"}
    else:
        spec, secret = SPEC, mtls_secret(server, pki.stranger)
    # When tokenvend fetches
    outcome = fetch(spec, secret, trusting(pki))
    # Then no request got through the handshake, and the caller is told of a TLS failure
    # in words that hold nothing of the connection's key
    assert isinstance(outcome, Failure) and isinstance(outcome.error, ProviderUnavailable)
    assert server.requests == []
    assert server.refused
    forms = secret_forms([pki.stranger.key_pem, pki.client.key_pem])
    assert not any(form in outcome.error.message for form in forms)


def test_verification_stays_on_when_the_ca_is_not_trusted(pki: Pki, server: MtlsServer) -> None:
    outcome = fetch(SPEC, mtls_secret(server, pki.client), TokenEndpoint(policy=FAST))
    assert isinstance(outcome, Failure)
    assert outcome.error.message.startswith("TLS error")
    assert server.requests == []


def test_requests_ca_bundle_is_honoured(
    pki: Pki, server: MtlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment's CA bundle, as requests reads it, for this test alone
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_file))
    outcome = fetch(SPEC, mtls_secret(server, pki.client), TokenEndpoint(policy=FAST))
    assert isinstance(outcome, Token), outcome


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"tls_client_key": None}, "tls_client_cert and tls_client_key"),
        ({"tls_client_cert": None, "tls_client_key": None}, "tls_client_cert"),
        ({"tls_client_cert": "not a certificate"}, "tls_client_cert must be a PEM"),
        ({"tls_client_key": "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----"},
         "tls_client_key must be"),
        ("stranger's key", "is not the key of"),
    ],
)  # fmt: skip
def test_a_certificate_and_key_that_cannot_work_are_refused(
    pki: Pki, server: MtlsServer, change: Any, words: str
) -> None:
    secret = mtls_secret(server, pki.client)
    if change == "stranger's key":
        secret["tls_client_key"] = pki.stranger.key_pem
    else:
        for key, value in change.items():
            if value is None:
                secret.pop(key)
            else:
                secret[key] = value
    with pytest.raises(InvalidRequest, match=words) as caught:
        validate_secret(SPEC, secret)
    assert "PRIVATE KEY" not in caught.value.message
    assert server.requests == [] and server.refused == []


def test_the_key_is_in_the_requests_secret_forms(pki: Pki, server: MtlsServer) -> None:
    request = build_request(SPEC, mtls_secret(server, pki.client))
    lines = [line for line in pki.client.key_pem.splitlines() if "PRIVATE KEY" not in line]
    assert pki.client.key_pem in request.secrets
    assert all(line in request.secrets for line in lines if len(line) >= 16)
    assert "tls_client" not in repr(request) and "PRIVATE" not in repr(request)
