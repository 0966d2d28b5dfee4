"""The newcomer's path: `tokenvend local` (the console script, its defaults), then the
`tokenvend` command in a second shell that ran the export lines. Last, SIGINT stops it."""

from __future__ import annotations

import json
import signal
import subprocess
from urllib.parse import parse_qs, urlsplit

import requests
from e2e.harness import LocalProcess, console_script, introspect


def tokenvend(cli: LocalProcess, *args: str) -> subprocess.CompletedProcess[str]:
    script = console_script()
    assert script
    return subprocess.run(
        [script, *args],
        env=cli.shell_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_first_token_from_a_second_shell(cli: LocalProcess) -> None:
    # The hint line tells the newcomer what to run
    assert cli.stdout[-1] == "# then: tokenvend token dingtalk demo"

    # When
    done = tokenvend(cli, "token", "dingtalk", "demo")

    # Then the token alone is printed, and the sandbox issued it
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert "\n" not in token
    assert introspect(cli, token)["active"] is True


def test_authorize_and_refresh_through_the_command(cli: LocalProcess) -> None:
    # Given a code from the sandbox's consent page for the wps365 demo app
    callback = f"{cli.sandbox_url}/wps365/callback"
    page = requests.get(
        f"{cli.sandbox_url}/wps365/oauth2/auth",
        params={"client_id": "tokenvend-demo-wps365", "redirect_uri": callback},
        allow_redirects=False,
        timeout=10,
    )
    code = parse_qs(urlsplit(page.headers["Location"]).query)["code"][0]

    # When
    authorized = tokenvend(
        cli, "authorize", "wps365", "demo", "--code", code, "--redirect-uri", callback
    )
    refreshed = tokenvend(cli, "refresh", "wps365", "demo", "--json")

    # Then
    assert authorized.returncode == 0, authorized.stderr
    assert refreshed.returncode == 0, refreshed.stderr
    answer = json.loads(refreshed.stdout)
    assert answer["provider"] == "wps365"
    assert introspect(cli, answer["access_token"])["active"] is True


def test_sigint_stops_it_cleanly(cli: LocalProcess) -> None:
    assert cli.stop(signal.SIGINT) == 0
    assert all(line.startswith(("ready", "export ", "#")) for line in cli.stdout)
