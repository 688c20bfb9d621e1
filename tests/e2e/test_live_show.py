"""The live show, end to end in real Chromium: a performer goes live from the studio with the
fake camera, a viewer in another context sees the video move, buys tokens through the dev
processor's hosted page, tips, and the tip animation lands on the performer's page; the viewer's
report of the stream shows up in the moderator's queue (2FA sign-in through the login form).
Along the way every page is screenshotted at phone and desktop widths, checked with axe-core (no
serious or critical violations) and watched for Content-Security-Policy violations."""

from __future__ import annotations

import time
from typing import Any

import pytest
from valkey.asyncio import Valkey

from tests.e2e.conftest import PHONE, SCREENSHOTS, Person
from tests.e2e.pages import audit, staff_person, video_frames
from tests.integration.rooms.conftest import AppServer
from tests.integration.rooms.people import PASSWORD, sign_up
from tipstream.db import Conn

pytestmark = pytest.mark.slow


async def test_go_live_watch_buy_tip_report(
    web_server: AppServer, new_person: Any, axe_source: str, db: Conn, kv: Valkey
) -> None:
    app_server = web_server
    base = app_server.base_url
    performer_account = await sign_up(app_server, "performer", tag="studio")
    viewer_account = await sign_up(app_server, "viewer", tag="fan")

    # Strangers: the public pages.
    stranger: Person = await new_person(base)
    for path, name in (("/", "home-empty"), ("/signup", "signup"), ("/login", "login")):
        await stranger.goto(path)
        await audit(stranger, axe_source, name)

    # The age gate: a minor's sign-up is refused with the API's reason shown on the form.
    await stranger.goto("/signup")
    page = stranger.page
    await page.get_by_label("Display name").fill("Young One")
    await page.get_by_label("Email").fill("young-e2e@example.test")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Date of birth").fill("2015-01-01")
    await page.get_by_label("I confirm I am 18 or older").check()
    await page.get_by_role("button", name="Sign up").click()
    await page.get_by_role("alert").filter(has_text="at least 18").wait_for()
    assert page.url.endswith("/signup")

    # The performer logs in through the form and goes live from the studio.
    performer: Person = await new_person(base)
    await performer.log_in(performer_account.email, PASSWORD, "/studio")
    page = performer.page
    await page.get_by_label("Title").fill("E2E show")
    clicked = time.monotonic()
    await page.get_by_role("button", name="Go live").click()
    await page.wait_for_function(
        "() => document.querySelector('[data-live-state]').textContent.includes('You are live')",
        timeout=20000,
    )
    print(f"go-live click → media_up: {time.monotonic() - clicked:.2f}s")
    await page.get_by_label("Goal", exact=True).fill("E2E goal")
    await page.get_by_label("Tokens", exact=True).fill("100")
    await page.get_by_role("button", name="Set goal").click()
    await page.locator("[data-goal-text]").filter(has_text="0 / 100").wait_for()
    await audit(performer, axe_source, "studio-live")

    # The viewer, on a phone-sized window, finds the room on the home page (htmx) and watches
    # moving video.
    viewer: Person = await new_person(base, viewport=PHONE)
    await viewer.log_in(viewer_account.email, PASSWORD, "/")
    room_link = viewer.page.get_by_role("link", name="E2E show")
    await room_link.wait_for(timeout=10000)
    await audit(viewer, axe_source, "home-live")
    await room_link.click()
    await viewer.page.wait_for_url("**/rooms/*")
    await viewer.page.wait_for_function(
        "() => document.querySelector('video').getVideoPlaybackQuality().totalVideoFrames > 5",
        timeout=20000,
    )
    first = await video_frames(viewer)
    await viewer.page.wait_for_timeout(1000)
    later = await video_frames(viewer)
    assert first["width"] > 0
    assert later["frames"] > first["frames"] + 5, (first, later)
    assert later["time"] > first["time"]
    await audit(viewer, axe_source, "room")
    room_url = viewer.page.url
    # The studio publishes simulcast: the viewer's quality choice changes the picture they get
    # (the fake camera's 1280x720 as full, half and quarter size layers).
    width = "document.querySelector('video').videoWidth"
    await viewer.page.wait_for_function(f"() => {width} >= 1000", timeout=30000)
    await viewer.page.get_by_label("Quality").select_option("0")
    await viewer.page.wait_for_function(f"() => {width} > 0 && {width} <= 400", timeout=30000)
    await viewer.page.get_by_label("Quality").select_option("2")
    await viewer.page.wait_for_function(f"() => {width} >= 1000", timeout=30000)
    # One viewer watching: the performer's own studio socket is not counted.
    await viewer.page.locator("[data-viewers]").filter(has_text="1").wait_for(timeout=10000)
    assert (await viewer.page.locator("[data-viewers]").inner_text()).strip() == "1"

    # Buy tokens: packages → the dev processor's hosted page → back with the new balance.
    await viewer.goto("/wallet")
    await viewer.page.locator("[data-package]").first.click()
    await viewer.page.wait_for_url("**/pay/dev/**")
    await viewer.page.get_by_role("button", name="Pay").click()
    await viewer.page.wait_for_url("**/wallet?purchase=*")
    status = viewer.page.locator("[data-purchase-status]")
    await status.filter(has_text="tokens added").wait_for(timeout=15000)
    await viewer.page.wait_for_function(
        "() => /^[0-9]+$/.test(document.querySelector('[data-wallet-balance]').textContent)"
    )
    balance = int(await viewer.page.locator("[data-wallet-balance]").inner_text())
    assert balance > 0
    await audit(viewer, axe_source, "wallet")

    # Tip with a preset; the performer's page shows the animation.
    await viewer.page.goto(room_url)
    await viewer.page.wait_for_function(
        "() => document.querySelector('[data-balance]').textContent.trim() !== '…'"
    )
    await viewer.page.get_by_role("button", name="25", exact=True).click()
    burst = performer.page.locator("[data-tip-burst]").filter(has_text="25 tokens")
    await burst.wait_for(timeout=10000)
    await performer.page.screenshot(path=str(SCREENSHOTS / "studio-tip-desktop.png"))
    assert "25" in await performer.page.locator("[data-tip-feed]").inner_text()
    for person in (viewer, performer):
        await person.page.locator("[data-goal-text]").filter(has_text="25 / 100").wait_for()
    assert await viewer.page.locator("[data-goal-title]").inner_text() == "E2E goal"
    await viewer.page.locator("[data-balance]").filter(has_text=str(balance - 25)).first.wait_for()

    # Chat, then a report of the stream that lands in the moderator's queue.
    await viewer.page.get_by_label("Message", exact=True).fill("hello from e2e")
    await viewer.page.get_by_role("button", name="Send", exact=True).click()
    await performer.page.locator("[data-chat-log]").filter(has_text="hello from e2e").wait_for()
    await viewer.page.get_by_role("button", name="Report stream").click()
    await viewer.page.get_by_label("What is wrong?").select_option("Spam or scam")
    await viewer.page.get_by_role("button", name="Send report").click()
    await viewer.page.locator("[data-chat-log]").filter(has_text="a moderator will look").wait_for()
    # On a phone the chat is a screen away: the button itself says the report went.
    reported = viewer.page.get_by_role("button", name="Reported, thanks")
    assert await reported.is_disabled()

    moderator, _ = await staff_person(
        app_server, new_person, db, kv, "moderator", "/staff/moderation"
    )
    case = moderator.page.locator("[data-staff] tbody tr").filter(has_text="Spam or scam")
    await case.wait_for(timeout=10000)
    await audit(moderator, axe_source, "staff-moderation")
    # On a phone each case is a card: its reason and action buttons are on screen, not off to
    # the right of a table scrolled sideways.
    await moderator.page.set_viewport_size(PHONE)
    for cell in ('td[data-label="Reason"]', 'td[data-label="Action"] button'):
        box = await case.locator(cell).first.bounding_box()
        assert box is not None and box["x"] + box["width"] <= PHONE["width"], (cell, box)
    await moderator.goto("/staff/kyc")
    await moderator.page.get_by_text("Nothing waiting for review").wait_for()
    await audit(moderator, axe_source, "staff-kyc")

    # End the show: the viewer is told, and the tip and chat boxes go (nobody to tip).
    await performer.page.get_by_role("button", name="End stream").click()
    await (
        viewer.page.locator("[data-video-status]").filter(has_text="ended").wait_for(timeout=10000)
    )
    for part in ("[data-tip-form]", "[data-chat-form]"):
        await viewer.page.locator(part).wait_for(state="hidden")
    assert await viewer.page.locator("[data-viewers]").inner_text() == "0"

    for person in (stranger, performer, viewer, moderator):
        assert person.csp_violations() == [], person.csp_violations()
