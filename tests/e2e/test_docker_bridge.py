"""`tokenvend local --docker-bridge`: every server on the bridge address as well as on
loopback (never on every address), the demo connections' token URLs on the bridge address
(which the in-process functions reach too), and `.tokenvend/sam-env.json` in the directory
it was started from, naming that address. No Docker here: a second loopback address,
127.0.0.2, stands in for docker0's (the option takes an address as well as an interface)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from e2e.harness import MODULE, PORTS, PROVIDERS, LocalProcess, secret_of, wait_for

from tokenvend.catalogue_template import logical_prefix

BRIDGE = "127.0.0.2"
ELSEWHERE = "127.0.0.3"  # an address of this machine that no server was told of


def _bindable(host: str) -> bool:
    try:
        socket.create_server((host, 0)).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not (_bindable(BRIDGE) and _bindable(ELSEWHERE)),
    reason="this machine's loopback has only 127.0.0.1 (Linux has all of 127.0.0.0/8)",
)


def start_in(directory: Path, *args: str) -> LocalProcess:
    """`tokenvend local` started from `directory`, where its .tokenvend/ goes."""
    return LocalProcess([*MODULE, *PORTS, *args], cwd=directory)


@pytest.fixture(scope="module")
def bridged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalProcess, Path]]:
    home = tmp_path_factory.mktemp("bridged")
    process = start_in(home, "--docker-bridge", BRIDGE).wait_ready()
    yield process, home
    process.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalProcess, Path]]:
    home = tmp_path_factory.mktemp("plain")
    process = start_in(home).wait_ready()
    yield process, home
    process.stop()


def ports(stack: LocalProcess) -> dict[str, int]:
    """The port of each server: AWS, Lambda, API, sandbox."""
    urls = {
        "aws": stack.env["AWS_ENDPOINT_URL"],
        "lambda": stack.env["AWS_ENDPOINT_URL_LAMBDA"],
        "api": stack.api_url,
        "sandbox": stack.sandbox_url,
    }
    return {name: int(urlsplit(url).port or 0) for name, url in urls.items()}


def listens(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def env_file(stack: LocalProcess, home: Path) -> dict[str, dict[str, str]]:
    path = home / ".tokenvend" / "sam-env.json"
    lines = [line for line in stack.stdout if "--env-vars" in line]
    # Its path is printed after `ready`, among the comment lines
    assert lines == [f"# SAM CLI: --env-vars {path}"], stack.stdout
    assert stack.stdout.index(lines[0]) > 0
    content: dict[str, dict[str, str]] = json.loads(path.read_text())
    return content


def test_every_server_listens_on_the_bridge_address_too_and_nowhere_else(
    bridged: tuple[LocalProcess, Path],
) -> None:
    stack, _ = bridged
    assert f"also on the docker bridge {BRIDGE}" in stack.stdout[0]
    for name, port in ports(stack).items():
        assert listens("127.0.0.1", port), name
        assert listens(BRIDGE, port), name
        assert not listens(ELSEWHERE, port), name  # so not on 0.0.0.0 either
    # The printed exports stay on loopback
    assert all("127.0.0.1" in stack.env[name] for name in ("AWS_ENDPOINT_URL", "TOKENVEND_API_URL"))


def test_without_the_option_nothing_listens_on_the_bridge_address(
    plain: tuple[LocalProcess, Path],
) -> None:
    stack, _ = plain
    assert "docker bridge" not in stack.stdout[0]
    for name, port in ports(stack).items():
        assert listens("127.0.0.1", port), name
        assert not listens(BRIDGE, port), name


def test_the_bridge_address_serves_what_loopback_serves(
    bridged: tuple[LocalProcess, Path],
) -> None:
    stack, _ = bridged
    at = ports(stack)
    # AWS, through the bridge address
    import boto3

    moto = boto3.session.Session().client(
        "secretsmanager",
        endpoint_url=f"http://{BRIDGE}:{at['aws']}",
        region_name=stack.region,
        aws_access_key_id="any",
        aws_secret_access_key="any",
    )
    names = {entry["Name"] for entry in moto.list_secrets()["SecretList"]}
    assert {f"tokenvend/{provider}/demo" for provider in PROVIDERS} <= names
    # the Lambda endpoint
    answer = requests.post(
        f"http://{BRIDGE}:{at['lambda']}/2015-03-31/functions/tokenvend-dingtalk/invocations",
        json={"action": "refresh", "connection": "demo", "min_ttl": 60},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["ok"] is True
    # the sandbox
    calls = requests.get(f"http://{BRIDGE}:{at['sandbox']}/_sandbox/calls", timeout=10)
    assert calls.status_code == 200 and set(PROVIDERS) <= set(calls.json())


def test_the_demo_connections_name_the_bridge_address_and_work_in_process(
    bridged: tuple[LocalProcess, Path],
) -> None:
    stack, _ = bridged
    sandbox = f"http://{BRIDGE}:{ports(stack)['sandbox']}"
    for provider in PROVIDERS:
        secret = secret_of(stack, provider, "demo")
        urls = [secret[k] for k in ("token_url", "authority_host", "redirect_uri") if k in secret]
        assert urls and all(url.startswith(sandbox + "/") for url in urls), (provider, urls)
        # and the in-process functions fetch tokens from it (over plain http, allowed here)
        answer = stack.call("GET", f"/tokens/{provider}/demo?min_ttl=0")
        assert answer.status_code == 200, answer.text
        assert stack.sandbox("POST", "introspect", {"token": answer.json()["access_token"]})[
            "active"
        ]


def test_the_sam_environment_file_names_the_bridge_address(
    bridged: tuple[LocalProcess, Path],
) -> None:
    stack, home = bridged
    content = env_file(stack, home)
    at = ports(stack)
    assert set(content) == {"VendFunction"} | {f"{logical_prefix(p)}Function" for p in PROVIDERS}
    for logical_id, variables in content.items():
        assert variables["AWS_ENDPOINT_URL"] == f"http://{BRIDGE}:{at['aws']}", logical_id
        assert variables["PLAIN_HTTP_HOSTS"] == BRIDGE, logical_id
        assert variables["TABLE_NAME"] == stack.env["TOKENVEND_TABLE"], logical_id
        assert variables["SECRETS_PREFIX"] == stack.env["TOKENVEND_SECRETS_PREFIX"], logical_id
    assert content["VendFunction"]["AWS_ENDPOINT_URL_LAMBDA"] == f"http://{BRIDGE}:{at['lambda']}"
    assert content["VendFunction"]["PROVIDER_FUNCTION_PREFIX"] == "tokenvend-"
    assert not list(home.glob("*.json"))  # only under .tokenvend/


def test_without_the_option_the_file_names_host_docker_internal(
    plain: tuple[LocalProcess, Path],
) -> None:
    stack, home = plain
    content = env_file(stack, home)
    aws = ports(stack)["aws"]
    for logical_id, variables in content.items():
        assert variables["AWS_ENDPOINT_URL"] == f"http://host.docker.internal:{aws}", logical_id
        assert variables["PLAIN_HTTP_HOSTS"] == "", logical_id
    secret = secret_of(stack, "dingtalk", "demo")
    assert re.match(r"http://127\.0\.0\.1:\d+/", secret["token_url"])


@pytest.mark.parametrize("value", ["0.0.0.0", "::"])
def test_every_address_is_refused(tmp_path: Path, value: str) -> None:
    process = start_in(tmp_path, "--docker-bridge", value)
    assert process.process.wait(30) == 1
    said = wait_for(
        lambda: [line for line in process.stderr if "never every address" in line],
        10,
        "the refusal on stderr",
    )
    assert said[0].startswith("tokenvend local: --docker-bridge")
    assert not (tmp_path / ".tokenvend").exists()


def test_an_interface_without_an_address_is_a_clear_error(tmp_path: Path) -> None:
    process = start_in(tmp_path, "--docker-bridge", "tvnoif0")
    assert process.process.wait(30) == 1
    wait_for(
        lambda: [line for line in process.stderr if "is Docker running?" in line],
        10,
        "the error on stderr",
    )
