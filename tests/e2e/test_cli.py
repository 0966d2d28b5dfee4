"""The newcomer's path: `tokenvend local` (the console script, its defaults), then the
`tokenvend` command in a second shell that ran the export lines. Last, SIGINT stops it."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
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


def test_a_refresh_inside_the_cool_down_says_it_was_not_one(cli: LocalProcess) -> None:
    # Given a refresh of a connection, and the stack's default cool-down (30 s)
    first = tokenvend(cli, "refresh", "azure", "demo")
    assert first.returncode == 0, first.stderr

    # When it is asked again at once
    again = tokenvend(cli, "refresh", "azure", "demo")

    # Then the same token is printed, and stderr says in one line that it is no new one, and why
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert again.stderr.count("\n") == 1
    assert again.stderr.startswith("not refreshed: the connection was refreshed ")
    assert "within its cool-down (CoolDownSeconds); the API served the current token" in (
        again.stderr
    )
    assert first.stdout.strip() not in again.stderr


def connections(cli: LocalProcess) -> list[tuple[str, str, str]]:
    rows = json.loads(tokenvend(cli, "connections", "list", "--json").stdout)
    return [(row["provider"], row["connection"], row["secret_version"]) for row in rows]


def test_rough_input_gets_one_clear_line(cli: LocalProcess, tmp_path: Path) -> None:
    before = connections(cli)

    # A field of the wrong type is named as such
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"client_id": 1, "client_secret": "s3cr3t-value", "corp_id": "c"}')
    done = tokenvend(cli, "connections", "put", "dingtalk", "typed", "--file", str(wrong))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: field client_id must be a string, not a number\n"

    # A key given twice is refused
    twice = tmp_path / "twice.json"
    twice.write_text(
        '{"client_id": "a", "client_secret": "s3cr3t-value", "corp_id": "c", "corp_id": "d"}'
    )
    done = tokenvend(cli, "connections", "put", "dingtalk", "twice", "--file", str(twice))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: the secret's JSON holds the key 'corp_id' more than once; keep one\n"
    )
    assert "s3cr3t-value" not in done.stderr

    # Deleting a connection that does not exist fails with one line
    done = tokenvend(cli, "connections", "delete", "dingtalk", "no-such-connection")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: no connection dingtalk/no-such-connection: ")

    # and nothing was written
    assert connections(cli) == before


def test_sigint_stops_it_cleanly(cli: LocalProcess) -> None:
    assert cli.stop(signal.SIGINT) == 0
    assert all(line.startswith(("ready", "export ", "#")) for line in cli.stdout)
