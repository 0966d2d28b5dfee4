"""The printed table: results.json's figures as Markdown, ready to paste into
docs/performance.md."""

from __future__ import annotations

from typing import Any

from bench.common import fmt_ns, fmt_s


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _x(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def _yes(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    warm = results.get("warm")
    if warm:
        out.append(
            {
                "target": "warm vend handler ≤ 3x the bare handler (median)",
                "measured": f"{_x(warm['vend_over_bare']['median'])} "
                f"(p99 {_x(warm['vend_over_bare']['p99'])}); "
                f"{_x(warm['vend_over_bare_decorated']['median'])} the bare handler "
                "under the same decorators",
                "met": warm["vend_over_bare"]["median"] <= 3,
            }
        )
        out.append(
            {
                "target": "0 AWS calls per warm hit",
                "measured": f"{warm['aws_calls_per_vend_memory_fresh']:g} (memory fresh); "
                f"{warm['aws_calls_per_vend_memory_expired_table_hit']:g} GetItem "
                "(memory expired, table hit)",
                "met": warm["aws_calls_per_vend_memory_fresh"] == 0
                and warm["aws_calls_per_vend_memory_expired_table_hit"] == 1,
            }
        )
    cold = results.get("cold")
    if cold:
        for kind in ("vend", "provider"):
            figure = cold["modules"][kind]["import_over_boto3"]
            out.append(
                {
                    "target": f"{kind} function import ≤ 1.3x `import boto3` (as deployed)",
                    "measured": _x(figure),
                    "met": figure <= cold["target_ratio"],
                }
            )
    outsider = (cold or {}).get("outsider")
    if outsider and "error" not in outsider:
        out.append(
            {
                "target": "vend function cold start ≤ 1.2x `import boto3` plus the same clients, "
                "as an outsider measures it (whole processes, only the layer installed)",
                "measured": f"{_x(outsider['wall_ratio'])} wall "
                f"({_x(outsider['wall_ratio_within_pairs'])} within pairs), "
                f"{_x(outsider['cpu_ratio'])} CPU; in-process "
                f"{_x(outsider['in_process_ratio'])}",
                "met": outsider["wall_ratio"] <= outsider["target_ratio"],
            }
        )
    elif outsider:
        out.append(
            {
                "target": "vend function cold start ≤ 1.2x, as an outsider measures it",
                "measured": f"not measured: {outsider['error'][:200]}",
                "met": False,
            }
        )
    stampede = results.get("stampede")
    if stampede:
        rows = stampede["rows"]
        out.append(
            {
                "target": "exactly 1 token-endpoint call per connection, every stampede row",
                "measured": ", ".join(
                    f"{r['token_endpoint_calls']}/{r['connections']}" for r in rows
                )
                + " (calls/connections)",
                "met": all(r["exactly_one_per_connection"] and not r["unfinished"] for r in rows),
            }
        )
    fleet = results.get("fleet")
    if fleet:
        big = [
            r for r in fleet["runs"] if r["connections"] == 10_000 and r["variant"] == "as wired"
        ]
        best = max(big, key=lambda r: r["report"]["refreshed"] / r["seconds"]) if big else None
        if best is not None:
            capacity = fleet["capacity"]
            out.append(
                {
                    "target": "10,000 connections refreshed by one scheduled run within 60 s "
                    "(100 ms token endpoint)",
                    "measured": f"{best['report']['refreshed']:,} in {best['seconds']:.1f} s "
                    f"at SCHEDULE_CONCURRENCY={best['concurrency']} on this machine; "
                    f"estimated {capacity['due_per_run_capacity_lambda_512mb']:,} per run "
                    "in Lambda at 512 MB (CPU-bound)",
                    "met": best["report"]["refreshed"] == 10_000 and best["seconds"] <= 60,
                }
            )
    client = results.get("client")
    if client:
        calls = client["calls"]
        msal = calls["msal acquire_token_for_client"]["median_ns"]
        authlib = calls["Authlib OAuth2Session"]["median_ns"]
        for name in ("TokenClient.get_token", "TokenClient.get"):
            figure = calls[name]["median_ns"]
            out.append(
                {
                    "target": f"`{name}` on a cached token: median ≤ 0.3 µs",
                    "measured": f"{fmt_ns(figure)} ({_x(calls[name]['over_dict'])} a dict "
                    f"lookup; msal {_x(msal / figure)}, Authlib {_x(authlib / figure)} it)",
                    "met": figure <= client["target_ns"] and figure < min(msal, authlib),
                }
            )
        crowd = client["stampede"]["clients"]["TokenClient"]
        out.append(
            {
                "target": "TokenClient: one request for concurrent misses of one key",
                "measured": f"{crowd['requests']} for {crowd['threads']} threads",
                "met": crowd["requests"] == 1 and crowd["answered"] == crowd["threads"],
            }
        )
    cost = results.get("cost")
    if cost:
        http = cost["per_million"]["HTTP"]
        out.append(
            {
                "target": "≤ $1.5 per million vends with the HTTP API (memory and table hits)",
                "measured": f"${http['memory hit']['total']:.2f} memory hit, "
                f"${http['table hit']['total']:.2f} table hit (API Gateway, Lambda, DynamoDB); "
                f"${http['memory hit']['with_logs_and_traces']:.2f} and "
                f"${http['table hit']['with_logs_and_traces']:.2f} with logs and traces",
                "met": cost["http_hit_max"] <= cost["target_http"],
            }
        )
    return out


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"tokenvend benchmarks, {meta['date']}: {meta['cpu']}, {meta['cpus']} CPUs, "
        f"Python {meta['python']}, load average at start {meta['load_at_start']}, "
        f"commit {meta['commit']}",
        "",
    ]
    warm = results.get("warm")
    if warm:
        lines.append(f"### 1. Warm vend (in-process, {warm['rounds']:,} calls each, interleaved)")
        lines.append("")
        h = warm["handlers"]
        bare = h["bare"]
        rows = [
            [name, fmt_ns(s["median_ns"]), fmt_ns(s["p99_ns"]),
             _x(s["median_ns"] / bare["median_ns"]), _x(s["p99_ns"] / bare["p99_ns"])]
            for name, s in h.items()
        ]  # fmt: skip
        lines += _table(["handler", "median", "p99", "÷ bare (median)", "÷ bare (p99)"], rows)
        lines.append(
            f"vend ÷ bare+decorators: {_x(warm['vend_over_bare_decorated']['median'])} median, "
            f"{_x(warm['vend_over_bare_decorated']['p99'])} p99; tokenvend's own logic "
            f"(vend - bare+decorators+metric): {fmt_ns(warm['logic_ns'])}; timer overhead "
            f"{fmt_ns(warm['timer_overhead_median_ns'])}. AWS calls per vend: "
            f"{warm['aws_calls_per_vend_memory_fresh']:g} with the memory entry fresh, "
            f"{warm['aws_calls_per_vend_memory_expired_table_hit']:g} "
            f"({', '.join(warm['memory_expired_operations'])}) with it expired and the table "
            f"holding the token. Each hit writes {warm['log_bytes_per_hit']:.0f} bytes to "
            "CloudWatch Logs (the EMF metrics document and the audit record)."
        )
        lines.append("")
    cold = results.get("cold")
    if cold:
        lines.append(
            f"### 2. Cold start (fresh interpreters, median of {cold['rounds']}, interleaved)"
        )
        lines.append("")
        rows = [["`import boto3`", fmt_s(cold["boto3_import_s"]), "1x", "", ""]]
        for kind, m in cold["modules"].items():
            rows.append(
                [
                    f"{kind} (`import app`)",
                    fmt_s(m["import_s"]),
                    _x(m["import_over_boto3"]),
                    fmt_s(m["import_and_setup_s"]),
                    _x(m["import_and_setup_over_boto3_and_clients"]),
                ]
            )
        lines += _table(
            ["module", "import", "÷ boto3", "import + first-call set-up",
             "÷ boto3 + the same clients"],
            rows,
        )  # fmt: skip
        for kind, data in cold["importtime"].items():
            top = ", ".join(
                f"{'·' * row['depth']}{row['module']} {row['cumulative_ms']:.0f}"
                for row in data["top_cumulative_ms"]
            )
            packages = ", ".join(f"{k} {v:.0f}" for k, v in data["self_ms_by_package"].items())
            lines.append(f"- {kind}, top 10 cumulative (ms): {top}")
            lines.append(f"- {kind}, self time by package (ms): {packages}")
        lines.append("")
        lines += _outsider(cold.get("outsider"))
    stampede = results.get("stampede")
    if stampede:
        lines.append(
            f"### 3. Stampede ({stampede['aws']}; token endpoint: {stampede['token_endpoint']})"
        )
        lines.append("")
        rows = []
        for r in stampede["rows"]:
            rows.append(
                [
                    r["row"],
                    str(r["containers"]),
                    f"{r['seconds']:.2f} s",
                    ", ".join(f"{k}x{v}" for k, v in r["statuses"].items())
                    + (f", {r['unfinished']} unfinished" if r["unfinished"] else ""),
                    f"{r['token_endpoint_calls']} "
                    f"({r['token_endpoint_calls_per_connection_min']}-"
                    f"{r['token_endpoint_calls_per_connection_max']} per connection)",
                    f"{r['dynamodb_calls_per_vend']:.2f} "
                    f"({r['dynamodb_calls_per_vend_vend_function']:.2f} + "
                    f"{r['dynamodb_calls_per_vend_provider_function']:.2f})",
                    f"{r['secretsmanager_calls_per_vend']:.2f}",
                    f"{r['provider_invocations'] / r['vends']:.2f}",
                ]
            )
        lines += _table(
            ["row", "containers", "wall", "statuses", "token-endpoint calls",
             "DynamoDB calls/vend (vend + provider fn)", "Secrets Manager calls/vend",
             "provider invocations/vend"],
            rows,
        )  # fmt: skip
    fleet = results.get("fleet")
    if fleet:
        lines.append(
            f"### 4. Refresh at scale (AWS: {fleet['aws']}; token endpoint: "
            f"{fleet['token_endpoint']})"
        )
        lines.append("")
        rows = []
        for r in fleet["runs"]:
            report = r["report"]
            done = f"{report['refreshed']:,}"
            if report.get("deferred"):
                done += f" ({report['deferred']:,} deferred)"
            if report.get("fanned_out"):
                done += f" ({report['fanned_out']:,} queued)"
            rows.append(
                [
                    f"{r['connections']:,}",
                    str(r["concurrency"]),
                    r["variant"],
                    f"{r['seconds']:.1f} s",
                    done,
                    f"{r['token_endpoint_calls']:,}",
                    f"{r['aws_calls_per_refreshed']:.2f}",
                    f"{r['refreshes_per_second']:.0f}",
                    f"{r['cpu_ms_per_refresh']:.2f}",
                    f"{r['peak_rss_mb']:.0f} MB (+{r['peak_rss_mb'] - r['rss_before_run_mb']:.0f})",
                    str(r["pool_connections_discarded"]),
                ]
            )
        lines += _table(
            ["connections", "concurrency", "variant", "wall", "refreshed", "token-endpoint calls",
             "AWS calls/refreshed", "refreshes/s", "CPU ms/refresh", "peak RSS (growth)",
             "HTTP connections discarded"],
            rows,
        )  # fmt: skip
        for r in fleet["runs"]:
            if r["fan_out"]:
                f = r["fan_out"]
                lines.append(
                    f"Fan-out run: {f['connections_queued']:,} connections queued in "
                    f"{f['messages_queued']} messages ({f['send_message_batch_calls']} "
                    f"SendMessageBatch calls); one queued batch of {f['one_batch_connections']} "
                    f"took {f['one_batch_seconds']:.2f} s ({f['one_batch_token_endpoint_calls']} "
                    "token-endpoint calls)."
                )
        c = fleet["capacity"]
        lines.append(
            f"Best concurrency: {fleet['best_concurrency']}. Capacity at the best one: a run "
            f"starts refreshes for {c['work_window_seconds']} s (60 s timeout - margin - one "
            f"attempt's deadline), listing took {c['listing_seconds']:.2f} s; "
            f"{c['refreshes_per_second_here']:.0f} refreshes/s here → "
            f"{c['due_per_run_capacity_here']:,} due connections per run on this machine; "
            f"in Lambda at 512 MB (≈0.29 vCPU) the CPU bounds it to "
            f"{c['refreshes_per_second_cpu_bound_at_512mb']:.0f}/s → "
            f"{c['due_per_run_capacity_lambda_512mb']:,} per run (all due at once); with "
            f"expiries spread over 1 h tokens, one run every 5 min keeps "
            f"{c['fleet_steady_1h_tokens']:,} fresh (2 h tokens: {c['fleet_steady_2h_tokens']:,})."
        )
        lines.append("")
    client = results.get("client")
    if client:
        lines += _client(client)
    cost = results.get("cost")
    if cost:
        lines += _cost(cost)
    lines.append("### Targets (issues 6 and 16)")
    lines.append("")
    lines += _table(
        ["target", "measured", "status"],
        [[t["target"], t["measured"], _yes(t["met"])] for t in targets(results)],
    )
    lines.append(f"Wall time of this run: {meta.get('seconds', 0):.0f} s.")
    return "\n".join(lines)


def _outsider(outsider: dict[str, Any] | None) -> list[str]:
    if not outsider:
        return []
    lines = ["#### 2b. The vend function's cold start, as an outsider measures it", ""]
    if "error" in outsider:
        return [*lines, f"Not measured: {outsider['error']}", ""]
    lines.append(
        f"Whole processes, median of {outsider['rounds']} pairs run in turn (A B, B A, ...) "
        f"after {outsider['warmup']}; only the layer's packages installed "
        f"({', '.join(f'{k} {v}' for k, v in outsider['versions'].items())}); Lambda's "
        "environment and the template's variables."
    )
    lines.append("")
    f, b = outsider["function"], outsider["floor"]
    rows = [
        ["vend function: `import app`, `app.vendor()`", fmt_s(f["wall_s"]), fmt_s(f["cpu_s"]),
         fmt_s(f["import_s"]), fmt_s(f["setup_s"]), fmt_s(f["import_s"] + f["setup_s"])],
        ["floor: `import boto3`, one Session, the same clients", fmt_s(b["wall_s"]),
         fmt_s(b["cpu_s"]), fmt_s(b["import_s"]), fmt_s(b["setup_s"]),
         fmt_s(b["import_s"] + b["setup_s"])],
        ["ratio", _x(outsider["wall_ratio"]), _x(outsider["cpu_ratio"]), "", "",
         _x(outsider["in_process_ratio"])],
    ]  # fmt: skip
    lines += _table(
        ["process", "wall (spawn to exit)", "CPU", "import (inside)", "set-up (inside)",
         "import + set-up (inside)"],
        rows,
    )  # fmt: skip
    low, high = outsider["wall_ratio_min_max"]
    teardown = outsider["with_teardown"]
    lines.append(
        f"Wall ratio within pairs: median {_x(outsider['wall_ratio_within_pairs'])}, "
        f"{_x(low)} to {_x(high)}. Each process ends with os._exit once ready, as Lambda keeps "
        f"its interpreter; exiting normally ({teardown['rounds']} pairs) they take "
        f"{fmt_s(teardown['function_wall_s'])} and {fmt_s(teardown['floor_wall_s'])} "
        f"({_x(teardown['wall_ratio'])}). Clients: "
        + ", ".join(service for service, _ in outsider["clients"])
        + "."
    )
    extra = outsider["extra_imports"]
    owners = ", ".join(f"{k} {v:.1f}" for k, v in extra["by_owner_ms"].items())
    own = ", ".join(
        f"{k.removeprefix('tokenvend_core.')} {v:.1f}"
        for k, v in list(extra["tokenvend_core_self_ms"].items())[:8]
    )
    lines.append(
        f"What the vend function imports beyond the floor (`-X importtime`, self ms, median of "
        f"{extra['runs']}): {extra['total_ms']:.1f} in all; by the package that brought it in: "
        f"{owners}. Of these, asyncio (brought by wrapt, the X-Ray SDK's) "
        f"{extra['asyncio_ms']:.1f}, tomllib {extra['tomllib_ms']:.1f}; tokenvend_core's "
        f"largest: {own}."
    )
    lines.append("")
    return lines


def _client(client: dict[str, Any]) -> list[str]:
    lines = [
        f"### 5. Client (in-process, cached token, {client['rounds']:,} batches of "
        f"{client['batch']} calls each, interleaved)",
        "",
    ]
    rows = [
        [name, fmt_ns(s["median_ns"]), fmt_ns(s["p99_ns"]), _x(s["over_dict"]),
         _x(s["over_get_token"])]
        for name, s in client["calls"].items()
    ]  # fmt: skip
    lines += _table(["call", "median", "p99", "÷ dict lookup", "÷ get_token"], rows)
    peers = ", ".join(f"{k} {v}" for k, v in client["peers"].items())
    lines.append(
        f"Per call, from batches of {client['batch']} (the timer and loop: "
        f"{fmt_ns(client['timer_and_loop_ns_per_batch'])} a batch). Requests to the endpoint "
        f"while timed: {client['endpoint_requests_while_timed']}. Peers: {peers}."
    )
    lines.append("")
    crowd = client["stampede"]
    rows = [
        [name, str(r["threads"]), str(r["requests"]), str(r["distinct_tokens"]),
         "; ".join(r["errors"]) or "none"]
        for name, r in crowd["clients"].items()
    ]  # fmt: skip
    lines.append(
        f"Concurrent misses: {crowd['threads']} threads released at once, no usable token held, "
        f"the endpoint answering in {crowd['endpoint_delay_s'] * 1000:.0f} ms:"
    )
    lines.append("")
    lines += _table(["client", "threads", "token requests", "distinct tokens", "errors"], rows)
    return lines


def _cost(cost: dict[str, Any]) -> list[str]:
    lines = ["### 6. Cost per million vends (us-east-1 list prices)", ""]
    inputs = cost["inputs"]
    items = [
        "API Gateway", "vend function requests", "vend function duration", "DynamoDB",
        "provider function", "Secrets Manager",
    ]  # fmt: skip
    rows = []
    for api, kinds in cost["per_million"].items():
        for kind, row in kinds.items():
            rows.append(
                [f"{api} API", kind]
                + [f"${row['items'][i]:.4g}" if i in row["items"] else "" for i in items]
                + [f"**${row['total']:.2f}**", f"${row['with_logs_and_traces']:.2f}"]
            )
    lines += _table(["API", "vend", *items, "total", "with logs and traces"], rows)
    extras = ", ".join(f"{k} ${v:.2f}" for k, v in cost["extras_per_million"].items())
    measured = (
        f"measured {fmt_ns(inputs['vend_memory_hit_measured_ns'])} in-process"
        if inputs["measured"]
        else "bench.warm not run: the answer's and the log's sizes are assumed too"
    )
    lines.append(
        f"Memory hit billed {inputs['vend_memory_hit_billed_ms']} ms ({measured}); table hit "
        f"{inputs['table_hit_billed_ms_assumed']} ms and miss {inputs['miss_billed_ms_assumed']} "
        f"ms assumed; {inputs['memory_gb'] * 1024:.0f} MB arm64. HTTP API: "
        f"{inputs['http_api_increments_per_vend']} metered request per vend (answer "
        f"{inputs['answer_bytes']} bytes). Per million vends also: {extras} "
        f"({inputs['log_bytes_per_vend']:.0f} log bytes per vend)."
    )
    lines.append("")
    return lines
