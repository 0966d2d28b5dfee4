"""2. Cold start: what each function's module costs to import, against `import boto3`.

Every sample is a fresh interpreter (`python -c`), in which `time.perf_counter()` brackets the
import alone (the interpreter's own start-up and site are the same for all and left out).
The function's folder and the layer come first on `sys.path`, as in Lambda (/var/task,
/opt/python). Kinds are run in rotating order, round after round, so that a noisy moment
falls on all of them:

- `boto3`: `import boto3`, then a Session and the clients the function would make (its
  floor for the first call);
- `vend`, `provider` (PROVIDER=oauth2), as deployed: in Lambda's environment (LAMBDA_TASK_ROOT,
  AWS_LAMBDA_FUNCTION_NAME, ...) with tracing on (Tracing: Active), where Powertools' Tracer
  also patches botocore and requests at import; `import app`, then its first-call set-up
  (`app.vendor()` / `app.refresher()`: clients built, no AWS call);
- the same two with POWERTOOLS_TRACE_DISABLED=1.

A ratio is the median, over rounds, of the ratio within one round (samples seconds apart),
which a machine whose load drifts over the minute of the benchmark disturbs least. One
`python -X importtime` run per function module gives the imports that dominate.

Then `bench.outsider` measures the vend function's cold start as an outsider would: whole
processes, only the layer's packages installed, Lambda's environment (see its docstring).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from typing import Any

from bench import outsider
from bench.common import ENV, FUNCTIONS, LAYER, UNSET, median, ratio

ROUNDS = 21

_FUNCTION_CHILD = """
import sys, time
sys.path[:0] = [{folder!r}, {layer!r}]
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
app.{init}()
t2 = time.perf_counter()
sys.stdout.write(f"{{t1 - t0}} {{t2 - t1}}\\n")
"""

_BOTO3_CHILD = """
import sys, time
t0 = time.perf_counter()
import boto3
t1 = time.perf_counter()
session = boto3.session.Session()
for service in {services!r}:
    session.client(service)
t2 = time.perf_counter()
sys.stdout.write(f"{{t1 - t0}} {{t2 - t1}}\\n")
"""


def _function(folder: str, init: str, **env: str) -> dict[str, Any]:
    code = _FUNCTION_CHILD.format(folder=str(FUNCTIONS / folder), layer=str(LAYER), init=init)
    return {"code": code, "env": {"FOLDER": folder, **env}}


KINDS: dict[str, dict[str, Any]] = {
    "boto3 (vend's clients)": {
        "code": _BOTO3_CHILD.format(services=("dynamodb", "lambda")),
        "env": {},
    },
    "boto3 (provider's clients)": {
        "code": _BOTO3_CHILD.format(services=("secretsmanager", "dynamodb")),
        "env": {},
    },
    "vend": _function("vend", "vendor"),
    "provider": _function("provider", "refresher", PROVIDER="oauth2"),
    "vend, tracing off": _function("vend", "vendor", POWERTOOLS_TRACE_DISABLED="1"),
    "provider, tracing off": _function(
        "provider", "refresher", PROVIDER="oauth2", POWERTOOLS_TRACE_DISABLED="1"
    ),
}


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The bench's environment; for a function, also what Lambda sets (the X-Ray SDK
    builds a centralized sampler, with two botocore clients, at import when LAMBDA_TASK_ROOT
    is absent: off Lambda an import costs far more than in it). Tracing is on, as deployed
    (Tracing: Active), unless POWERTOOLS_TRACE_DISABLED is given."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET and not k.startswith("PYTHON")}
    env.update(ENV)
    extra = dict(extra)
    folder = extra.pop("FOLDER", None)
    if folder is not None:
        env.pop("POWERTOOLS_TRACE_DISABLED", None)
        name = "tokenvend-" + extra.get("PROVIDER", "vend")
        env.update(
            AWS_LAMBDA_FUNCTION_NAME=name,
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            AWS_EXECUTION_ENV="AWS_Lambda_python3.11",
            LAMBDA_TASK_ROOT=str(FUNCTIONS / folder),
            LAMBDA_RUNTIME_DIR="/var/runtime",
            AWS_XRAY_CONTEXT_MISSING="IGNORE_ERROR",
        )
    env.update(extra)
    return env


def _sample(kind: str) -> tuple[float, float]:
    spec = KINDS[kind]
    out = subprocess.run(
        [sys.executable, "-c", spec["code"]],
        env=child_env(spec["env"]),
        cwd=str(LAYER),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind}: {out.stderr.strip()[-2000:]}")
    imported, init = out.stdout.split()
    return float(imported), float(init)


def importtime(folder: str, env: dict[str, str], top: int = 10) -> dict[str, Any]:
    """`python -X importtime` of one function module: the top imports by cumulative time,
    and the self time summed by top-level package."""
    code = f"import sys; sys.path[:0] = [{str(FUNCTIONS / folder)!r}, {str(LAYER)!r}]; import app"
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=child_env(env),
        cwd=str(LAYER),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    rows: list[tuple[int, int, str]] = []
    seen_app = False
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        raw_self, raw_cumulative, raw_name = line[len("import time:") :].split("|")
        rows.append((int(raw_self), int(raw_cumulative), raw_name.rstrip()))
        seen_app = seen_app or raw_name.strip() == "app"
    if not seen_app:
        raise RuntimeError(f"importtime of {folder}: {out.stderr[-2000:]}")
    # Only what `import app` pulled in: the lines after site's imports.
    start = next(i for i, row in reversed(list(enumerate(rows))) if row[2].strip() == "site")
    rows = rows[start + 1 :]
    by_cumulative = sorted(rows, key=lambda row: row[1], reverse=True)[:top]
    packages: dict[str, int] = defaultdict(int)
    for self_us, _, name in rows:
        root = name.strip().split(".")[0]
        if root in sys.stdlib_module_names or root.startswith("_"):
            root = "(standard library)"
        packages[root] += self_us
    return {
        "top_cumulative_ms": [
            {
                "module": name.strip(),
                "depth": (len(name) - len(name.lstrip())) // 2,
                "cumulative_ms": cumulative / 1000,
                "self_ms": self_us / 1000,
            }
            for self_us, cumulative, name in by_cumulative
        ],
        "self_ms_by_package": dict(
            sorted(((k, v / 1000) for k, v in packages.items()), key=lambda kv: -kv[1])[:8]
        ),
    }


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    kinds = list(KINDS)
    samples: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    for _ in range(2):  # warm the page cache and the .pyc files
        for kind in kinds:
            _sample(kind)
    for r in range(rounds):
        for k in range(len(kinds)):
            kind = kinds[(r + k) % len(kinds)]
            samples[kind].append(_sample(kind))
    imports = {kind: median([s[0] for s in values]) for kind, values in samples.items()}
    inits = {kind: median([s[1] for s in values]) for kind, values in samples.items()}
    boto3_import = median(
        [s[0] for kind in kinds if kind.startswith("boto3") for s in samples[kind]]
    )
    floor_init = {
        "vend": imports["boto3 (vend's clients)"] + inits["boto3 (vend's clients)"],
        "provider": imports["boto3 (provider's clients)"] + inits["boto3 (provider's clients)"],
    }
    # Ratios are taken within each round (samples minutes apart on a shared machine see
    # different loads; those of one round, seconds apart, mostly the same), then the median.
    vend_floor, provider_floor = (
        samples["boto3 (vend's clients)"],
        samples["boto3 (provider's clients)"],
    )
    boto3_by_round = [(v[0] + p[0]) / 2 for v, p in zip(vend_floor, provider_floor, strict=True)]
    modules = {}
    for kind in ("vend", "provider", "vend, tracing off", "provider, tracing off"):
        floor = vend_floor if kind.startswith("vend") else provider_floor
        base = "vend" if kind.startswith("vend") else "provider"
        total = imports[kind] + inits[kind]
        modules[kind] = {
            "import_s": imports[kind],
            "import_over_boto3": median(
                [s[0] / b for s, b in zip(samples[kind], boto3_by_round, strict=True)]
            ),
            "import_over_boto3_ratio_of_medians": ratio(imports[kind], boto3_import),
            "first_call_setup_s": inits[kind],
            "import_and_setup_s": total,
            "import_and_setup_over_boto3_and_clients": median(
                [(s[0] + s[1]) / (f[0] + f[1]) for s, f in zip(samples[kind], floor, strict=True)]
            ),
            "import_and_setup_ratio_of_medians": ratio(total, floor_init[base]),
        }
    try:
        as_outsider = outsider.run()
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        # e.g. the layer's packages could not be installed: said in the results and table
        as_outsider = {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "rounds": rounds,
        "outsider": as_outsider,
        "boto3_import_s": boto3_import,
        "boto3_and_clients_s": floor_init,
        "modules": modules,
        "target_ratio": 1.3,
        "importtime": {
            "vend": importtime("vend", KINDS["vend"]["env"]),
            "provider": importtime("provider", KINDS["provider"]["env"]),
        },
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(rounds=5), indent=2))
