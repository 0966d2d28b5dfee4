"""4. Refresh at scale: one scheduled run of a provider function over a large fleet.

The provider function's module (functions/provider/app.py, its Powertools decorators on)
handles the sample scheduled event with a Refresher wired as `refresh.runtime.build_refresher`
wires it, except for AWS: the token table and Secrets Manager are the in-memory fakes of
`bench.fakes`, 5 ms per call, because moto's own speed is not what is measured. The token
endpoint is `bench.tokenserver` in a process of its own, answering every request after
100 ms. The remaining time the run sees follows the wall clock from the function's 60 s
timeout, so the run defers what does not fit exactly as it would in Lambda.

Every run is a fresh process, so that its peak memory (VmHWM) is its own. The fleet:
every connection's token expires in 10 minutes (inside the refresh horizon), so all of them
are due in the one run: the worst case, as after an outage or a bulk import.

Also measured, as a proposal: the same run with the token endpoint's `requests.Session`
tuned: its connection pool sized to the concurrency (`HTTPAdapter(pool_maxsize=
SCHEDULE_CONCURRENCY)`; requests' default of 10 discards and reopens connections above 10
workers, a new TLS handshake each against a real provider), and proxies read from the
environment once (`trust_env = False`, `proxies = urllib.request.getproxies()`) instead of
on every request.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
import urllib.request
from typing import Any, cast

from bench.common import EVENTS, LAMBDA_VCPU_AT_512MB, ROOT, TABLE
from tokenvend.local.functions import LambdaContext

TIMEOUT_S = 60  # the provider functions' Timeout in template.yaml
CHILD_TIMEOUT_S = 150
LATENCY_S = 0.1
AS_WIRED, TUNED, FAN_OUT = "as wired", "tuned session", "fan-out"
SCENARIOS: list[tuple[int, int, str]] = [  # connections, SCHEDULE_CONCURRENCY, variant
    (1_000, 16, AS_WIRED),
    (1_000, 64, AS_WIRED),
    (1_000, 128, AS_WIRED),
    (10_000, 16, AS_WIRED),
    (10_000, 64, AS_WIRED),
    (10_000, 128, AS_WIRED),
    (10_000, 128, TUNED),
    (10_000, 16, FAN_OUT),
]


def _wall_clock_context() -> LambdaContext:
    """A Lambda context whose remaining time runs down with the wall clock."""
    return LambdaContext(
        "tokenvend-oauth2",
        TIMEOUT_S * 1000,
        request_id="bench-schedule",
        log_stream_name="bench",
    )


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _memory_kb() -> tuple[int, int]:
    """(resident now, peak resident) of this process, from /proc/self/status. Not
    ru_maxrss: Linux carries it across fork and exec, so a child would report its parent's
    peak when that was higher."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def _server_calls(url: str) -> int:
    with urllib.request.urlopen(url + "/calls", timeout=10) as answer:  # loopback only
        return int(json.load(answer)["calls"])


def child(connections: int, concurrency: int, url: str, variant: str) -> dict[str, Any]:
    """One scheduled run in this process (and, with the fan-out, one queued batch)."""
    from bench.common import configure_environment, load_function, powertools_to_sink

    configure_environment()
    import requests
    from requests.adapters import HTTPAdapter

    from bench.fakes import FakeFanout, FakeSecretStore, FakeTokenStore
    from tokenvend_core.catalogue.spec import spec_for
    from tokenvend_core.refresh import schedule
    from tokenvend_core.refresh.endpoint import TokenEndpoint
    from tokenvend_core.refresh.refresher import Refresher
    from tokenvend_core.settings import Settings

    settings = Settings(
        table_name=TABLE,
        provider="oauth2",
        schedule_concurrency=concurrency,
        allow_http_loopback=True,  # the local token server is plain HTTP on loopback
    )
    secrets, tokens = FakeSecretStore(settings.secrets_prefix), FakeTokenStore()
    now = time.time()
    for i in range(connections):
        name = f"c{i:05d}"
        version = secrets.create(
            "oauth2",
            name,
            {
                "token_url": f"{url}/oauth2/token",
                "client_id": f"bench-client-{i}",
                "client_secret": f"bench-secret-{i}",
                "scope": "read write",
            },
        )
        tokens.put_item(
            {
                "provider": "oauth2",
                "connection": name,
                "access_token": "bench-old-token",
                "token_type": "Bearer",
                "expires_at": int(now) + 600,
                "version": 1,
                "refreshed_at": now - 3000,
                "last_attempt_at": now - 3000,
                "secret_version": version,
            }
        )
    session = None
    if variant == TUNED:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=concurrency)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.trust_env = False
        session.proxies = urllib.request.getproxies()
    fanout = FakeFanout() if variant == FAN_OUT else None
    refresher = Refresher(
        spec_for("oauth2"),
        settings,
        cast(Any, secrets),  # the fakes implement the stores' methods (bench.fakes)
        cast(Any, tokens),
        TokenEndpoint(session),
        owner="bench",
        fanout=fanout,
    )
    refresh_phase: dict[str, float] = {}
    run_bounded = schedule.run_bounded

    def timed(*args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            run_bounded(*args, **kwargs)
        finally:
            refresh_phase.setdefault("seconds", time.perf_counter() - started)

    schedule.run_bounded = timed  # each scenario runs in a process of its own
    module = load_function("provider")
    module._refresher = refresher
    discarded = _Counter()
    pool_logger = logging.getLogger("urllib3.connectionpool")
    pool_logger.addHandler(discarded)
    pool_logger.propagate = False
    event = json.loads((EVENTS / "provider-schedule.json").read_text())

    rss_before, _ = _memory_kb()
    calls_before = _server_calls(url)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    with powertools_to_sink():
        started = time.perf_counter()
        answer = module.lambda_handler(event, _wall_clock_context())
        seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    _, peak = _memory_kb()
    endpoint_calls = _server_calls(url) - calls_before
    horizon = time.time() + settings.refresh_lead + settings.schedule_interval
    fresh = sum(1 for item in tokens.items.values() if item["expires_at"] > horizon)
    aws = {f"dynamodb.{k}": v for k, v in tokens.calls.items()}
    aws.update({f"secretsmanager.{k}": v for k, v in secrets.calls.items()})
    if fanout is not None:
        aws.update({f"sqs.{k}": v for k, v in fanout.calls.items()})
    batch: dict[str, Any] = {}
    if fanout is not None and fanout.bodies:
        # What the queue then delivers: one batch, through the same handler.
        queued = {
            "Records": [
                {"messageId": "bench-1", "eventSource": "aws:sqs", "body": json.dumps(body)}
                for body in fanout.bodies[:1]
            ]
        }
        before = _server_calls(url)
        with powertools_to_sink():
            started = time.perf_counter()
            failures = module.lambda_handler(queued, _wall_clock_context())
            batch_seconds = time.perf_counter() - started
        batch = {
            "messages_queued": len(fanout.bodies),
            "connections_queued": sum(len(b["connections"]) for b in fanout.bodies),
            "send_message_batch_calls": fanout.calls["SendMessageBatch"],
            "one_batch_connections": len(fanout.bodies[0]["connections"]),
            "one_batch_seconds": batch_seconds,
            "one_batch_token_endpoint_calls": _server_calls(url) - before,
            "one_batch_failures": len(failures.get("batchItemFailures", [])),
        }
    report = answer["schedule"]
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    refreshed = max(1, report["refreshed"])
    return {
        "connections": connections,
        "concurrency": concurrency,
        "variant": variant,
        "fan_out": batch,
        "seconds": seconds,
        "refresh_phase_seconds": refresh_phase.get("seconds", float("nan")),
        "report": report,
        "fresh_after_run": fresh,
        "token_endpoint_calls": endpoint_calls,
        "aws_calls": aws,
        "aws_calls_per_connection": sum(aws.values()) / connections,
        "aws_calls_per_refreshed": sum(aws.values()) / refreshed,
        "cpu_seconds": cpu,
        "cpu_ms_per_refresh": 1000 * cpu / refreshed,
        "refreshes_per_second": report["refreshed"] / refresh_phase.get("seconds", seconds),
        "peak_rss_mb": peak / 1024,
        "rss_before_run_mb": rss_before / 1024,
        "pool_connections_discarded": discarded.count,
    }


def _start_server(delay: float) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.tokenserver", "--delay", str(delay)],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline().split()
    if len(line) != 2 or line[0] != "port":
        server.kill()
        raise RuntimeError("the token server did not start")
    return server, f"http://127.0.0.1:{line[1]}"


def capacity(best: dict[str, Any], settings: Any) -> dict[str, Any]:
    """What one run can keep fresh, from the measured cost per connection."""
    work_window = TIMEOUT_S - settings.schedule_margin - settings.attempt_deadline
    listing = best["seconds"] - best["refresh_phase_seconds"]
    per_second_here = best["refreshes_per_second"]
    # In Lambda at 512 MB the function has about 0.29 of a vCPU: the CPU each refresh
    # needs bounds the rate no matter how many threads wait on the network.
    per_second_cpu_512 = LAMBDA_VCPU_AT_512MB / (best["cpu_ms_per_refresh"] / 1000)
    per_second_lambda = min(per_second_here, per_second_cpu_512)
    worst_case = int(per_second_lambda * max(0.0, work_window - listing))
    interval = settings.schedule_interval
    return {
        "work_window_seconds": work_window,
        "listing_seconds": listing,
        "refreshes_per_second_here": per_second_here,
        "refreshes_per_second_cpu_bound_at_512mb": per_second_cpu_512,
        "due_per_run_capacity_here": int(per_second_here * max(0.0, work_window - listing)),
        "due_per_run_capacity_lambda_512mb": worst_case,
        "fleet_all_due_at_once": worst_case,
        "fleet_steady_1h_tokens": worst_case * 3600 // interval,
        "fleet_steady_2h_tokens": worst_case * 7200 // interval,
    }


def run() -> dict[str, Any]:
    from tokenvend_core.settings import Settings

    server, url = _start_server(LATENCY_S)
    results = []
    try:
        for connections, concurrency, variant in SCENARIOS:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.fleet",
                    "--child",
                    str(connections),
                    str(concurrency),
                    url,
                    "--variant",
                    variant,
                ],
                cwd=str(ROOT),
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
                check=False,
            )
            if out.returncode != 0:
                raise RuntimeError(f"fleet run failed: {out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait(10)
    as_wired = [r for r in results if r["variant"] == AS_WIRED]
    best_by_size = {}
    for size in sorted({r["connections"] for r in as_wired}):
        runs = [r for r in as_wired if r["connections"] == size]
        best_by_size[size] = max(runs, key=lambda r: r["refreshes_per_second"])["concurrency"]
    largest = max(r["connections"] for r in as_wired)
    best = max(
        (r for r in as_wired if r["connections"] == largest),
        key=lambda r: r["refreshes_per_second"],
    )
    settings = Settings(table_name=TABLE, allow_http_loopback=True)
    tuned = [r for r in results if r["variant"] == TUNED]
    return {
        "aws": "in-memory fakes of TokenStore and SecretStore, 5 ms per AWS call (bench.fakes)",
        "token_endpoint": f"bench.tokenserver in its own process, {int(LATENCY_S * 1000)} ms",
        "runs": results,
        "best_concurrency": best_by_size,
        "capacity": capacity(best, settings),
        "capacity_tuned_session": capacity(tuned[-1], settings) if tuned else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    parser.add_argument("--child", nargs=3, metavar=("CONNECTIONS", "CONCURRENCY", "URL"))
    parser.add_argument("--variant", default=AS_WIRED, choices=(AS_WIRED, TUNED, FAN_OUT))
    args = parser.parse_args(argv)
    if args.child:
        connections, concurrency, url = args.child
        result = child(int(connections), int(concurrency), url, args.variant)
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    from bench.common import configure_environment

    configure_environment()
    print(json.dumps(run(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
