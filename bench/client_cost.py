"""5. Client: what `TokenClient.get_token` costs a workload per outgoing call, token cached.

A tiny HTTP server on loopback answers the one signed GET that primes the client's memory;
every call timed afterwards is served from that memory (the server counts requests, to show
that none reached it). Timed in the same loop, in rotating order:

- `dict lookup`: a function returning `cache[(provider, connection, min_ttl)]` (the floor:
  the least any in-memory cache can cost);
- `TokenClient.get_token`: the access token alone;
- `TokenClient.get`: the whole answer (a copy, with `expires_in` counted down).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.common import median, percentile, ratio

ROUNDS = 50_000


class _Api(ThreadingHTTPServer):
    daemon_threads = True
    calls = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server: Any = self.server
        server.calls += 1
        parts = self.path.split("?")[0].strip("/").split("/")
        expires_at = int(time.time()) + 3600
        body = json.dumps(
            {
                "provider": parts[1],
                "connection": parts[2],
                "access_token": "bench-token-" + "x" * 600,
                "token_type": "Bearer",
                "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at)),
                "expires_in": 3600,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def run() -> dict[str, Any]:
    from tokenvend.client import TokenClient

    server = _Api(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        client = TokenClient(api_url=url, region="us-east-1")
        provider, connection, min_ttl = "dingtalk", "corp-a", 300
        token = client.get_token(provider, connection, min_ttl=min_ttl)  # primes the memory
        cache = {(provider, connection, min_ttl): token}

        def dict_lookup(provider: str, connection: str, min_ttl: int = 300) -> str:
            return cache[(provider, connection, min_ttl)]

        calls: list[tuple[str, Any]] = [
            ("dict lookup", dict_lookup),
            ("TokenClient.get_token", client.get_token),
            ("TokenClient.get", client.get),
        ]
        for _, call in calls:
            for _ in range(1000):
                call(provider, connection, min_ttl)
        primed_requests = server.calls
        timings: dict[str, list[int]] = {name: [] for name, _ in calls}
        clock = time.perf_counter_ns
        for i in range(ROUNDS):
            for k in range(len(calls)):
                name, call = calls[(i + k) % len(calls)]
                t0 = clock()
                call(provider, connection, min_ttl)
                timings[name].append(clock() - t0)
        requests_during = server.calls - primed_requests
    finally:
        server.shutdown()
        server.server_close()
    stats = {
        name: {"median_ns": median(values), "p99_ns": percentile(values, 99)}
        for name, values in timings.items()
    }
    floor = stats["dict lookup"]["median_ns"]
    return {
        "rounds": ROUNDS,
        "calls": stats,
        "get_token_over_dict": ratio(stats["TokenClient.get_token"]["median_ns"], floor),
        "get_over_dict": ratio(stats["TokenClient.get"]["median_ns"], floor),
        "api_requests_while_timed": requests_during,
    }


if __name__ == "__main__":
    from bench.common import configure_environment

    configure_environment()
    print(json.dumps(run(), indent=2))
