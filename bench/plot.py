"""The key figures of a run as one PNG beside bench/results.json (matplotlib, Agg): the
cached-hit cost against the client's peers, stampedes (requests that reach a token
endpoint), the fleet refresh time, and the cost per million vends for both API types.
docs/performance.md shows it.

    python -m bench.plot      # redraws bench/results.png from bench/results.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS

PNG = RESULTS.with_name("results.png")
OURS, PEER, FLOOR, LIMIT = "#1f6f8b", "#b0b7bf", "#7fb069", "#c0392b"


def _not_run(ax: Any, title: str) -> None:
    ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
    ax.text(0.5, 0.5, "not run in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _client(ax: Any, client: dict[str, Any] | None) -> None:
    title = "Cached token: cost per call (median, log scale)"
    if not client:
        _not_run(ax, title)
        return
    calls = client["calls"]
    names = list(calls)
    values = [calls[name]["median_ns"] for name in names]
    colours = [
        FLOOR if name == "dict lookup" else OURS if name.startswith("TokenClient") else PEER
        for name in names
    ]
    ax.barh(names, values, color=colours)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.axvline(client.get("target_ns", 300), color=LIMIT, linestyle="--", linewidth=1)
    ax.text(
        client.get("target_ns", 300),
        len(names) - 0.45,
        " target 300 ns",
        color=LIMIT,
        fontsize=8,
        va="bottom",
    )
    floor = calls["dict lookup"]["median_ns"]
    for y, value in enumerate(values):
        label = f" {value:,.0f} ns ({value / floor:.1f}x dict)"
        ax.text(value, y, label, va="center", fontsize=8)
    ax.set_xlim(min(values) / 2, max(values) * 30)
    ax.set_xlabel("nanoseconds per call")
    ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
    ax.tick_params(axis="y", labelsize=8)


def _stampede(ax: Any, stampede: dict[str, Any] | None, client: dict[str, Any] | None) -> None:
    title = "Stampedes: requests that reached the token endpoint"
    labels: list[str] = []
    asked: list[int] = []
    reached: list[int] = []
    ours: list[bool] = []
    for row in (stampede or {}).get("rows", []):
        labels.append(f"service: {row['row']}")
        asked.append(row["vends"])
        reached.append(row["token_endpoint_calls"])
        ours.append(True)
    concurrent = (client or {}).get("stampede", {}).get("clients", {})
    for name, row in concurrent.items():
        labels.append(f"client: {name}, {row['threads']} threads")
        asked.append(row["threads"])
        reached.append(row["requests"])
        ours.append(name == "TokenClient")
    if not labels:
        _not_run(ax, title)
        return
    ys = range(len(labels))
    ax.barh([y - 0.2 for y in ys], asked, height=0.4, color="#dfe4ea", label="asked at once")
    ax.barh(
        [y + 0.2 for y in ys],
        reached,
        height=0.4,
        color=[OURS if mine else PEER for mine in ours],
        label="token requests",
    )
    for y, (a, r) in enumerate(zip(asked, reached, strict=True)):
        ax.text(max(a, r), y, f" {r:,} for {a:,}", va="center", fontsize=8)
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(0.8, max(asked) * 20)
    ax.set_xlabel("count (log scale)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, loc="left", fontsize=10, fontweight="bold")


def _fleet(ax: Any, fleet: dict[str, Any] | None) -> None:
    title = "One scheduled run: time to refresh a fleet"
    if not fleet:
        _not_run(ax, title)
        return
    runs = fleet["runs"]
    labels = [f"{r['connections'] // 1000}k @ {r['concurrency']}\n{r['variant']}" for r in runs]
    seconds = [r["seconds"] for r in runs]
    done = [
        r["report"]["refreshed"] + r["report"].get("fanned_out", 0) == r["connections"]
        for r in runs
    ]
    ax.bar(range(len(runs)), seconds, color=[OURS if d else PEER for d in done])
    ax.axhline(60, color=LIMIT, linestyle="--", linewidth=1)
    ax.text(len(runs) - 0.5, 60, "Lambda timeout 60 s", color=LIMIT, fontsize=8, ha="right",
            va="bottom")  # fmt: skip
    for x, r in enumerate(runs):
        report = r["report"]
        note = f"{report['refreshed']:,}\ndone"
        if report.get("deferred"):
            note += f"\n{report['deferred']:,}\ndeferred"
        if report.get("fanned_out"):
            note += f"\n{report['fanned_out']:,}\nqueued"
        ax.text(x, r["seconds"], note, ha="center", va="bottom", fontsize=6.5)
    ax.set_xticks(range(len(runs)), labels, fontsize=7)
    ax.set_ylabel("seconds (wall)")
    ax.set_ylim(0, max(70, max(seconds) * 1.35))
    ax.set_title(title + " (connections @ concurrency)", loc="left", fontsize=10,
                 fontweight="bold")  # fmt: skip


def _cost(ax: Any, cost: dict[str, Any] | None) -> None:
    title = "Cost per million vends (us-east-1 list prices)"
    if not cost:
        _not_run(ax, title)
        return
    table = cost["per_million"]
    bars = [(api, kind) for api in ("REST", "HTTP") for kind in ("memory hit", "table hit")]
    items = list(table["REST"]["memory hit"]["items"])
    extras = cost["extras_per_million"]
    colours = ["#1f6f8b", "#7fb069", "#f4a259", "#8d6a9f", "#5c6b73", "#c0c0c0", "#e0e0e0"]
    bottoms = [0.0] * len(bars)
    for i, item in enumerate([*items, *extras]):
        values = [
            table[api][kind]["items"].get(item, 0.0) if item in items else extras[item]
            for api, kind in bars
        ]
        ax.bar(
            range(len(bars)),
            values,
            bottom=bottoms,
            color=colours[i % len(colours)],
            label=item,
            hatch="//" if item in extras else None,
            edgecolor="white",
        )
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for x, (api, kind) in enumerate(bars):
        core = table[api][kind]["total"]
        ax.text(x, bottoms[x], f"${core:.2f}\n(${bottoms[x]:.2f} all-in)", ha="center",
                va="bottom", fontsize=8)  # fmt: skip
    ax.axhline(cost["target_http"], color=LIMIT, linestyle="--", linewidth=1)
    ax.text(1.5, cost["target_http"], f"target ${cost['target_http']:.2f} (HTTP)", color=LIMIT,
            fontsize=8, ha="center", va="center",
            bbox={"facecolor": "white", "edgecolor": LIMIT, "pad": 2})  # fmt: skip
    ax.set_xticks(range(len(bars)), [f"{api} API\n{kind}" for api, kind in bars], fontsize=8)
    ax.set_ylabel("dollars per million vends")
    ax.set_ylim(0, max(bottoms) * 1.3)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    ax.set_title(title, loc="left", fontsize=10, fontweight="bold")


def draw(results: dict[str, Any], path: Path = PNG) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    _client(axes[0][0], results.get("client"))
    _stampede(axes[0][1], results.get("stampede"), results.get("client"))
    _fleet(axes[1][0], results.get("fleet"))
    _cost(axes[1][1], results.get("cost"))
    meta = results.get("meta", {})
    fig.suptitle(
        f"tokenvend benchmarks, {meta.get('date', '')}: {meta.get('cpus', '?')} CPUs, "
        f"Python {meta.get('python', '')}, commit {meta.get('commit', '')}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(draw(json.loads(RESULTS.read_text())))
