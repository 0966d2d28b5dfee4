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
            f"holding the token. Each hit writes {warm['log_bytes_per_hit']:.0f} bytes of "
            "Powertools output (the EMF metrics document) to the log."
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
        lines.append(
            f"### 5. Client (in-process, cached token, {client['rounds']:,} calls each, "
            "interleaved)"
        )
        lines.append("")
        floor = client["calls"]["dict lookup"]["median_ns"]
        rows = [
            [name, fmt_ns(s["median_ns"]), fmt_ns(s["p99_ns"]), _x(s["median_ns"] / floor)]
            for name, s in client["calls"].items()
        ]
        lines += _table(["call", "median", "p99", "÷ dict lookup"], rows)
        lines.append(f"API requests while timed: {client['api_requests_while_timed']}.")
        lines.append("")
    lines.append("### Targets (issue 6)")
    lines.append("")
    lines += _table(
        ["target", "measured", "status"],
        [[t["target"], t["measured"], _yes(t["met"])] for t in targets(results)],
    )
    lines.append(f"Wall time of this run: {meta.get('seconds', 0):.0f} s.")
    return "\n".join(lines)
