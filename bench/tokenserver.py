"""A token endpoint with a fixed latency, for the benchmarks: every POST is answered after
`--delay` seconds with a valid OAuth 2.0 client-credentials answer (RFC 6749 section 5.1).
It runs in a process of its own, so that its threads do not share the measured process's
interpreter lock, with one thread per connection (HTTP/1.1 keep-alive) and a deep listen
backlog for hundreds of concurrent clients.

    python -m bench.tokenserver --delay 0.1      # prints "port N", then serves until killed
    python -m bench.tokenserver --tls            # HTTPS; also prints "ca PATH" (its certificate)

Besides the token endpoint (POST, any path), it answers the GETs the client benchmark's
peers need, after the same delay:

- `GET /v1/tokens/{provider}/{connection}`: the tokenvend API's answer, for TokenClient
  (the signature is not checked: this is a stand-in for the API behind API Gateway);
- `GET .../.well-known/openid-configuration`: an OpenID Connect discovery document naming
  this server's token endpoint (`{tenant}/oauth2/v2.0/token`), for msal, which reads its
  authority's discovery document before its first token request;
- `GET /calls`: {"calls": N, "by_kind": {...}}: the requests answered so far (token, api,
  discovery), without delay.

With `--tls` it serves HTTPS with a self-signed certificate for 127.0.0.1, made at start
(msal takes only https authorities); clients trust it through the printed CA path.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs

TOKEN_LIFETIME = 3600


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    delay = 0.1
    base_url = ""
    issued = itertools.count(1)
    calls = 0
    by_kind: ClassVar[Counter[str]] = Counter()
    lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm on, the body would wait
    # for the client's delayed ACK (40 ms on Linux) and every answer would come late.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _count(self, kind: str) -> int:
        server: Any = self.server
        with server.lock:
            server.by_kind[kind] += 1
            if kind == "token":
                server.calls += 1
            return next(server.issued)

    def do_GET(self) -> None:
        server: Any = self.server
        path = self.path.split("?", 1)[0]
        if path == "/calls":
            with server.lock:
                calls, by_kind = server.calls, dict(server.by_kind)
            self._answer(200, {"calls": calls, "by_kind": by_kind})
            return
        if path.endswith("/.well-known/openid-configuration"):
            self._count("discovery")
            tenant = path.strip("/").split("/")[0]
            issuer = f"{server.base_url}/{tenant}/v2.0"
            self._answer(
                200,
                {
                    "issuer": issuer,
                    "authorization_endpoint": f"{server.base_url}/{tenant}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{server.base_url}/{tenant}/oauth2/v2.0/token",
                    "jwks_uri": f"{server.base_url}/{tenant}/discovery/v2.0/keys",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                },
            )
            return
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[1] == "tokens":
            time.sleep(server.delay)
            number = self._count("api")
            expires_at = int(time.time()) + TOKEN_LIFETIME
            self._answer(
                200,
                {
                    "provider": parts[2],
                    "connection": parts[3],
                    "access_token": f"bench-token-{number}-" + "x" * 600,
                    "token_type": "Bearer",
                    "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at)),
                    "expires_in": TOKEN_LIFETIME,
                },
            )
            return
        self._answer(404, {"error": "not_found"})

    def do_POST(self) -> None:
        server: Any = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        # The scope granted is the one asked for (msal keeps a token for the scopes the
        # answer names, and finds it again only for those); "read write" when none was.
        asked = parse_qs(body.decode("utf-8", "replace")).get("scope", ["read write"])[0]
        time.sleep(server.delay)
        number = self._count("token")
        self._answer(
            200,
            {
                "access_token": f"bench-token-{number}-" + "x" * 600,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME,
                "scope": asked,
            },
        )


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, valid for a day (cryptography)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tokenserver")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--tls", action="store_true", help="HTTPS, with a self-signed cert")
    args = parser.parse_args(argv)
    # Stopped with SIGTERM (the benchmarks' terminate()): end as on Ctrl-C, so that the
    # certificate's temporary folder is removed.
    signal.signal(signal.SIGTERM, _interrupt)
    server = _Server(("127.0.0.1", args.port), _Handler)
    server.delay = args.delay
    port = server.server_address[1]
    with tempfile.TemporaryDirectory(prefix="tokenvend-bench-tls-") as folder:
        lines = [f"port {port}"]
        if args.tls:
            cert, key = self_signed(Path(folder))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
            server.base_url = f"https://127.0.0.1:{port}"
            lines.append(f"ca {cert}")
        else:
            server.base_url = f"http://127.0.0.1:{port}"
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
