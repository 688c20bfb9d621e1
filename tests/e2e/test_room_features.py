"""More of the room and the staff pages in real Chromium:

- the performer's tip menu: edited in the studio (the API's field errors shown on the row),
  shown in the viewer's room (and updated there live), tipped with one click, and the tip with
  the item's label lands on the performer's page;
- the report buttons on a chat message and on its author reach the moderator's queue;
- a network blip: the viewer's connections to the app are reset (as a NAT or proxy dropping
  them would), and without a page reload the room socket comes back, chat works and the video
  moves again; then the viewer's media sockets stop receiving, and the page subscribes again
  by itself until the video moves; then the performer's, and the studio publishes again and the
  viewer's page follows it to a new, moving stream.

Each page is screenshotted at phone and desktop widths and checked with axe-core."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any
from urllib.parse import urlparse

import pytest
from valkey.asyncio import Valkey

from tests.e2e.conftest import Person
from tests.e2e.pages import audit, staff_person, video_frames
from tests.helpers import scalar
from tests.integration.rooms.conftest import AppServer
from tests.integration.rooms.people import PASSWORD, sign_up
from tipstream.db import Conn
from tipstream.ledger import service as ledger

pytestmark = pytest.mark.slow

MOVING = "() => document.querySelector('video').getVideoPlaybackQuality().totalVideoFrames > 5"


def client_ports(server_port: int) -> set[int]:
    """Local ports of the established client connections to the app (ours and Chromium's)."""
    listing = subprocess.run(
        ["ss", "-H", "-tn", "state", "established", f"( dport = :{server_port} )"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {int(line.split()[-2].rsplit(":", 1)[1]) for line in listing.splitlines() if line}


def browser_udp_ports() -> set[int]:
    """Local ports of Chromium's UDP sockets (its WebRTC candidates) in our namespace."""
    listing = subprocess.run(
        ["ss", "-H", "-uanp"], check=True, capture_output=True, text=True
    ).stdout
    return {
        int(line.split()[3].rsplit(":", 1)[1]) for line in listing.splitlines() if "chrom" in line
    }


def drop_udp(ports: set[int]) -> int:
    """Destroy these UDP sockets: nothing reaches them any more, as when a NAT forgets the
    mapping of a media flow. Returns how many were dropped."""
    dropped = 0
    for port in sorted(ports):
        killed = subprocess.run(
            ["ss", "-K", "-H", "-uan", f"( sport = :{port} )"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        dropped += len([line for line in killed.splitlines() if line.strip()])
    return dropped


def reset_connections(server_port: int, ports: set[int]) -> int:
    """Destroy the app's side of these connections: the kernel sends the browser a TCP reset,
    as a dropped NAT mapping or a restarted proxy would. Returns how many were reset."""
    reset = 0
    for port in sorted(ports):
        killed = subprocess.run(
            ["ss", "-K", "-H", "-tn", "state", "established",
             f"( sport = :{server_port} and dport = :{port} )"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout  # fmt: skip
        reset += len([line for line in killed.splitlines() if line.strip()])
    return reset


async def moving_video(person: Person) -> None:
    await person.page.wait_for_function(MOVING, timeout=20000)
    first = await video_frames(person)
    await person.page.wait_for_timeout(1000)
    later = await video_frames(person)
    assert later["frames"] > first["frames"] + 5, (first, later)


async def test_tip_menu_reports_and_reconnect(
    web_server: AppServer, new_person: Any, axe_source: str, db: Conn, kv: Valkey
) -> None:
    app_server = web_server
    base = app_server.base_url
    port = urlparse(base).port
    assert port is not None and app_server.settings is not None
    performer_account = await sign_up(app_server, "performer", tag="menu")
    viewer_account = await sign_up(app_server, "viewer", tag="menufan")
    chatter = await sign_up(app_server, "viewer", tag="chatter")
    await ledger.grant_tokens(
        db,
        app_server.settings,
        user_id=viewer_account.id,
        tokens=1000,
        grant_id=uuid.uuid4().hex,
        reason="browser test",
        actor_id=None,
    )

    # The performer writes a menu in the studio; a repeated label is refused by the API and
    # the error shows on that row; fixed, the menu saves.
    performer: Person = await new_person(base)
    await performer.log_in(performer_account.email, PASSWORD, "/studio")
    page = performer.page
    menu = page.locator("[data-menu-form]")
    await menu.get_by_role("button", name="Add item").click()
    await page.get_by_label("Item 1 name", exact=True).fill("Dance")
    await page.get_by_label("Item 1 tokens", exact=True).fill("50")
    await menu.get_by_role("button", name="Add item").click()
    await page.get_by_label("Item 2 name", exact=True).fill(" dance ")
    await page.get_by_label("Item 2 tokens", exact=True).fill("70")
    await menu.get_by_role("button", name="Save menu").click()
    row_error = menu.locator('[data-error-for="items[1].label"]')
    await row_error.filter(has_text="already on the menu").wait_for()
    assert await page.get_by_label("Item 2 name", exact=True).get_attribute("aria-invalid")
    await page.get_by_label("Item 2 name", exact=True).fill("Song request")
    await page.get_by_label("Item 2 tokens", exact=True).fill("120")
    await menu.get_by_role("button", name="Save menu").click()
    await menu.locator("[data-menu-state]").filter(has_text="Menu saved").wait_for()
    assert await row_error.inner_text() == ""

    await page.get_by_label("Title").fill("Menu show")
    await page.get_by_role("button", name="Go live").click()
    await page.wait_for_function(
        "() => document.querySelector('[data-live-state]').textContent.includes('You are live')",
        timeout=20000,
    )

    # The viewer opens the room: the menu is there, one button per item, in order.
    viewer: Person = await new_person(base)
    await viewer.log_in(viewer_account.email, PASSWORD, "/")
    known = client_ports(port)
    performer_udp = browser_udp_ports()
    await viewer.page.get_by_role("link", name="Menu show").click()
    await viewer.page.wait_for_url("**/rooms/*")
    await moving_video(viewer)
    viewer_ports = client_ports(port) - known
    stream_id = int(viewer.page.url.rstrip("/").rsplit("/", 1)[1])
    items = viewer.page.locator("[data-tip-menu-items] button")
    await items.first.wait_for()
    assert await items.all_text_contents() == ["Dance 50 tokens", "Song request 120 tokens"]

    # A third item saved in the studio appears in the room without a reload.
    await menu.get_by_role("button", name="Add item").click()
    await page.get_by_label("Item 3 name", exact=True).fill("Spin the wheel")
    await page.get_by_label("Item 3 tokens", exact=True).fill("77")
    await page.get_by_role("button", name="Move item 3 up").click()
    await menu.get_by_role("button", name="Save menu").click()
    await items.nth(2).wait_for()
    assert await items.all_text_contents() == [
        "Dance 50 tokens",
        "Spin the wheel 77 tokens",
        "Song request 120 tokens",
    ]
    await audit(performer, axe_source, "studio-tip-menu")
    await audit(viewer, axe_source, "room-tip-menu")

    # One click on a menu item tips its price with its label; the performer sees both.
    await viewer.page.wait_for_function(
        "() => document.querySelector('[data-balance]').textContent.trim() === '1000'"
    )
    await viewer.page.get_by_role("button", name="Song request").click()
    burst = page.locator("[data-tip-burst]").filter(has_text="120 tokens")
    await burst.filter(has_text="Song request").wait_for(timeout=10000)
    await page.locator("[data-tip-feed]").filter(has_text="Song request").wait_for()
    await viewer.page.locator("[data-balance]").filter(has_text="880").first.wait_for()
    message = await scalar(
        db, "SELECT message FROM tips WHERE viewer_id = %s", (viewer_account.id,)
    )
    assert message == "Song request"

    # Another viewer chats; our viewer reports the message, then its author.
    room = await chatter.room(stream_id)
    try:
        await room.send({"type": "chat", "text": "hello from the back row"})
        line = viewer.page.locator("[data-chat-log] li").filter(has_text="hello from the back row")
        await line.wait_for()
        await line.get_by_role("button", name="Report message from Chatter").click()
        await viewer.page.get_by_label("What is wrong?").select_option("Spam or scam")
        await viewer.page.get_by_role("button", name="Send report").click()
        thanks = viewer.page.locator("[data-chat-log] li").filter(has_text="a moderator will look")
        await thanks.wait_for()
        await line.get_by_role("button", name="Report user Chatter").click()
        await viewer.page.locator("[data-report-what]").filter(has_text="Chatter").wait_for()
        await audit(viewer, axe_source, "room-report-user")
        await viewer.page.get_by_label("What is wrong?").select_option("Harassment or hate")
        await viewer.page.get_by_role("button", name="Send report").click()
        await thanks.nth(1).wait_for()
    finally:
        await room.close()

    moderator, _ = await staff_person(
        app_server, new_person, db, kv, "moderator", "/staff/moderation"
    )
    queue = moderator.page.locator("[data-staff] tbody tr")
    await queue.filter(has_text="message (report)").filter(has_text="Spam or scam").wait_for()
    user_case = queue.filter(has_text="user (report)").filter(has_text="Harassment or hate")
    await user_case.wait_for()
    assert str(chatter.id) in await user_case.inner_text()

    # The blip: the viewer's connections are reset. Same document afterwards (no reload), the
    # socket rejoins, chat flows both ways and the video moves again.
    await viewer.page.evaluate("() => { window.sameDocument = 'yes'; }")
    joined = viewer.page.locator("[data-chat-log] .notice-line").filter(has_text="You joined")
    assert await joined.count() == 1
    assert reset_connections(port, viewer_ports) >= 1
    await joined.nth(1).wait_for(timeout=20000)
    await moving_video(viewer)
    await viewer.page.get_by_label("Message", exact=True).fill("back after the blip")
    await viewer.page.get_by_role("button", name="Send", exact=True).click()
    await page.locator("[data-chat-log]").filter(has_text="back after the blip").wait_for()
    await page.get_by_label("Message", exact=True).fill("welcome back")
    await page.get_by_role("button", name="Send", exact=True).click()
    await viewer.page.locator("[data-chat-log]").filter(has_text="welcome back").wait_for()
    assert await viewer.page.evaluate("() => window.sameDocument") == "yes"

    # A media blip: the viewer's WebRTC sockets stop receiving. The page notices the peer
    # connection failing and subscribes again: a new stream in the same <video>, moving.
    await viewer.page.evaluate(
        "() => { window.oldStream = document.querySelector('video').srcObject; }"
    )
    viewer_udp = browser_udp_ports() - performer_udp
    assert drop_udp(viewer_udp) >= 1
    await viewer.page.wait_for_function(
        "() => document.querySelector('video').srcObject !== window.oldStream", timeout=45000
    )
    await moving_video(viewer)
    assert await viewer.page.evaluate("() => window.sameDocument") == "yes"

    # The same on the performer's side: the studio publishes again on a fresh socket, and the
    # viewer's page follows the performer back to a new, moving stream.
    await page.evaluate("() => { window.sameDocument = 'yes'; }")
    await viewer.page.evaluate(
        "() => { window.oldStream = document.querySelector('video').srcObject; }"
    )
    assert drop_udp(performer_udp & browser_udp_ports()) >= 1
    live_state = page.locator("[data-live-state]")
    await live_state.filter(has_text="reconnecting").wait_for(timeout=45000)
    await live_state.filter(has_text="You are live").wait_for(timeout=30000)
    await viewer.page.wait_for_function(
        "() => document.querySelector('video').srcObject !== window.oldStream", timeout=45000
    )
    await moving_video(viewer)
    assert await page.evaluate("() => window.sameDocument") == "yes"
    # The history the rejoin repeats is not shown twice.
    assert await viewer.page.locator("[data-chat-log] li", has_text="back row").count() == 1

    for person in (performer, viewer, moderator):
        assert person.csp_violations() == [], person.csp_violations()
