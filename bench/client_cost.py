"""5. Client: what a cached token costs a workload per outgoing call, beside its peers.

One token endpoint serves every client: `bench.tokenserver` in a process of its own, over
HTTPS on 127.0.0.1 with a certificate made at start (msal takes only https authorities).
It plays the tokenvend API for TokenClient (`GET /v1/tokens/...`), and an OAuth 2.0
authorization server with its OpenID Connect discovery document for msal and Authlib. Each
client gets its first token from it; every call timed afterwards is served from the
client's own memory (the server counts requests, to show that none reached it).

Timed in the same loop, one batch of each per round, in rotating order:

- `dict lookup`: a function returning `cache[(provider, connection, min_ttl)]` (the floor:
  the least any in-memory cache can cost);
- `TokenClient.get_token`: the access token alone; `TokenClient.get`: the whole answer
  (a copy, with `expires_in` counted down);
- `msal`: `ConfidentialClientApplication.acquire_token_for_client(scopes)["access_token"]`,
  which looks its in-memory token cache up first (msal >= 1.23), with authority validation
  and instance discovery off and an HTTP client that refuses any host but 127.0.0.1;
- `Authlib`: a client-credentials `OAuth2Session`: `ensure_active_token()` (its expiry
  check, which fetches a new token when the held one is within `leeway` of expiry, what its
  `OAuth2Auth` runs before every request), then `session.token["access_token"]`.

Each sample times a batch of BATCH calls with `time.perf_counter_ns` and divides, so the
timer's own cost (reported) is spread over the batch. Then, for the same clients, a
stampede: THREADS threads released at once ask a client whose memory holds no usable token,
and the requests that reach the endpoint (50 ms per answer) are counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from bench.common import ROOT, median, percentile, ratio

ROUNDS = 20_000
BATCH = 10
THREADS = 16
DELAY = 0.05  # seconds the endpoint takes to answer: long enough for the threads to overlap
SCOPES = ["api://tokenvend-bench/.default"]
TENANT = "tenant-bench"
PROVIDER, CONNECTION, MIN_TTL = "dingtalk", "corp-a", 300
SAMPLE_TIMEOUT = 60.0


def start_server(delay: float, tls: bool) -> tuple[subprocess.Popen[str], str, str | None]:
    """bench.tokenserver in its own process: (the process, its base URL, its CA path)."""
    command = [sys.executable, "-m", "bench.tokenserver", "--delay", str(delay)]
    server = subprocess.Popen(
        [*command, "--tls"] if tls else command, cwd=str(ROOT), stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    said = dict(server.stdout.readline().split() for _ in range(2 if tls else 1))
    if "port" not in said or (tls and "ca" not in said):
        server.kill()
        raise RuntimeError("the token server did not start")
    scheme = "https" if tls else "http"
    return server, f"{scheme}://127.0.0.1:{said['port']}", said.get("ca")


@contextlib.contextmanager
def trusting(ca: str | None) -> Iterator[None]:
    """requests (every client here uses it) trusts the server's certificate, and goes to
    127.0.0.1 without any proxy, for the duration."""
    names = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NO_PROXY", "no_proxy")
    saved = {name: os.environ.get(name) for name in names}
    if ca:
        os.environ["REQUESTS_CA_BUNDLE"] = os.environ["CURL_CA_BUNDLE"] = ca
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def server_requests(base: str) -> dict[str, int]:
    import requests

    answer: dict[str, int] = requests.get(f"{base}/calls", timeout=10).json()["by_kind"]
    return answer


def _loopback_session() -> Any:
    """A requests Session that refuses any host but 127.0.0.1 (msal's HTTP client)."""
    import requests

    class LoopbackOnly(requests.Session):
        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
            host = urllib.parse.urlsplit(str(url)).hostname
            if host != "127.0.0.1":
                raise RuntimeError(f"the benchmark stays on loopback, not {host}")
            return super().request(method, url, *args, **kwargs)

    return LoopbackOnly()


def tokenvend_client(base: str) -> Any:
    from tokenvend.client import TokenClient

    return TokenClient(api_url=f"{base}/v1", region="us-east-1")


def msal_app(base: str) -> Any:
    import msal

    return msal.ConfidentialClientApplication(
        "tokenvend-bench",
        client_credential="bench-secret",
        authority=f"{base}/{TENANT}",
        validate_authority=False,
        instance_discovery=False,
        http_client=_loopback_session(),
    )


def authlib_session(base: str) -> Any:
    from authlib.integrations.requests_client import OAuth2Session

    return OAuth2Session(
        "tokenvend-bench",
        "bench-secret",
        token_endpoint=f"{base}/{TENANT}/oauth2/v2.0/token",
        grant_type="client_credentials",
        scope=" ".join(SCOPES),
    )


def peers(base: str) -> list[tuple[str, Callable[[str, str, int], Any]]]:
    """Every client, primed with its first token, as a call of the same shape."""
    client = tokenvend_client(base)
    token = client.get_token(PROVIDER, CONNECTION, min_ttl=MIN_TTL)
    cache = {(PROVIDER, CONNECTION, MIN_TTL): token}

    def dict_lookup(provider: str, connection: str, min_ttl: int = 300) -> str:
        return cache[(provider, connection, min_ttl)]

    app = msal_app(base)
    first = app.acquire_token_for_client(scopes=SCOPES)
    if "access_token" not in first:
        raise RuntimeError(f"msal got no token: {first.get('error_description')}")

    def msal_token(provider: str, connection: str, min_ttl: int = 300) -> str:
        answer: dict[str, Any] = app.acquire_token_for_client(scopes=SCOPES)
        return str(answer["access_token"])

    session = authlib_session(base)
    session.fetch_token()

    def authlib_token(provider: str, connection: str, min_ttl: int = 300) -> str:
        session.ensure_active_token()
        return str(session.token["access_token"])

    return [
        ("dict lookup", dict_lookup),
        ("TokenClient.get_token", client.get_token),
        ("TokenClient.get", client.get),
        ("Authlib OAuth2Session", authlib_token),
        ("msal acquire_token_for_client", msal_token),
    ]


def costs(calls: list[tuple[str, Callable[[str, str, int], Any]]]) -> dict[str, Any]:
    for _, call in calls:  # every path warm, every cache hit once before timing
        for _ in range(200):
            call(PROVIDER, CONNECTION, MIN_TTL)
    timings: dict[str, list[float]] = {name: [] for name, _ in calls}
    clock = time.perf_counter_ns
    batch = range(BATCH)
    overhead: list[int] = []
    for i in range(ROUNDS):
        for k in range(len(calls)):
            name, call = calls[(i + k) % len(calls)]
            t0 = clock()
            for _ in batch:
                call(PROVIDER, CONNECTION, MIN_TTL)
            timings[name].append((clock() - t0) / BATCH)
        t0 = clock()
        for _ in batch:
            pass
        overhead.append(clock() - t0)
    stats = {
        name: {"median_ns": median(values), "p99_ns": percentile(values, 99)}
        for name, values in timings.items()
    }
    floor = stats["dict lookup"]["median_ns"]
    ours = stats["TokenClient.get_token"]["median_ns"]
    for values in stats.values():
        values["over_dict"] = ratio(values["median_ns"], floor)
        values["over_get_token"] = ratio(values["median_ns"], ours)
    return {"calls": stats, "timer_and_loop_ns_per_batch": median(overhead)}


def released_together(call: Callable[[], Any], threads: int) -> tuple[list[str], list[str]]:
    """`call` in `threads` threads released at once by a barrier: what they got, and how
    they failed."""
    start = threading.Barrier(threads)
    tokens: list[str] = []
    errors: list[str] = []

    def worker() -> None:
        try:
            start.wait(SAMPLE_TIMEOUT)
            tokens.append(str(call()))
        except Exception as exc:  # reported in the results
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(SAMPLE_TIMEOUT)
    return tokens, errors


def stampede(base: str) -> dict[str, Any]:
    """THREADS threads, released at once, ask each client while it holds no usable token:
    how many requests reach the endpoint."""

    def tokenvend() -> tuple[Callable[[], Any], str]:
        client = tokenvend_client(base)
        return (lambda: client.get_token(PROVIDER, "stampede", min_ttl=MIN_TTL)), "api"

    def msal_cold() -> tuple[Callable[[], Any], str]:
        app = msal_app(base)  # reads the discovery document now, before the threads start
        return (lambda: app.acquire_token_for_client(scopes=SCOPES)["access_token"]), "token"

    def authlib_expired() -> tuple[Callable[[], Any], str]:
        # Authlib has no first-token path of its own: its session holds a token that has
        # just expired, which ensure_active_token replaces.
        session = authlib_session(base)
        session.token = {"access_token": "old", "token_type": "Bearer", "expires_in": -1}

        def call() -> str:
            session.ensure_active_token()
            return str(session.token["access_token"])

        return call, "token"

    rows = {}
    for name, make in (
        ("TokenClient", tokenvend),
        ("Authlib OAuth2Session", authlib_expired),
        ("msal", msal_cold),
    ):
        call, kind = make()
        before = server_requests(base).get(kind, 0)
        tokens, errors = released_together(call, THREADS)
        rows[name] = {
            "threads": THREADS,
            "requests": server_requests(base).get(kind, 0) - before,
            "answered": len(tokens),
            "distinct_tokens": len(set(tokens)),
            "errors": errors[:3],
        }
    return {"threads": THREADS, "endpoint_delay_s": DELAY, "clients": rows}


def run() -> dict[str, Any]:
    server, base, ca = start_server(DELAY, tls=True)
    try:
        with trusting(ca):
            calls = peers(base)
            primed = server_requests(base)
            measured = costs(calls)
            during = server_requests(base)
            concurrent = stampede(base)
    finally:
        server.terminate()
        server.wait(10)
    return {
        "rounds": ROUNDS,
        "batch": BATCH,
        **measured,
        "get_token_over_dict": measured["calls"]["TokenClient.get_token"]["over_dict"],
        "get_over_dict": measured["calls"]["TokenClient.get"]["over_dict"],
        "endpoint_requests_while_timed": sum(during.values()) - sum(primed.values()),
        "api_requests_while_timed": during.get("api", 0) - primed.get("api", 0),
        "stampede": concurrent,
        "peers": {
            "msal": _version("msal"),
            "Authlib": _version("authlib"),
        },
        "target_ns": 300,
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    from bench.common import configure_environment

    configure_environment()
    ROUNDS = 2_000
    print(json.dumps(run(), indent=2))
