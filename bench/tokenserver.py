"""A token endpoint with a fixed latency, for the fleet benchmark: every POST is answered
after `--delay` seconds with a valid OAuth 2.0 client-credentials answer (RFC 6749 section
5.1). It runs in a process of its own, so that its threads do not share the measured
process's interpreter lock, with one thread per connection (HTTP/1.1 keep-alive) and a deep
listen backlog for hundreds of concurrent clients.

    python -m bench.tokenserver --delay 0.1      # prints "port N", then serves until killed

`GET /calls` answers {"calls": N}: the token requests answered so far.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    delay = 0.1
    issued = itertools.count(1)
    calls = 0
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

    def do_GET(self) -> None:
        server: Any = self.server
        with server.lock:
            calls = server.calls
        self._answer(200, {"calls": calls})

    def do_POST(self) -> None:
        server: Any = self.server
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        time.sleep(server.delay)
        with server.lock:
            server.calls += 1
        self._answer(
            200,
            {
                "access_token": f"bench-token-{next(server.issued)}-" + "x" * 600,
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": "read write",
            },
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tokenserver")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.1)
    args = parser.parse_args(argv)
    server = _Server(("127.0.0.1", args.port), _Handler)
    server.delay = args.delay
    sys.stdout.write(f"port {server.server_address[1]}\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
