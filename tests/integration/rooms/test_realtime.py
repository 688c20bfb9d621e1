"""The realtime room channel across two app processes: chat and tips reach every viewer
exactly once and in the same order; moderation; bad input; slow clients are dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pyotp
import pytest
from valkey.asyncio import Valkey
from websockets.asyncio.client import connect

from tests.integration.rooms.conftest import AppServer, AppServerFactory
from tests.integration.rooms.people import Person, RoomConn, live_stream, sign_up
from tipstream import kv as kvmod
from tipstream.accounts import service as accounts
from tipstream.config import Settings
from tipstream.db import Conn


async def publish_tip(
    kv: Valkey,
    settings: Settings,
    stream_id: int,
    tip_id: int,
    *,
    performer_id: int,
    viewer: Person,
    message: str | None = None,
    private: bool = False,
    padding: int = 0,
) -> None:
    """A tip event as the ledger's outbox publishes it (msgspec JSON, "type": "tip")."""
    event = {
        "type": "tip",
        "tip_id": tip_id,
        "stream_id": stream_id,
        "performer_id": performer_id,
        "viewer_id": viewer.id,
        "viewer_name": viewer.user["display_name"],
        "tokens": 25,
        "message": (message or "") + "x" * padding if (message or padding) else None,
        "private_message": private,
        "at": datetime.now(UTC).isoformat(),
    }
    await kv.publish(kvmod.key(settings, "room", stream_id), msgspec.json.encode(event))


def events(room: RoomConn, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    return [m for m in room.seen if m.get("type") in kinds]


async def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
async def second_server(app_server_factory: AppServerFactory) -> AppServer:
    return await app_server_factory()


@pytest.mark.slow
async def test_chat_and_tips_across_two_app_processes_exactly_once_in_order(
    app_server: AppServer, second_server: AppServer, kv: Valkey, rooms_settings: Settings
) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    people = [await sign_up(app_server) for _ in range(4)]
    rooms = [await performer.room(stream_id)]
    for i, person in enumerate(people):
        rooms.append(await person.room(stream_id, app_server if i % 2 else second_server))

    sent = 0
    for round_ in range(3):
        for i in range(len(people)):
            await rooms[i + 1].send({"type": "chat", "text": f"hello {round_}-{i} :heart:"})
            sent += 1
        await publish_tip(
            kv, rooms_settings, stream_id, 1000 + round_, performer_id=performer.id,
            viewer=people[0], message=f"tip {round_}",
        )  # fmt: skip
    # The ledger's outbox may deliver an event twice (at least once): viewers see it once.
    await publish_tip(
        kv, rooms_settings, stream_id, 1000, performer_id=performer.id, viewer=people[0],
        message="tip 0",
    )  # fmt: skip
    await publish_tip(
        kv, rooms_settings, stream_id, 2000, performer_id=performer.id, viewer=people[1],
        message="for your eyes only", private=True,
    )  # fmt: skip

    expected = sent + 4
    for room in rooms:
        await wait_for(lambda r=room: len(events(r, ("chat", "tip"))) >= expected)
    await asyncio.sleep(0.5)  # anything extra (a duplicate) would have arrived by now
    sequences = []
    for room in rooms:
        seen = events(room, ("chat", "tip"))
        assert len(seen) == expected, [m.get("id", m.get("tip_id")) for m in seen]
        chats = [m for m in seen if m["type"] == "chat"]
        ids = [m["id"] for m in chats]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all("\u2764" in m["text"] for m in chats)
        tips = [m["tip_id"] for m in seen if m["type"] == "tip"]
        assert tips == [1000, 1001, 1002, 2000]
        sequences.append([(m["type"], m.get("id", m.get("tip_id"))) for m in seen])
    assert all(s == sequences[0] for s in sequences), "viewers saw different orders"
    private = [m for m in events(rooms[0], ("tip",)) if m["tip_id"] == 2000]
    assert private[0]["message"] == "for your eyes only"  # the performer
    for room in rooms[1:]:
        tip = next(m for m in events(room, ("tip",)) if m["tip_id"] == 2000)
        assert tip["message"] is None

    # Viewer counts cover both processes.
    late = await people[0].room(stream_id, second_server)
    count = await late.expect("viewers", timeout=10)
    assert count["count"] >= len(rooms)
    # A viewer joining later gets the last messages.
    assert len(late.welcome["history"]) == sent
    await performer.post(f"/api/streams/{stream_id}/end")


async def test_chat_limits_and_moderation(app_server: AppServer) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    alice, bob = await sign_up(app_server), await sign_up(app_server)
    stage, a, b = (
        await performer.room(stream_id),
        await alice.room(stream_id),
        await bob.room(stream_id),
    )

    await a.send({"type": "chat", "text": "x" * 501})
    assert (await a.expect("error"))["code"] == "invalid-input"
    await a.send({"type": "chat", "text": "   "})
    assert (await a.expect("error"))["code"] == "invalid-input"
    await a.send({"type": "chat", "text": "first"})
    first = await b.expect("chat")

    # Viewers may not moderate, nor publish into someone else's stream.
    await b.send({"type": "moderate", "action": "delete", "message_id": first["id"]})
    assert (await b.expect("error"))["code"] == "forbidden"
    await b.send({"type": "publish", "sdp": "v=0 fake offer sdp"})
    assert (await b.expect("error"))["code"] == "not-the-performer"

    await stage.send({"type": "moderate", "action": "delete", "message_id": first["id"]})
    assert (await b.expect("deleted"))["message_id"] == first["id"]
    late = await bob.room(stream_id)
    assert all(m["id"] != first["id"] for m in late.welcome["history"])
    await late.close()

    await stage.send({"type": "moderate", "action": "mute", "user_id": alice.id, "seconds": 60})
    await a.expect("muted")
    await a.send({"type": "chat", "text": "am I muted?"})
    assert (await a.expect("error"))["code"] == "muted"

    await stage.send({"type": "moderate", "action": "slow", "seconds": 30})
    await b.expect("slow_mode")
    await b.send({"type": "chat", "text": "one"})
    await b.expect("chat")
    await b.send({"type": "chat", "text": "two"})
    assert (await b.expect("error"))["code"] == "slow-mode"
    await stage.send({"type": "moderate", "action": "slow", "seconds": 0})
    await b.expect("slow_mode")

    # Rate limit: at most 5 messages per 10 s per user.
    for i in range(6):
        await b.send({"type": "chat", "text": f"spam {i}"})
    assert (await b.expect("error"))["code"] == "too-many-requests"

    await stage.send({"type": "moderate", "action": "ban", "user_id": alice.id, "reason": "rude"})
    await a.expect("banned")
    assert await a.wait_closed() == 4403
    # Banned for good: a new socket is refused.
    ws = await connect(
        f"{app_server.ws_url}/ws/rooms/{stream_id}", additional_headers={"Cookie": alice.cookie}
    )
    assert '"forbidden"' in str(await asyncio.wait_for(ws.recv(), 5))
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 4403
    await stage.send({"type": "moderate", "action": "ban", "user_id": 999_999_999})
    assert (await stage.expect("error"))["code"] == "unknown-user"
    await performer.post(f"/api/streams/{stream_id}/end")


async def test_bad_input_closes_cleanly_and_never_disturbs_other_viewers(
    app_server: AppServer,
) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    calm = await (await sign_up(app_server)).room(stream_id)
    rude_person = await sign_up(app_server)

    rude = await rude_person.room(stream_id)
    for bad in ["not json", "{}", '{"type": "nope"}', '{"type": "chat"}', "[1, 2]"]:
        await rude.ws.send(bad)
        assert (await rude.expect("error"))["code"] == "bad-message"
    await rude.ws.send('{"type": "chat", "text": 5}')
    assert await rude.wait_closed() == 4400  # the sixth bad frame in a row closes the socket

    big = await rude_person.room(stream_id)
    await big.ws.send('{"type": "chat", "text": "' + "x" * 70_000 + '"}')
    assert await big.wait_closed() in (1009, 4400)

    binary = await rude_person.room(stream_id)
    await binary.ws.send(b"\x00\x01binary")
    assert await binary.wait_closed() == 1003

    # Answering without an offer, ICE without a peer: errors, not crashes.
    odd = await rude_person.room(stream_id)
    await odd.send({"type": "answer", "sdp": "v=0 an answer to nothing"})
    assert (await odd.expect("error"))["code"] == "no-offer"
    await odd.send({"type": "ice", "candidate": None})
    assert (await odd.expect("error"))["code"] == "no-peer"

    # A flood of messages is refused past a burst, then closes the socket.
    flood = await rude_person.room(stream_id)
    for _ in range(120):
        await flood.send({"type": "ping"})
    assert await flood.wait_closed() == 4400
    assert any(m.get("code") == "too-many-messages" for m in flood.seen)

    # The calm viewer saw none of it and still gets the room's chat.
    await odd.send({"type": "chat", "text": "still here"})
    message = await calm.expect("chat")
    assert message["text"] == "still here"
    assert not [m for m in calm.seen if m.get("type") == "error"]
    await performer.post(f"/api/streams/{stream_id}/end")


async def test_a_slow_client_is_dropped_the_others_keep_up(
    app_server_factory: AppServerFactory,
    rooms_settings_factory: Callable[..., Settings],
    kv: Valkey,
    key_prefix: str,
) -> None:
    # 256 x 40 KB queued per socket: room for a reader on a busy box to fall behind a little,
    # far less than the 32 MB a stalled reader is sent.
    settings = rooms_settings_factory(rooms={"client_queue_size": 256})
    server = await app_server_factory(settings)
    performer = await sign_up(server, "performer", "performer")
    stream_id = await live_stream(performer)
    fast = await (await sign_up(server)).room(stream_id)
    slow_person = await sign_up(server)
    slow = await slow_person.room(stream_id)
    slow.pause()  # stops reading: TCP backs up, then the server's outbox for it fills

    events_sent = 800
    for tip_id in range(events_sent):
        if tip_id % 10 == 0:
            # ~8 MB/s in bursts of 10: a reading client keeps up (even on a busy box), a
            # stalled one can't.
            await asyncio.sleep(0.05)
        await publish_tip(
            kv, settings, stream_id, 10_000 + tip_id, performer_id=performer.id,
            viewer=slow_person, message="m", padding=40_000,
        )  # fmt: skip
    await wait_for(lambda: len(events(fast, ("tip",))) == events_sent, timeout=120)
    assert fast.close_code is None
    slow.resume()
    assert await slow.wait_closed(20) == 4408
    assert len(events(slow, ("tip",))) < events_sent
    await performer.post(f"/api/streams/{stream_id}/end")


async def test_viewer_count_counts_live_sockets_on_every_process_not_crashed_ones(
    app_server: AppServer, second_server: AppServer, kv: Valkey, rooms_settings: Settings
) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    a = await (await sign_up(app_server)).room(stream_id)
    b = await (await sign_up(second_server)).room(stream_id, second_server)

    async def shown() -> int:
        response = await performer.http.get(f"/api/streams/{stream_id}")
        return int(response.json()["viewers"])

    assert await shown() == 2
    # The performer's own socket (the studio) is not a viewer.
    studio = await performer.room(stream_id)
    assert await shown() == 2
    # A process that crashed left its sockets' entries behind: they stop counting once stale.
    key = kvmod.key(rooms_settings, "room", stream_id, "viewers")
    await kv.zadd(key, {"crashed-process-socket": time.time() - 3600})
    assert await shown() == 2
    await b.close()
    deadline = time.monotonic() + 10
    while await shown() != 1:
        assert time.monotonic() < deadline, "a closed socket is still counted"
        await asyncio.sleep(0.1)
    assert (await a.expect("viewers", timeout=10))["count"] >= 1
    await studio.close()
    await performer.post(f"/api/streams/{stream_id}/end")


async def test_a_moderator_with_2fa_moderates_any_room(
    app_server: AppServer, db: Conn, kv: Valkey, rooms_settings: Settings
) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    rude = await sign_up(app_server)
    rude_room = await rude.room(stream_id)
    moderator = await sign_up(app_server, tag="moderator")
    await accounts.set_role(db, kv, rooms_settings, moderator.id, "moderator", actor_id=None)
    await moderator.login()  # the role change ended the old sessions

    # Without a 2FA-verified session a moderator is refused.
    room = await moderator.room(stream_id)
    await room.send({"type": "moderate", "action": "mute", "user_id": rude.id})
    assert (await room.expect("error"))["code"] == "mfa-required"
    await room.close()

    enrolled = await moderator.post("/api/auth/2fa/enroll")
    secret = enrolled.json()["secret"]
    confirmed = await moderator.post(
        "/api/auth/2fa/confirm", json={"code": pyotp.TOTP(secret).now()}
    )
    assert confirmed.status_code == 200, confirmed.text
    await moderator.login(totp_code=str(pyotp.TOTP(secret).at(time.time() + 30)))
    room = await moderator.room(stream_id)
    await room.send({"type": "moderate", "action": "ban", "user_id": rude.id, "reason": "spam"})
    assert (await rude_room.expect("banned"))["user_id"] == rude.id
    assert await rude_room.wait_closed() == 4403
    cur = await db.execute(
        "SELECT banned_by FROM room_bans WHERE performer_id = %s AND user_id = %s",
        (performer.id, rude.id),
    )
    row = await cur.fetchone()
    assert row is not None and row["banned_by"] == moderator.id
    await performer.post(f"/api/streams/{stream_id}/end")


async def test_tip_goal_progress_counts_each_tip_once_across_processes(
    app_server: AppServer, second_server: AppServer, kv: Valkey, rooms_settings: Settings
) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    tipper = await sign_up(app_server)
    rooms = [
        await (await sign_up(app_server)).room(stream_id),
        await (await sign_up(second_server)).room(stream_id, second_server),
    ]
    other = await sign_up(app_server, "performer", "otherperformer")
    refused = await other.post(f"/api/streams/{stream_id}/goal", json={"title": "x", "tokens": 5})
    assert refused.status_code == 403
    bad = await performer.post(f"/api/streams/{stream_id}/goal", json={"title": "", "tokens": 0})
    assert bad.status_code == 400

    set_ = await performer.post(
        f"/api/streams/{stream_id}/goal", json={"title": "New lights", "tokens": 100}
    )
    assert set_.status_code == 200, set_.text
    for room in rooms:
        assert (await room.expect("goal"))["progress"] == 0
    for tip_id in (501, 502, 503, 501, 504):  # 501 delivered twice by the outbox
        await publish_tip(
            kv, rooms_settings, stream_id, tip_id, performer_id=performer.id, viewer=tipper
        )
    for room in rooms:
        await wait_for(lambda r=room: len(events(r, ("goal",))) >= 5)
    await asyncio.sleep(0.5)
    for room in rooms:
        progress = [m["progress"] for m in events(room, ("goal",))]
        assert progress == [0, 25, 50, 75, 100], progress
        assert events(room, ("goal",))[-1]["reached"] is True
    late = await tipper.room(stream_id)
    assert late.welcome["goal"] == {
        "title": "New lights", "target": 100, "progress": 100, "reached": True
    }  # fmt: skip
    assert (await performer.http.delete(
        f"/api/streams/{stream_id}/goal", headers={"x-csrf-token": performer.csrf}
    )).status_code == 204  # fmt: skip
    assert (await late.expect("goal_cleared"))["type"] == "goal_cleared"
    await performer.post(f"/api/streams/{stream_id}/end")
