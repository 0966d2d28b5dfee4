"""The rooms of the runtime package, kept apart by a test rather than a comment.

tokenvend_core has two paths: vend (the API's function, which holds no secret and calls no
token endpoint) and refresh (the provider functions). Around them: the AWS adapters (`aws/`),
the provider catalogue (`catalogue/`) and the kernel modules at the top, which both paths use.

- A vend container, from its cold start through its first answer, never loads the refresh
  side, the catalogue's request building or answer reading, nor the libraries those bring
  (requests, joserfc), nor the `tokenvend` package (the CLI and local stack, which are not
  deployed). Checked by importing functions/vend/app.py in a fresh interpreter, building its
  objects and handling one request, as Lambda would.
- Statically, over every import in the files (lazy and TYPE_CHECKING ones too): nothing under
  `vend/` imports `refresh`; nothing under `aws/` nor a kernel module imports `vend` or
  `refresh`.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "core"
PACKAGE = LAYER / "tokenvend_core"
VEND_APP = ROOT / "functions" / "vend" / "app.py"

VEND_NEVER_LOADS = (
    "tokenvend_core.refresh",
    "tokenvend_core.catalogue.request",
    "tokenvend_core.catalogue.answer",
    "requests",
    "joserfc",
    "tokenvend",
)

# Run in a fresh interpreter with only the layer on the path, as a vend container: import
# the handler's module, build its objects (`vendor()`, as its first request does), answer a
# request that needs no AWS call, then print every module loaded, as the last line.
PROBE = """
import importlib.util, json, sys

spec = importlib.util.spec_from_file_location("vend_app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
for name in sys.argv[3:]:
    importlib.import_module(name)
module.vendor()


class Context:
    function_name = "tokenvend-vend"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:tokenvend-vend"
    memory_limit_in_mb = 512
    aws_request_id = "layout-probe"
    log_group_name = "/aws/lambda/tokenvend-vend"
    log_stream_name = "layout-probe"

    def get_remaining_time_in_millis(self):
        return 20_000


with open(sys.argv[2]) as sample:
    event = json.load(sample)
event["pathParameters"]["connection"] = "not a connection name"
answer = module.lambda_handler(event, Context())
assert answer["statusCode"] == 400, answer
print(json.dumps(sorted(sys.modules)))
"""


def vend_container_modules(*also: str) -> set[str]:
    """Every module a vend container has loaded after its first answer (plus `also`)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(LAYER),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        # As deployed: in Lambda, with the tracer and metrics on.
        "AWS_LAMBDA_FUNCTION_NAME": "tokenvend-vend",
        "POWERTOOLS_SERVICE_NAME": "tokenvend",
        "POWERTOOLS_METRICS_NAMESPACE": "tokenvend",
        "TABLE_NAME": "tokenvend-TokenTable",
        "PROVIDER_FUNCTION_PREFIX": "tokenvend-",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(VEND_APP), str(ROOT / "events" / "vend-get.json"), *also],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def loaded_by_vend(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if under(name, VEND_NEVER_LOADS))


def test_a_vend_container_never_loads_the_refresh_side() -> None:
    modules = vend_container_modules()
    assert "tokenvend_core.vend.vendor" in modules  # the probe did reach the vend path
    assert loaded_by_vend(modules) == []


def test_the_probe_sees_a_forbidden_module_when_one_is_loaded() -> None:
    modules = vend_container_modules("tokenvend_core.refresh.lease")
    assert "tokenvend_core.refresh.lease" in loaded_by_vend(modules)


# -- static: the imports written in the files ----------------------------------------------


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Every module `path` imports anywhere in it (top level, in functions, under
    TYPE_CHECKING), absolute; `from a import b` counts as both `a` and `a.b`."""
    package = module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def forbidden_imports(files: Iterable[Path], root: Path, forbidden: Iterable[str]) -> list[str]:
    forbidden = tuple(forbidden)
    return sorted(
        f"{path.relative_to(root)} imports {name}"
        for path in files
        for name in imports_of(path, root)
        if under(name, forbidden)
    )


def rooms(package: Path) -> dict[str, list[Path]]:
    return {
        "vend": sorted((package / "vend").rglob("*.py")),
        "aws": sorted((package / "aws").rglob("*.py")),
        "kernel": sorted(package.glob("*.py")),
    }


def test_the_vend_side_imports_nothing_of_the_refresh_side() -> None:
    refresh = ["tokenvend_core.refresh"]
    found = forbidden_imports(rooms(PACKAGE)["vend"], LAYER, refresh)
    found += forbidden_imports([VEND_APP], ROOT, refresh)
    assert found == []


def test_the_aws_adapters_and_the_kernel_import_neither_path() -> None:
    found = rooms(PACKAGE)
    assert found["kernel"] and found["aws"]
    files = [*found["aws"], *found["kernel"]]
    paths = ["tokenvend_core.vend", "tokenvend_core.refresh"]
    assert forbidden_imports(files, LAYER, paths) == []


@pytest.mark.parametrize(
    "line",
    [
        "from tokenvend_core.refresh import lease",
        "import tokenvend_core.refresh.lease",
        "from tokenvend_core import refresh",
        "from ..refresh.lease import refresh",
        "def later():\n    from tokenvend_core.refresh.lease import refresh",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..refresh import lease",
    ],
)
def test_the_static_check_finds_a_planted_import(tmp_path: Path, line: str) -> None:
    package = tmp_path / "tokenvend_core"
    (package / "vend").mkdir(parents=True)
    (package / "vend" / "planted.py").write_text(line + "\n")
    (package / "vend" / "fine.py").write_text("from ..aws.store import TokenStore\n")
    found = forbidden_imports(rooms(package)["vend"], tmp_path, ["tokenvend_core.refresh"])
    assert {entry.partition(" imports ")[0] for entry in found} == {
        "tokenvend_core/vend/planted.py"
    }
