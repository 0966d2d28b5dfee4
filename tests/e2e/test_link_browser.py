"""The link flow in a real browser: `tokenvend connect` makes a link, headless Chromium opens
it, the sandbox's consent page (playing WPS 365) takes the click, and the stack's
/connect/callback answers the page the user lands on.

Chromium and its driver are the OS's (Debian's `chromium` and `chromium-driver`, which
`make test` installs when it runs as root), driven by Selenium; without them every test here
skips and says why. Each page the browser shows is kept as a screenshot under
tests/artifacts/link_browser/ (git-ignored; CI keeps the folder as its artifacts).

The stack is a `tokenvend local` of its own, in a temporary directory of its own; a second
one, whose links live 2 seconds (the template parameter LinkLifetimeSeconds), serves the
expired-link test. Every connection is a new wps365 connection whose redirect_uri is the
stack's `<TOKENVEND_API_URL>/connect/callback`, whose token and authorization URLs name the
sandbox, and whose app is registered in the sandbox with that redirect_uri. Outcomes are read
from the callback page's `data-outcome` (connected, access_denied, link_expired, link_used,
link_invalid), never from timing.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from e2e.harness import (
    MODULE,
    PORTS,
    ROOT,
    LocalProcess,
    console_script,
    introspect,
    table_item,
)

from tokenvend.template import load_template

pytestmark = pytest.mark.timeout(600)

ARTIFACTS = ROOT / "tests" / "artifacts" / "link_browser"
APP_NAME = "Acme Reports (sandbox)"
SCOPE = "kso.file.read kso.user_base.read"
SHORT_LINK_SECONDS = 2  # the expired-link stack's LinkLifetimeSeconds
LINK_FIELDS = ("link_nonce", "link_expires_at")  # the pending link's, on the table item
WAIT = 30  # seconds a page may take to arrive (a bound, never asserted)


# -- the browser ----------------------------------------------------------------------------


def chromium() -> tuple[str, str] | str:
    """(browser, driver) paths of the OS's Chromium, or why there is none."""
    browser = next(
        filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))),
        None,
    )
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(
            name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path
        )
        return (
            f"no {missing} on PATH: install the OS packages chromium and chromium-driver "
            "(make test does so when it runs as root)"
        )
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    found = chromium()
    if isinstance(found, str):
        pytest.skip(found)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # pragma: no cover - the dev extras have it
        pytest.skip(f"selenium is not installed ({exc}): pip install -e '.[dev]'")
    binary, driver_path = found
    options = Options()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers: Chromium's own sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1024,768",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver: Any, name: str) -> None:
    """Keep what the browser shows now as tests/artifacts/link_browser/<name>.png."""
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait_until(driver: Any, what: str, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(condition, message=f"waiting for {what}")


def consent(driver: Any, url: str, button: str, name: str) -> None:
    """Open `url` (a link): the sandbox's consent page; click `button` (allow or deny)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_until(driver, "the consent page", lambda d: d.find_elements(By.ID, button))
    assert driver.find_element(By.ID, "app").text == APP_NAME
    scopes = [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#scope li")]
    assert scopes == SCOPE.split()
    shoot(driver, f"{name}-1-consent")
    driver.find_element(By.ID, button).click()


def landed(driver: Any, stack: LocalProcess, name: str) -> str:
    """The outcome of the callback page the browser landed on (after a consent click)."""
    from selenium.webdriver.common.by import By

    callback = callback_url(stack)
    wait_until(driver, "the callback page", lambda d: d.current_url.startswith(callback))
    main = wait_until(
        driver,
        "the callback page's outcome",
        lambda d: d.find_elements(By.CSS_SELECTOR, "main[data-outcome]"),
    )[0]
    shoot(driver, f"{name}-2-callback")
    text = driver.find_element(By.TAG_NAME, "body").text
    # The page never repeats the code or the state the browser brought
    query = parse_qs(urlsplit(driver.current_url).query)
    for value in (*query.get("code", []), *query.get("state", [])):
        assert value not in text and value not in driver.page_source
    return str(main.get_attribute("data-outcome"))


# -- the stacks -----------------------------------------------------------------------------


def link_lifetime_parameter() -> bool:
    return "LinkLifetimeSeconds" in (load_template().get("Parameters") or {})


def start(name: str, *overrides: str) -> LocalProcess:
    home = Path(tempfile.mkdtemp(prefix=f"tokenvend-e2e-{name}-"))
    command = [*MODULE, *PORTS, "--parameter-overrides", "CoolDownSeconds=1", *overrides]
    return LocalProcess(command, cwd=home)


@pytest.fixture(scope="module")
def _stacks() -> Iterator[dict[str, LocalProcess]]:
    # Both start at once (their start-ups overlap); the short one only if it can be made.
    stacks = {"link": start("link")}
    if link_lifetime_parameter():
        stacks["short"] = start("short", f"LinkLifetimeSeconds={SHORT_LINK_SECONDS}")
    yield stacks
    for process in stacks.values():
        process.stop()


@pytest.fixture(scope="module")
def stack(_stacks: dict[str, LocalProcess]) -> LocalProcess:
    return _stacks["link"].wait_ready()


@pytest.fixture(scope="module")
def short_stack(_stacks: dict[str, LocalProcess]) -> LocalProcess:
    if "short" not in _stacks:
        pytest.skip(
            "template.yaml has no LinkLifetimeSeconds parameter: a link cannot be made to "
            "expire without waiting its 10 minutes"
        )
    return _stacks["short"].wait_ready()


def callback_url(stack: LocalProcess) -> str:
    return stack.api_url.rstrip("/") + "/connect/callback"


def tokenvend(
    stack: LocalProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The command, as a second shell that ran the stack's export lines runs it."""
    script = console_script()
    command = [script] if script else [sys.executable, "-m", "tokenvend"]
    return subprocess.run(
        [*command, *args],
        input=stdin,
        env=stack.shell_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def new_connection(stack: LocalProcess) -> str:
    """A wps365 connection set up for the link flow, never authorized."""
    connection = f"user-{uuid.uuid4().hex[:8]}"
    client_id, client_secret = f"app-{connection}", secrets.token_urlsafe(16)
    stack.sandbox(
        "POST",
        "register/wps365",
        {
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uri": callback_url(stack),
            "name": APP_NAME,
        },
    )
    secret = {
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uri": callback_url(stack),
        "token_url": f"{stack.sandbox_url}/wps365/oauth2/token",
        "authorize_url": f"{stack.sandbox_url}/wps365/oauth2/auth",
        "scope": SCOPE,
    }
    put = tokenvend(stack, "connections", "put", "wps365", connection, stdin=json.dumps(secret))
    assert put.returncode == 0, put.stderr
    # The redirect_uri is the stack's callback: no note about registering another
    assert "redirect_uri" not in put.stderr, put.stderr
    return connection


def link(stack: LocalProcess, connection: str) -> dict[str, Any]:
    """`tokenvend connect wps365 CONNECTION --json`, checked against the contract."""
    done = tokenvend(stack, "connect", "wps365", connection, "--json")
    assert done.returncode == 0, done.stderr
    answer = dict(json.loads(done.stdout))
    url = urlsplit(answer["url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{stack.sandbox_url}/wps365/oauth2/auth"
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert query["redirect_uri"] == callback_url(stack)
    assert query["response_type"] == "code"
    assert query["scope"] == SCOPE
    assert query["client_id"] == f"app-{connection}"
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", query["state"])
    assert "code_challenge" not in query  # wps365's entry says pkce = false
    plain = tokenvend(stack, "connect", "wps365", connection)  # the link alone, one line
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.count("\n") == 1 and plain.stdout.startswith(answer["url"][:40])
    # That second link superseded the first: hand back the newest
    return {"url": plain.stdout.strip(), "expires_at": answer["expires_at"]}


def state_of(stack: LocalProcess, connection: str) -> dict[str, Any]:
    """What a link must not change unless it authorizes: the secret's versions and value,
    and the token table's item (less the pending link's own fields)."""
    name = f"{stack.env['TOKENVEND_SECRETS_PREFIX']}wps365/{connection}"
    sm = stack.client("secretsmanager")
    versions = sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
    item = table_item(stack, "wps365", connection) or {}
    return {
        "versions": sorted(v["VersionId"] for v in versions),
        "secret": sm.get_secret_value(SecretId=name)["SecretString"],
        "item": {k: v for k, v in item.items() if k not in LINK_FIELDS},
    }


def vend(stack: LocalProcess, connection: str) -> subprocess.CompletedProcess[str]:
    return tokenvend(stack, "token", "wps365", connection, "--json")


def with_state(url: str, state: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    query["state"] = state
    return urlunsplit(parts._replace(query=urlencode(query)))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- the tests ------------------------------------------------------------------------------


def test_allow_connects_and_the_connection_vends(browser: Any, stack: LocalProcess) -> None:
    from selenium.webdriver.common.by import By

    # Given a connection never authorized: no token to vend
    connection = new_connection(stack)
    assert vend(stack, connection).returncode == 1

    # When the user opens the link and clicks Allow
    consent(browser, link(stack, connection)["url"], "allow", "allow")

    # Then the callback says connected, naming the connection; a token is vended for it
    assert landed(browser, stack, "allow") == "connected"
    assert connection in browser.find_element(By.TAG_NAME, "body").text
    vended = vend(stack, connection)
    assert vended.returncode == 0, vended.stderr
    token = json.loads(vended.stdout)
    assert token["provider"] == "wps365" and token["connection"] == connection
    assert introspect(stack, token["access_token"])["client_id"] == f"app-{connection}"


def test_deny_changes_nothing(browser: Any, stack: LocalProcess) -> None:
    # Given a link
    connection = new_connection(stack)
    url = link(stack, connection)["url"]
    before = state_of(stack, connection)

    # When the user clicks Deny
    consent(browser, url, "deny", "deny")

    # Then the page says access was not allowed, and the connection is as it was
    assert landed(browser, stack, "deny") == "access_denied"
    assert state_of(stack, connection) == before
    refused = vend(stack, connection)
    assert refused.returncode == 1 and "authorization_required" in refused.stderr


def test_an_expired_link_changes_nothing(browser: Any, short_stack: LocalProcess) -> None:
    # Given a link whose life (2 s on this stack) is over
    connection = new_connection(short_stack)
    made = link(short_stack, connection)
    expires_at = datetime.fromisoformat(made["expires_at"].replace("Z", "+00:00")).timestamp()
    while time.time() <= expires_at + 1:
        time.sleep(0.5)
    before = state_of(short_stack, connection)

    # When the user opens it and clicks Allow anyway
    consent(browser, made["url"], "allow", "expired")

    # Then the page says the link expired, and nothing changed
    assert landed(browser, short_stack, "expired") == "link_expired"
    assert state_of(short_stack, connection) == before
    assert vend(short_stack, connection).returncode == 1


def test_a_link_works_once(browser: Any, stack: LocalProcess) -> None:
    # Given a link already used to connect
    connection = new_connection(stack)
    url = link(stack, connection)["url"]
    consent(browser, url, "allow", "used-first")
    assert landed(browser, stack, "used-first") == "connected"
    after_first = state_of(stack, connection)

    # When it is opened again and allowed again (a code the provider would redeem)
    consent(browser, url, "allow", "used-again")

    # Then the page says it was used, and the first authorization stands untouched
    assert landed(browser, stack, "used-again") == "link_used"
    assert state_of(stack, connection) == after_first
    assert vend(stack, connection).returncode == 0


def test_only_the_newest_link_works(browser: Any, stack: LocalProcess) -> None:
    # Given two links, made one after the other
    connection = new_connection(stack)
    older = link(stack, connection)["url"]
    newer = link(stack, connection)["url"]
    before = state_of(stack, connection)

    # When the older one is used
    consent(browser, older, "allow", "superseded")

    # Then it is refused as used, and the newer one still connects
    assert landed(browser, stack, "superseded") == "link_used"
    assert state_of(stack, connection) == before
    consent(browser, newer, "allow", "superseded-newer")
    assert landed(browser, stack, "superseded-newer") == "connected"


def test_a_forged_or_altered_state_changes_nothing(browser: Any, stack: LocalProcess) -> None:
    # Given a link for one connection, and another connection a forger would like instead
    connection, other = new_connection(stack), new_connection(stack)
    url = link(stack, connection)["url"]
    state = parse_qs(urlsplit(url).query)["state"][0]
    payload, mac = state.split(".")
    claims = json.loads(unb64url(payload))
    retargeted = b64url(json.dumps({**claims, "c": other}, separators=(",", ":")).encode())
    extended = b64url(json.dumps({**claims, "x": claims["x"] + 86400}).encode())
    forged_mac = b64url(secrets.token_bytes(32))
    variants = {
        "altered-connection": f"{retargeted}.{mac}",
        "altered-expiry": f"{extended}.{mac}",
        "forged-mac": f"{payload}.{forged_mac}",
        "forged": f"{b64url(b'{}')}.{forged_mac}",
        "garbage": "not-a-state",
    }
    before = {name: state_of(stack, name) for name in (connection, other)}

    for name, forged in variants.items():
        # When the browser comes back with the altered state
        consent(browser, with_state(url, forged), "allow", f"state-{name}")

        # Then the link is refused as invalid, and neither connection changed
        assert landed(browser, stack, f"state-{name}") == "link_invalid", name
        assert {n: state_of(stack, n) for n in (connection, other)} == before, name

    # and the real link was not spent by any of them
    consent(browser, url, "allow", "state-genuine")
    assert landed(browser, stack, "state-genuine") == "connected"
    assert vend(stack, other).returncode == 1
