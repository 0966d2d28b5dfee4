"""End-to-end: `tokenvend local` as a subprocess on free ports, driven only from outside, as a
user's second shell would: its export lines, SigV4-signed HTTP, boto3 against the local
endpoints, the sandbox's control surface, and the `tokenvend` command.

Four stacks, each started once for the session: `stack` (the demo connections; cool-down
1 s so that a refresh may follow an authorization at once), `http` (the same with
`--api-type http`, for test_http_api.py), `ticking` (schedules every second) and `cli` (the `tokenvend local` console script with its defaults, as a newcomer
runs it). They start in parallel on first use of any of them. `ticking` is used only by
test_schedule.py and `cli` only by test_cli.py, whose last tests stop them with a signal.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.harness import MODULE, PORTS, LocalProcess, console_script

COMMANDS: dict[str, list[str]] = {
    "stack": [*MODULE, *PORTS, "--parameter-overrides", "CoolDownSeconds=1"],
    # ApiType HTTP: an HTTP API (payload format 2.0, no resource policy), test_http_api.py's.
    "http": [*MODULE, *PORTS, "--api-type", "http", "--parameter-overrides", "CoolDownSeconds=1"],
    "ticking": [
        *MODULE,
        *PORTS,
        "--refresh-every",
        "1",
        "--parameter-overrides",
        "CoolDownSeconds=1",
    ],
}

_started: dict[str, LocalProcess] = {}


def _start_all() -> None:
    """Start every stack at once: their start-ups overlap instead of adding up."""
    if _started:
        return
    commands = dict(COMMANDS)
    script = console_script()
    if script:
        commands["cli"] = [script, "local", *PORTS]
    for name, command in commands.items():
        # Each in a directory of its own: its .tokenvend/ (state, SAM environment) is its own,
        # as two users' checkouts would be.
        home = Path(tempfile.mkdtemp(prefix=f"tokenvend-e2e-{name}-"))
        _started[name] = LocalProcess(command, cwd=home)


@pytest.fixture(scope="session")
def _processes() -> Iterator[dict[str, LocalProcess]]:
    _start_all()
    yield _started
    for process in _started.values():
        process.stop()


def started(processes: dict[str, LocalProcess], name: str) -> LocalProcess:
    if name not in processes:
        pytest.skip(f"no {name} stack (the tokenvend console script is not installed)")
    return processes[name].wait_ready()


@pytest.fixture(scope="session")
def stack(_processes: dict[str, LocalProcess]) -> LocalProcess:
    return started(_processes, "stack")


@pytest.fixture(scope="session")
def http_stack(_processes: dict[str, LocalProcess]) -> LocalProcess:
    return started(_processes, "http")


@pytest.fixture(scope="session")
def ticking(_processes: dict[str, LocalProcess]) -> LocalProcess:
    return started(_processes, "ticking")


@pytest.fixture(scope="session")
def cli(_processes: dict[str, LocalProcess]) -> LocalProcess:
    return started(_processes, "cli")
