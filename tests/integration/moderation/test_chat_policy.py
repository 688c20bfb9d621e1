"""Chat messages are scored before fan-out and the room's policy applies, through the real room
WebSocket of a real app process: a fixed set of messages in rooms that allow, mask, hold and
block, and a repeat offender muted automatically."""

from __future__ import annotations

import hashlib

from tests.integration.moderation.conftest import MakeModerator, ModWorld, decode
from tests.integration.rooms.people import Person, RoomConn, live_stream, sign_up

CLEAN = "what a lovely show tonight"
TOXIC = "you are a fucking idiot"


async def _chat(room: RoomConn, text: str) -> None:
    await room.send({"type": "chat", "text": text})


async def _room_pair(world: ModWorld, performer: Person) -> tuple[int, RoomConn, RoomConn]:
    stream_id = await live_stream(performer, "policy")
    sender = await (await sign_up(world.server, tag="sender")).room(stream_id)
    watcher = await (await sign_up(world.server, tag="watcher")).room(stream_id)
    return stream_id, sender, watcher


async def test_mask_room_stars_the_offending_words(mod_world: ModWorld) -> None:
    performer = await sign_up(mod_world.server, "performer", "masked")  # default policy: mask
    _, sender, watcher = await _room_pair(mod_world, performer)
    await _chat(sender, CLEAN)
    assert (await watcher.expect("chat"))["text"] == CLEAN
    await _chat(sender, TOXIC)
    assert (await watcher.expect("chat"))["text"] == "you are a ******* *****"


async def test_allow_room_publishes_unchanged(mod_world: ModWorld) -> None:
    _, sender, watcher = await _room_pair(mod_world, mod_world.rooms.allow)
    await _chat(sender, TOXIC)
    assert (await watcher.expect("chat"))["text"] == TOXIC


async def test_hold_room_keeps_the_message_for_review_with_evidence(
    mod_world: ModWorld, make_moderator: MakeModerator
) -> None:
    stream_id, sender, watcher = await _room_pair(mod_world, mod_world.rooms.hold)
    await _chat(sender, TOXIC)
    assert (await sender.expect("chat_withheld"))["action"] == "hold"
    await _chat(sender, CLEAN)
    # The watcher's first chat message is the clean one: the toxic one never reached them.
    assert (await watcher.expect("chat"))["text"] == CLEAN
    moderator = await make_moderator()
    queue = (await moderator.http.get("/api/moderation/queue")).json()
    held = [c for c in queue if c["stream_id"] == stream_id and c["source"] == "chat"]
    assert len(held) == 1 and held[0]["reason"] == "held" and held[0]["score"] >= 0.8
    detail = (await moderator.http.get(f"/api/moderation/cases/{held[0]['id']}")).json()
    evidence = detail["evidence"]
    assert hashlib.sha256(evidence.encode()).hexdigest() == held[0]["evidence_sha256"]
    assert decode(evidence)["message"]["text"] == TOXIC  # type: ignore[index]
    # A moderator releases it: now everyone sees it.
    released = await moderator.post(
        f"/api/moderation/cases/{held[0]['id']}/actions", json={"action": "release"}
    )
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "closed"
    assert (await watcher.expect("chat"))["text"] == TOXIC


async def test_block_room_refuses_and_repeat_offender_is_muted(mod_world: ModWorld) -> None:
    stream_id, sender, watcher = await _room_pair(mod_world, mod_world.rooms.block)
    for _ in range(2):
        await _chat(sender, TOXIC)
        assert (await sender.expect("chat_withheld"))["action"] == "block"
    await _chat(sender, TOXIC)  # the third offence within the window: muted
    muted = await watcher.expect("muted")
    assert muted["seconds"] > 0
    await _chat(sender, CLEAN)
    error = await sender.expect("error")
    assert "muted" in str(error)
    assert not [m for m in watcher.seen if m.get("type") == "chat"]
    assert stream_id
