"""What the browser tests do on many pages: screenshot at phone and desktop widths and run
axe-core, read the video element's frame counters, and sign a staff member in with 2FA."""

from __future__ import annotations

import json
from typing import Any

import pyotp
from valkey.asyncio import Valkey

from tests.e2e.conftest import DESKTOP, PHONE, SCREENSHOTS, Person
from tests.helpers import next_totp
from tests.integration.rooms.conftest import AppServer
from tests.integration.rooms.people import PASSWORD, sign_up
from tipstream.accounts import service as accounts
from tipstream.db import Conn

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map(n => n.target)}));
}"""

FRAMES = """() => {
  const v = document.querySelector('video');
  const q = v.getVideoPlaybackQuality();
  return {frames: q.totalVideoFrames, time: v.currentTime, width: v.videoWidth};
}"""


async def audit(person: Person, axe_source: str, name: str) -> None:
    """Screenshot at both widths and run axe-core on the page as it is now."""
    page = person.page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or DESKTOP
    for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        await page.set_viewport_size(viewport)
        await page.wait_for_timeout(150)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    await page.set_viewport_size(size)
    # Evaluated through the DevTools protocol, so the page's CSP (no inline script) still holds.
    if not await page.evaluate("() => typeof axe !== 'undefined'"):
        await page.evaluate(axe_source)
    violations: list[dict[str, Any]] = await page.evaluate(AXE_RUN)
    assert violations == [], f"{name}: {json.dumps(violations, indent=1)}"


async def video_frames(person: Person) -> dict[str, float]:
    result: dict[str, float] = await person.page.evaluate(FRAMES)
    return result


async def staff_person(
    app_server: AppServer, new_person: Any, db: Conn, kv: Valkey, role: str, then: str
) -> tuple[Person, int]:
    """A moderator or admin with 2FA enrolled, signed in through the login form with a code;
    returns the browser person and the user id."""
    account = await sign_up(app_server, "viewer", tag=role)
    assert app_server.settings is not None
    await accounts.set_role(db, kv, app_server.settings, account.id, role, actor_id=None)
    secret = (await account.post("/api/auth/2fa/enroll")).json()["secret"]
    confirmed = await account.post("/api/auth/2fa/confirm", json={"code": pyotp.TOTP(secret).now()})
    assert confirmed.status_code == 200, confirmed.text
    person: Person = await new_person(app_server.base_url)
    await person.log_in(account.email, PASSWORD, then, totp=next_totp(secret))
    return person, account.id
