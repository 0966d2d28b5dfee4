"""2b. Cold start as an outsider measures it: whole processes, only the layer installed.

`bench.cold` times imports inside interpreters that share the development virtualenv. Here
nothing of the development setup is used:

- the layer's packages are installed alone, as `sam build` puts them in the layer: `pip
  install --target DIR -r layers/core/requirements.txt` into a temporary directory (kept
  between runs, keyed by the requirements and the Python version), with `layers/core` (the
  tokenvend_core package) beside it;
- the interpreter is a bare virtualenv of the same Python with nothing installed (`venv
  --without-pip`), so that only the function's folder, the layer's packages and
  `layers/core` are on `sys.path`, through PYTHONPATH, in Lambda's order (/var/task, then
  /opt/python);
- the environment is Lambda's, and nothing else: the variables the Lambda runtime sets
  (AWS_LAMBDA_FUNCTION_NAME, AWS_REGION, AWS_EXECUTION_ENV=AWS_Lambda_python3.11,
  LAMBDA_TASK_ROOT, the X-Ray daemon's address for `Tracing: Active`, credentials, ...),
  plus the vend function's variables from template.yaml (TABLE_NAME, ...), resolved as
  CloudFormation would for a stack named `tokenvend`; HOME is an empty folder, so no AWS
  configuration file is read.

Two commands, run in turn (A B, then B A, ...) for ROUNDS pairs after WARMUP pairs, each a
fresh process timed from outside, from spawn to exit:

- A, the vend function: `import app` (functions/vend/app.py), then its first call's
  set-up, `app.vendor()`, which builds its boto3 clients (no AWS call is made);
- B, the floor: `import boto3`, then one Session and the same clients (the services and
  botocore Config the vend function asked for, recorded from one run of A).

Each process ends with `os._exit(0)` once its work is done: Lambda keeps the interpreter
after its init phase and never pays the teardown, which frees botocore's loaded service
models; TEARDOWN_ROUNDS extra pairs without it show what that teardown adds. Reported:
the median wall time and CPU time (user + system, from the kernel's accounting of the
child) of each, their ratio (of medians, and the median of the ratios within pairs), the
in-process figures the children print (import, set-up), and, from `python -X importtime`,
what A imports that B does not, by package.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import LAYER, ROOT, median, ratio

ROUNDS = 31
WARMUP = 2
TEARDOWN_ROUNDS = 5
TIMEOUT = 60
PIP_TIMEOUT = 900
REGION = "us-east-1"
STACK = "tokenvend"
FUNCTION = "VendFunction"
TARGET = 1.2

_FUNCTION_CODE = """
import os, sys, time
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
app.vendor()
t2 = time.perf_counter()
sys.stdout.write(f"{t1 - t0} {t2 - t1}\\n")
sys.stdout.flush()
"""

_FLOOR_CODE = """
import os, sys, time
t0 = time.perf_counter()
import boto3
t1 = time.perf_counter()
from botocore.config import Config
session = boto3.session.Session()
for service, options in {clients!r}:
    session.client(service, config=Config(**options) if options is not None else None)
t2 = time.perf_counter()
sys.stdout.write(f"{{t1 - t0}} {{t2 - t1}}\\n")
sys.stdout.flush()
"""

_EXIT_NOW = "os._exit(0)\n"

# Records the clients the function's set-up makes: their services and Config options.
_PROBE_CODE = """
import json, sys
import boto3
made = []
original = boto3.session.Session.client
def client(self, service_name, *args, **kwargs):
    config = kwargs.get("config")
    options = dict(config._user_provided_options) if config is not None else None
    made.append((service_name, options))
    return original(self, service_name, *args, **kwargs)
boto3.session.Session.client = client
import app
app.vendor()
sys.stdout.write(json.dumps(made) + "\\n")
"""


def _cache_dir(kind: str, key: bytes) -> Path:
    digest = hashlib.sha256(key + sys.version.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"tokenvend-bench-{kind}-{digest}"


def layer_packages() -> Path:
    """The layer's requirements installed alone into a folder of their own (made once)."""
    requirements = LAYER / "requirements.txt"
    target = _cache_dir("layer", requirements.read_bytes())
    if (target / ".complete").exists():
        return target
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    sys.stderr.write(f"bench: installing the layer's packages into {target}\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(partial),
            "-r",
            str(requirements),
        ],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )
    if out.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"pip install of the layer failed: {out.stderr.strip()[-1500:]}")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (target / ".complete").touch()
    return target


def bare_python() -> Path:
    """A virtualenv of this Python with nothing installed (made once)."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    folder = _cache_dir("python", str(base).encode())
    python = folder / "bin" / "python"
    if python.exists():
        return python
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(
        [str(base), "-m", "venv", "--without-pip", str(folder)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return python


def lambda_environment(packages: Path, home: Path) -> tuple[dict[str, str], Path]:
    """Lambda's environment for the vend function, and its code folder (/var/task)."""
    from tokenvend.template import Stack, load_template

    stack = Stack(load_template(ROOT / "template.yaml"), name=STACK, region=REGION)
    task = ROOT / str(stack.function_property(FUNCTION, "CodeUri")).rstrip("/")
    name = stack.physical_id(FUNCTION)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "HOME": str(home),
        # /var/task, then the layer: /opt/python holds its packages and tokenvend_core
        "PYTHONPATH": os.pathsep.join([str(task), str(packages), str(LAYER)]),
        "LAMBDA_TASK_ROOT": str(task),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": str(stack.function_property(FUNCTION, "Handler")),
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(stack.function_property(FUNCTION, "MemorySize")),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "AWS_ACCESS_KEY_ID": "ASIABENCHBENCHBENCH0",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-key",
        "AWS_SESSION_TOKEN": "bench-session-token",
        # Tracing: Active. The daemon's address is Lambda's own; here it is loopback (the
        # set-up sends nothing to it either way).
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "_AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1",
        "_AWS_XRAY_DAEMON_PORT": "2000",
        **stack.function_environment(FUNCTION),
    }
    return env, task


class Runner:
    def __init__(self, python: Path, env: dict[str, str], cwd: Path) -> None:
        self.python, self.env, self.cwd = python, env, cwd

    def run(self, code: str, *flags: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(self.python), *flags, "-c", code],
            env=self.env,
            cwd=str(self.cwd),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"a cold-start sample failed: {out.stderr.strip()[-2000:]}")
        return out

    def sample(self, code: str) -> dict[str, float]:
        """One fresh process: its wall time and CPU time from outside, and what it printed."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = self.run(code)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        imported, setup = (float(x) for x in out.stdout.split())
        return {"wall_s": wall, "cpu_s": cpu, "import_s": imported, "setup_s": setup}


def _pairs(runner: Runner, a: str, b: str, rounds: int) -> tuple[list[dict[str, float]], ...]:
    first: list[dict[str, float]] = []
    second: list[dict[str, float]] = []
    for r in range(rounds):
        if r % 2 == 0:
            first.append(runner.sample(a))
            second.append(runner.sample(b))
        else:
            second.append(runner.sample(b))
            first.append(runner.sample(a))
    return first, second


def _summary(a: list[dict[str, float]], b: list[dict[str, float]]) -> dict[str, Any]:
    def med(samples: list[dict[str, float]], key: str) -> float:
        return median([s[key] for s in samples])

    def within_pairs(key: str) -> float:
        return median([x[key] / y[key] for x, y in zip(a, b, strict=True)])

    def work(s: dict[str, float]) -> float:
        return s["import_s"] + s["setup_s"]

    return {
        "function": {k: med(a, k) for k in ("wall_s", "cpu_s", "import_s", "setup_s")},
        "floor": {k: med(b, k) for k in ("wall_s", "cpu_s", "import_s", "setup_s")},
        "wall_ratio": ratio(med(a, "wall_s"), med(b, "wall_s")),
        "wall_ratio_within_pairs": within_pairs("wall_s"),
        "wall_ratio_min_max": [
            min(x["wall_s"] / y["wall_s"] for x, y in zip(a, b, strict=True)),
            max(x["wall_s"] / y["wall_s"] for x, y in zip(a, b, strict=True)),
        ],
        "cpu_ratio": ratio(med(a, "cpu_s"), med(b, "cpu_s")),
        "in_process_ratio": ratio(median([work(s) for s in a]), median([work(s) for s in b])),
    }


# What an import is counted against: the package that brought it in. A module of another
# package (wrapt, typing_extensions, jmespath) or of the standard library counts for the
# nearest of these above it (wrapt and the asyncio it imports: aws_xray_sdk).
OWNERS = ("tokenvend_core", "aws_xray_sdk", "aws_lambda_powertools", "boto3", "botocore", "app")


def importtime_extra(runner: Runner, floor_code: str, runs: int = 5) -> dict[str, Any]:
    """What the function imports beyond the floor: `python -X importtime` of the floor's
    code, then `import app; app.vendor()`, in the same process, so that only the modules the
    floor did not load are counted. Self times (importtime's own overhead included), median
    over `runs`, by the package that brought each module in (OWNERS), and by module."""
    code = floor_code + "import app\napp.vendor()\n"
    by_owner_runs: list[dict[str, float]] = []
    by_module_runs: list[dict[str, float]] = []
    for _ in range(runs):
        out = runner.run(code, "-X", "importtime")
        rows: list[tuple[int, float, str]] = []
        for line in out.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            raw_self, _, raw_name = line[len("import time:") :].split("|")
            depth = (len(raw_name) - len(raw_name.lstrip())) // 2
            rows.append((depth, int(raw_self) / 1000, raw_name.strip()))
        start = max(i for i, row in enumerate(rows) if row[2] in ("boto3", "botocore.config"))
        owners: dict[str, float] = defaultdict(float)
        modules: dict[str, float] = defaultdict(float)
        # importtime prints a module after the imports it made: read backwards, keeping the
        # chain of modules above the current one.
        chain: list[tuple[int, str]] = []
        for depth, self_ms, name in reversed(rows[start + 1 :]):
            while chain and chain[-1][0] >= depth:
                chain.pop()
            owner = next(
                (n.split(".")[0] for _, n in reversed([*chain, (depth, name)])
                 if n.split(".")[0] in OWNERS),
                "(other)",
            )  # fmt: skip
            owners[owner] += self_ms
            modules[name] += self_ms
            chain.append((depth, name))
        by_owner_runs.append(owners)
        by_module_runs.append(modules)

    def medians(runs_: list[dict[str, float]]) -> dict[str, float]:
        names = {k for one in runs_ for k in one}
        found = {k: median([one.get(k, 0.0) for one in runs_]) for k in names}
        return dict(sorted(found.items(), key=lambda kv: -kv[1]))

    modules_ms = medians(by_module_runs)
    return {
        "runs": runs,
        "total_ms": median([sum(one.values()) for one in by_owner_runs]),
        "by_owner_ms": medians(by_owner_runs),
        "top_modules_self_ms": dict(list(modules_ms.items())[:25]),
        "asyncio_ms": sum(
            v for k, v in modules_ms.items() if k.split(".")[0] in ("asyncio", "_asyncio")
        ),
        "tomllib_ms": sum(v for k, v in modules_ms.items() if k.split(".")[0] == "tomllib"),
        "tokenvend_core_self_ms": {
            k: v for k, v in modules_ms.items() if k.startswith("tokenvend_core") or k == "app"
        },
    }


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    packages = layer_packages()
    python = bare_python()
    with tempfile.TemporaryDirectory(prefix="tokenvend-bench-home-") as home:
        env, task = lambda_environment(packages, Path(home))
        runner = Runner(python, env, task)
        clients = json.loads(runner.run(_PROBE_CODE).stdout.strip().splitlines()[-1])
        function = _FUNCTION_CODE
        floor = _FLOOR_CODE.format(clients=[tuple(c) for c in clients])
        _pairs(runner, function + _EXIT_NOW, floor + _EXIT_NOW, WARMUP)
        a, b = _pairs(runner, function + _EXIT_NOW, floor + _EXIT_NOW, rounds)
        ta, tb = _pairs(runner, function, floor, TEARDOWN_ROUNDS)
        extra = importtime_extra(runner, floor)
        versions = runner.run(
            "import boto3, botocore, aws_lambda_powertools as p, aws_xray_sdk.version as x;"
            "print(boto3.__version__, botocore.__version__, p.__version__, x.VERSION)"
        ).stdout.split()
    summary = _summary(a, b)
    teardown = _summary(ta, tb)
    return {
        "rounds": rounds,
        "warmup": WARMUP,
        "python": str(python),
        "layer_packages": str(packages),
        "versions": dict(
            zip(
                ("boto3", "botocore", "aws_lambda_powertools", "aws_xray_sdk"),
                versions,
                strict=False,
            )
        ),
        "clients": clients,
        "environment": sorted(k for k in env if not k.startswith("AWS_SECRET")),
        **summary,
        "with_teardown": {
            "rounds": TEARDOWN_ROUNDS,
            "function_wall_s": teardown["function"]["wall_s"],
            "floor_wall_s": teardown["floor"]["wall_s"],
            "wall_ratio": teardown["wall_ratio"],
        },
        "extra_imports": extra,
        "target_ratio": TARGET,
    }


if __name__ == "__main__":
    from bench.common import configure_environment

    configure_environment()
    print(json.dumps(run(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
