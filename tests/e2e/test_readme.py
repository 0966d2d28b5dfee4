"""The README's first section, as a newcomer pastes it: its shell blocks run, as written, in a
second shell that ran the export lines of a running `tokenvend local`; and every variable the
README's shell code reads is one those export lines set, or one the README sets itself.

One thing differs from a newcomer's machine: this stack listens on free ports, so the
sandbox's default address in the README (`http://127.0.0.1:3002`, which the README says to
take from the `ready` line) is replaced by this stack's. A block whose tool is not installed
here (awscurl is not in `.venv`, see the README) is skipped, saying which tool.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e.harness import ROOT, LocalProcess, introspect

README = ROOT / "README.md"
DEFAULT_SANDBOX = "http://127.0.0.1:3002"
TOOLS = ("awscurl", "curl", "sed")
# Variables any shell has, which no export line needs to set.
SHELL_VARIABLES = {"HOME", "PATH", "PWD", "USER"}


def readme() -> str:
    return README.read_text("utf-8")


def first_section(text: str) -> str:
    """From the top to the first second-level heading: what a newcomer does first."""
    return text.split("\n## ", 1)[0]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)


def second_shell_blocks() -> list[str]:
    """The first section's shell blocks less those that start the stack or the tests."""
    return [
        block
        for block in shell_blocks(first_section(readme()))
        if not all(line.startswith("make ") for line in block.splitlines() if line.strip())
    ]


def block_id(block: str) -> str:
    first = next(line for line in block.splitlines() if line.strip())
    return re.sub(r"\W+", "-", first.split("#")[0].strip())[:40]


BLOCKS = second_shell_blocks()


def test_the_first_section_has_the_blocks_this_file_runs() -> None:
    commands = "\n".join(BLOCKS)
    assert "tokenvend token dingtalk demo" in commands
    assert "awscurl --service execute-api" in commands
    assert "tokenvend authorize wps365 demo" in commands
    # the scripted path past the sandbox's consent page (a browser gets Allow and Deny)
    assert "auto=allow" in commands


def test_the_practice_section_names_the_link_flow() -> None:
    practice = first_section(readme()).split("### Practise a wps365 authorization", 1)[1]
    assert "tokenvend connect" in practice
    assert "/connect/callback" in practice


def test_every_variable_the_readmes_shell_code_reads_is_set(stack: LocalProcess) -> None:
    # Given the README's shell code: its blocks, and the commands it gives inline
    text = readme()
    code = shell_blocks(text) + [
        span for span in re.findall(r"`([^`\n]+)`", text) if span.startswith(("awscurl", "POST"))
    ]
    assigned = {name for block in code for name in re.findall(r"^(\w+)=", block, re.M)}

    # When
    read = {name for snippet in code for name in re.findall(r"\$\{?(\w+)", snippet)}

    # Then each is exported by tokenvend local, set by the README itself, or any shell's
    assert read - set(stack.env) - assigned - SHELL_VARIABLES == set()
    assert "TOKENVEND_API_URL" in read  # the awscurl lines' URL


@pytest.mark.parametrize("block", BLOCKS, ids=[block_id(block) for block in BLOCKS])
def test_the_second_shell_blocks_run_as_pasted(stack: LocalProcess, block: str) -> None:
    # Given a second shell that ran the export lines, in the checkout
    if not (ROOT / ".venv" / "bin" / "activate").is_file():
        pytest.skip("no .venv in the checkout (make test makes it)")
    env = stack.shell_env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PIP_NO_INDEX"] = "1"  # nothing here may reach beyond 127.0.0.1
    missing = [
        tool
        for tool in TOOLS
        if re.search(rf"(^|[\s|(]){tool}\s", block, re.M)
        and not shutil.which(tool, path=env["PATH"])
    ]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed here (see the README's tool list)")
    assert DEFAULT_SANDBOX in block or "SANDBOX" not in block
    script = block.replace(DEFAULT_SANDBOX, stack.sandbox_url)

    # When it runs as pasted, stopping at the first command that fails
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # Then every command succeeded, and said what the README says it does
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    if "tokenvend token dingtalk demo" in block:
        token = out.splitlines()[0]
        assert introspect(stack, token)["active"] is True
        assert '"provider": "azure"' in out
        assert re.search(r"^dingtalk +demo ", out, re.M), out  # connections list
    if "awscurl" in block:
        answer = re.search(r'"access_token": ?"([^"]+)"', out)
        assert answer is not None, out
        assert introspect(stack, answer.group(1))["active"] is True
    if "tokenvend authorize wps365 demo" in block:
        assert "authorized wps365/demo: access token until " in out
        assert re.search(r"^wps365 +demo +ok \(grant ends in ", out, re.M), out
