"""Hiding a stream from the listings (a moderator's action and the video policy's) and frozen
payouts, through the real app process: what a viewer, the performer and finance notice."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import msgspec
import numpy as np
from valkey.asyncio import Valkey

from tests.helpers import scalar
from tests.integration.ledger.conftest import insert_stream, insert_user
from tests.integration.moderation.conftest import MakeModerator, ModWorld
from tests.integration.rooms.people import Person, live_stream, sign_up
from tipstream import db as tsdb
from tipstream.accounts import service as accounts
from tipstream.ledger import service as ledger
from tipstream.ledger import tips
from tipstream.moderation.sampler import Moderator, video_action_for
from tipstream.rooms import queries as rooms_queries
from tipstream.rooms.sfu import Sfu


async def listed(world: ModWorld, stream_id: int) -> tuple[bool, bool]:
    """Whether the stream shows in the API's live listing and in the web UI's rooms grid."""
    async with httpx.AsyncClient(base_url=world.server.base_url) as anon:
        api = [s["id"] for s in (await anon.get("/api/streams", params={"limit": 200})).json()]
        page = (await anon.get("/partials/rooms")).text
    return stream_id in api, f'href="/rooms/{stream_id}"' in page


async def report(reporter: Person, **body: object) -> int:
    """A report (its fields as keyword arguments); the new case's id."""
    created = await reporter.post("/api/moderation/reports", json=body)
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


async def act(moderator: Person, case_id: int, action: str, **body: Any) -> httpx.Response:
    return await moderator.post(
        f"/api/moderation/cases/{case_id}/actions", json={"action": action, **body}
    )


async def audited(conn: tsdb.Conn, action: str, case_id: int) -> int:
    count = await scalar(
        conn,
        "SELECT count(*) FROM audit_logs WHERE action = %s AND target_id = %s",
        (action, str(case_id)),
    )
    return int(count)


async def test_hide_keeps_the_room_working_but_out_of_the_listings_until_unhidden(
    mod_world: ModWorld, mod_db: tsdb.Conn, make_moderator: MakeModerator
) -> None:
    performer = await sign_up(mod_world.server, "performer", "hidden")
    stream_id = await live_stream(performer, "hide me")
    viewer = await sign_up(mod_world.server, tag="viewer")
    room = await viewer.room(stream_id)
    assert await listed(mod_world, stream_id) == (True, True)
    case_id = await report(viewer, target="stream", stream_id=stream_id, reason="borderline")
    moderator = await make_moderator()

    hidden = await act(moderator, case_id, "hide", note="until reviewed")
    assert hidden.status_code == 200, hidden.text
    assert (hidden.json()["status"], hidden.json()["resolution"]) == ("closed", "hide")
    assert await listed(mod_world, stream_id) == (False, False)
    # The room keeps working: the stream is live, the viewer in it chats, a newcomer with the
    # link gets in.
    async with httpx.AsyncClient(base_url=mod_world.server.base_url) as anon:
        shown = (await anon.get(f"/api/streams/{stream_id}")).json()
    assert shown["status"] == "live"
    await room.send({"type": "chat", "text": "still here"})
    assert (await room.expect("chat"))["text"] == "still here"
    newcomer = await sign_up(mod_world.server, tag="newcomer")
    assert (await newcomer.room(stream_id)).welcome
    told = (await performer.http.get("/api/notifications")).json()
    assert told[0]["kind"] == "moderation.hide"
    assert "hidden from the room listings" in told[0]["body"]
    assert await audited(mod_db, "moderation.hide", case_id) == 1

    # A closed case takes no other action, but the hide can be undone.
    assert (await act(moderator, case_id, "warn")).status_code == 409
    unhidden = await act(moderator, case_id, "unhide", note="reviewed: fine")
    assert unhidden.status_code == 200, unhidden.text
    assert unhidden.json()["resolution"] == "unhide"
    assert await listed(mod_world, stream_id) == (True, True)
    told = (await performer.http.get("/api/notifications")).json()
    assert told[0]["kind"] == "moderation.unhide"
    assert await audited(mod_db, "moderation.unhide", case_id) == 1


async def test_hide_needs_a_case_about_a_stream(
    mod_world: ModWorld, mod_db: tsdb.Conn, make_moderator: MakeModerator
) -> None:
    viewer = await sign_up(mod_world.server, tag="viewer")
    subject = await sign_up(mod_world.server, tag="subject")
    case_id = await report(viewer, target="user", user_id=subject.id, reason="no stream here")
    moderator = await make_moderator()
    refused = await act(moderator, case_id, "hide")
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    status = await scalar(mod_db, "SELECT status FROM moderation_cases WHERE id = %s", (case_id,))
    assert status == "open"


async def test_video_policy_hide_flags_and_hides_the_stream(
    mod_world: ModWorld, mod_db: tsdb.Conn, mod_kv: Valkey, make_moderator: MakeModerator
) -> None:
    performer = await sign_up(mod_world.server, "performer", "policed")
    stream_id = await live_stream(performer, "not adult")
    moderation = msgspec.structs.replace(
        mod_world.settings.moderation, nudity_action_by_room={str(performer.id): "hide"}
    )
    settings = msgspec.structs.replace(mod_world.settings, moderation=moderation)
    stream = await rooms_queries.get_stream(mod_db, stream_id)
    assert video_action_for(settings, stream) == "hide"
    assert video_action_for(mod_world.settings, stream) == "flag"  # the default elsewhere

    pool = tsdb.create_pool(settings)
    await pool.open()
    try:
        # The worker's action step, as it runs on a frame NudeNet found nudity in.
        worker = Moderator(settings, pool, mod_kv, Sfu(settings))
        frame = np.zeros((240, 320, 3), dtype=np.uint8)
        detections = [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.91, "box": [1, 2, 3, 4]}]
        await worker.apply(
            stream,
            "video",
            "nudity in a room not marked adult: FEMALE_BREAST_EXPOSED",
            0.91,
            frame,
            {"detections": detections},
            video_action_for(settings, stream),
            arrived=time.monotonic(),
        )
    finally:
        await pool.close()
    assert await listed(mod_world, stream_id) == (False, False)
    status = await scalar(mod_db, "SELECT status::text FROM streams WHERE id = %s", (stream_id,))
    assert status == "live"  # hidden, not ended
    case_id = await scalar(
        mod_db,
        "SELECT id FROM moderation_cases WHERE stream_id = %s AND source = 'video'",
        (stream_id,),
    )
    told = (await performer.http.get("/api/notifications")).json()
    assert (told[0]["kind"], told[0]["case_id"]) == ("moderation.hide", case_id)
    assert await audited(mod_db, "moderation.hide", case_id) == 1
    # The case waits for a moderator, who finds the stream hidden and lists it again.
    moderator = await make_moderator()
    queue = (await moderator.http.get("/api/moderation/queue")).json()
    assert case_id in [c["id"] for c in queue]
    assert (await act(moderator, case_id, "unhide")).status_code == 200
    assert await listed(mod_world, stream_id) == (True, True)


PAYOUT = {
    "account_holder": "Perry Former",
    "iban": "DE44 5001 0517 5407 3249 31",
    "bic": "INGDDEFFXXX",
}


async def request_payout(performer: Person, amount: str) -> httpx.Response:
    return await performer.http.post(
        "/api/payouts",
        json={**PAYOUT, "amount": amount},
        headers={"x-csrf-token": performer.csrf, "idempotency-key": str(uuid.uuid4())},
    )


async def test_frozen_payouts_cannot_be_requested_or_approved_until_unfrozen(
    mod_world: ModWorld, mod_db: tsdb.Conn, make_moderator: MakeModerator
) -> None:
    settings = mod_world.settings
    performer = await sign_up(mod_world.server, "performer", "payee")
    # 140.00 USD of earnings from one tip (no hold period in these tests).
    tipper = await insert_user(mod_db)
    await ledger.grant_tokens(
        mod_db, settings, user_id=tipper, tokens=20_000, grant_id=uuid.uuid4().hex,
        reason="test funding", actor_id=None,
    )  # fmt: skip
    stream_id = await insert_stream(mod_db, performer.id)
    await tips.post_tip(
        mod_db, settings, viewer_id=tipper, stream_id=stream_id, tokens=20_000, message=None,
        private=False, idempotency_key=uuid.uuid4().hex,
    )  # fmt: skip
    before = await request_payout(performer, "50.00")
    assert before.status_code == 201, before.text
    pending_id = before.json()["id"]

    reporter = await sign_up(mod_world.server, tag="reporter")
    case_id = await report(reporter, target="user", user_id=performer.id, reason="suspected fraud")
    moderator = await make_moderator()
    assert (await act(moderator, case_id, "freeze_payouts")).status_code == 200
    told = (await performer.http.get("/api/notifications")).json()
    assert told[0]["kind"] == "moderation.freeze_payouts"

    # The performer cannot ask for a payout ...
    payouts = await scalar(
        mod_db, "SELECT count(*) FROM payouts WHERE performer_id = %s", (performer.id,)
    )
    refused = await request_payout(performer, "50.00")
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("payouts-frozen")
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert payouts == await scalar(
        mod_db, "SELECT count(*) FROM payouts WHERE performer_id = %s", (performer.id,)
    )
    # ... and finance cannot approve the one asked for before the freeze.
    finance = await make_moderator("admin")
    await accounts.set_permissions(mod_db, finance.id, ["finance"], actor_id=None)
    batched = await finance.post("/api/admin/payouts/batch")
    assert batched.status_code in (200, 201), batched.text
    approval = await finance.post(f"/api/admin/payouts/{pending_id}/approve")
    assert approval.status_code == 409, approval.text
    assert approval.json()["type"].endswith("payouts-frozen")
    state = await scalar(mod_db, "SELECT status FROM payouts WHERE id = %s", (pending_id,))
    assert state == "requested"
    assert not await scalar(
        mod_db, "SELECT count(*) FROM payout_approvals WHERE payout_id = %s", (pending_id,)
    )

    # Unfreezing (on the closed case) lets both through again.
    released = await act(moderator, case_id, "unfreeze_payouts", note="cleared")
    assert released.status_code == 200, released.text
    assert await scalar(
        mod_db,
        "SELECT count(*) FROM audit_logs WHERE action = 'ledger.earnings_unfreeze' "
        "AND target_id = %s",
        (str(performer.id),),
    )
    told = (await performer.http.get("/api/notifications")).json()
    assert told[0]["kind"] == "moderation.unfreeze_payouts"
    approved = await finance.post(f"/api/admin/payouts/{pending_id}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["payout"]["status"] == "approved"
    assert (await request_payout(performer, "50.00")).status_code == 201
