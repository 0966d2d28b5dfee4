"""`python -m bench` (`make bench`): every benchmark, one after another; the table on
stdout, the figures in bench/results.json and drawn in bench/results.png, progress on
stderr.

    python -m bench                      # all of them, about 5 minutes
    python -m bench --only warm,client   # some of them
"""

from __future__ import annotations

from bench.common import configure_environment

configure_environment()  # before anything imports Powertools or boto3

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

from bench import client_cost, cold, cost, fleet, plot, stampede, warm  # noqa: E402
from bench.common import RESULTS, ROOT  # noqa: E402
from bench.report import render, targets  # noqa: E402

BENCHMARKS = {
    "warm": warm.run,
    "cold": cold.run,
    "stampede": stampede.run,
    "fleet": fleet.run,
    "client": client_cost.run,
}


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "layers", "functions", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": _cpu(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_at_start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "commit": _commit(),
        }
    }
    for name in chosen:
        sys.stderr.write(f"bench: {name} ...\n")
        sys.stderr.flush()
        t0 = time.perf_counter()
        results[name] = BENCHMARKS[name]()
        sys.stderr.write(f"bench: {name} done in {time.perf_counter() - t0:.0f} s\n")
    results["meta"]["seconds"] = time.perf_counter() - started
    results["meta"]["load_at_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    results["cost"] = cost.per_million(results.get("warm"))
    results["targets"] = targets(results)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    sys.stderr.write(f"bench: wrote {RESULTS.relative_to(ROOT)}\n")
    try:
        png = plot.draw(results)
    except ImportError as exc:  # matplotlib: `make bench` installs it (the bench extra)
        sys.stderr.write(f"bench: no plot ({exc}); pip install -e '.[bench]'\n")
    else:
        sys.stderr.write(f"bench: wrote {png.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
