"""The HTTP servers tests stand up on 127.0.0.1 (token endpoints, the tokenvend API, a
third-party API, the sandbox as its own process): binding a free port, serving in daemon threads, answering JSON and shutting
down are done here once; each server says only how it answers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackServer:
    """A test's HTTP server on 127.0.0.1. A subclass answers every GET and POST in
    `handle(http)` and calls `serve()` once it is ready to; `close()`, or the end of a `with`
    block, stops it. `port`, and `base_url` (scheme, host and port) say where it is."""

    scheme = "http"

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def serve(self, server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.handle(self)

            def do_POST(self) -> None:
                outer.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = server_class(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.base_url = f"{self.scheme}://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_json(
    http: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    """Answer `body` as JSON with `status` and any further headers."""
    data = json.dumps(body).encode()
    http.send_response(status)
    http.send_header("Content-Type", "application/json")
    http.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        http.send_header(name, value)
    http.end_headers()
    http.wfile.write(data)


@dataclass
class Standalone:
    """The sandbox run as its own command: where it serves and, once stopped, how it ended."""

    url: str = ""
    returncode: int | None = None
    stderr: str = ""


@contextmanager
def standalone_sandbox(*args: str) -> Iterator[Standalone]:
    """`python -m tokenvend.sandbox ARGS`, serving until the block ends, then stopped with
    SIGTERM as a user's Ctrl-C or a supervisor would."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenvend.sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ran = Standalone()
    try:
        assert proc.stdout is not None
        ran.url = proc.stdout.readline().strip()
        yield ran
    finally:
        proc.terminate()
        _, ran.stderr = proc.communicate(timeout=10)
        ran.returncode = proc.returncode
