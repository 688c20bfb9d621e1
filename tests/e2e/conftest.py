"""Real Chromium (Debian's) driven by Playwright for Python against a real app process (granian)
with Janus and coturn from the rooms tests. One browser per session; each person is a context of
their own (own cookies), with the fake camera and microphone Chromium provides.

Janus runs in a network namespace joined to ours by a veth pair (see
tests/integration/rooms/conftest.py); Chromium in our namespace reaches it over that veth, as the
aiortc peers of the rooms tests do."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

# The rooms fixtures (namespace, Janus, coturn, app processes), shared rather than copied.
from tests.integration.rooms.conftest import (  # noqa: F401
    AppServer,
    AppServerFactory,
    app_server_factory,
    janus_server,
    media_net,
    media_secrets,
    rooms_settings,
    rooms_settings_factory,
    turn_server,
)
from tipstream.config import Settings
from tipstream.vault.keys import new_keyring

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Host candidates as addresses, not mDNS names Janus can't resolve.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]
E2E_DIR = Path(__file__).parent
ROOT = E2E_DIR.parent.parent
AXE = E2E_DIR / "node_modules" / "axe-core" / "axe.min.js"
# Not TIPSTREAM_*: the app process inherits our environment and would take it for a setting.
SCREENSHOTS = Path(os.environ.get("E2E_SCREENSHOTS", ROOT / "var" / "screenshots"))
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
async def web_server(
    app_server_factory: AppServerFactory,  # noqa: F811
    rooms_settings_factory: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AppServer:
    """An app process (granian) with Janus and coturn, and a vault (reports seal evidence)."""
    credentials = tmp_path_factory.mktemp("web-credentials")
    keyring = new_keyring().format()
    (credentials / "vault_keys").write_text(keyring)
    vault_dir = tmp_path_factory.mktemp("web-vault")
    settings: Settings = rooms_settings_factory(vault={"dir": str(vault_dir)})
    settings.secrets.vault_keys = keyring
    env = {"CREDENTIALS_DIRECTORY": str(credentials), "TIPSTREAM_VAULT__DIR": str(vault_dir)}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return await app_server_factory(settings)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core from the npm registry (tests/e2e/package.json), installed by appliance/test."""
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("axe-core is missing and npm is not installed: run ./appliance/test")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(E2E_DIR)],
            check=True,
            capture_output=True,
        )
    return AXE.read_text()


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed: apt-get install chromium (appliance/test)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


class Person:
    """One browser context (its own cookies) with a page, and what its console complained of."""

    def __init__(self, context: BrowserContext, page: Page, base_url: str) -> None:
        self.context = context
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base_url + path)

    async def log_in(self, email: str, password: str, then: str, totp: str | None = None) -> None:
        await self.goto(f"/login?next={then}")
        await self.page.get_by_label("Email").fill(email)
        await self.page.get_by_label("Password", exact=True).fill(password)
        if totp is not None:
            await self.page.get_by_text("I use two-factor authentication").click()
            await self.page.get_by_label("Authenticator code").fill(totp)
        await self.page.get_by_role("button", name="Log in").click()
        # On the path itself: a glob "**/studio" already matches /login?next=/studio.
        await self.page.wait_for_url(lambda url: urlsplit(url).path == then)

    def csp_violations(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e]


@pytest.fixture
async def new_person(chromium: Browser) -> AsyncIterator[Any]:
    contexts: list[BrowserContext] = []

    async def make(base_url: str, *, viewport: dict[str, int] | None = None) -> Person:
        context = await chromium.new_context(
            viewport=viewport or DESKTOP, permissions=["camera", "microphone"]
        )
        contexts.append(context)
        page = await context.new_page()
        return Person(context, page, base_url)

    yield make
    for context in contexts:
        await context.close()
