"""Real media through Janus: an aiortc publisher goes live through the HTTP API and the room
WebSocket, an aiortc viewer receives its frames; relay-only through coturn; ending the stream
stops the media within a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.integration.rooms.conftest import AppServer, AppServerFactory, JanusServer
from tests.integration.rooms.media import (
    Arrivals,
    StampedVideoTrack,
    add_remote_candidate,
    has_relay_candidate,
    rtc_config,
    watch,
)
from tests.integration.rooms.people import Person, RoomConn, live_stream, sign_up
from tipstream.config import Settings
from tipstream.db import Conn


@dataclass
class Publisher:
    person: Person
    room: RoomConn
    pc: RTCPeerConnection
    track: StampedVideoTrack


async def start_publisher(
    performer: Person, stream_id: int, *, relay_only: bool = False
) -> Publisher:
    room = await performer.room(stream_id)
    assert room.welcome["role"] == "performer"
    pc = RTCPeerConnection(rtc_config(room.welcome["ice_servers"], relay_only=relay_only))
    room.on_ice = lambda c: add_remote_candidate(pc, c)
    track = StampedVideoTrack()
    pc.addTrack(track)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    if relay_only and not has_relay_candidate(sdp):
        pytest.fail(
            "the publisher gathered no relay candidate: coturn refused the TURN credential the "
            "app issued, or is unreachable (aiortc raises nothing in that case)"
        )
    await room.send({"type": "publish", "sdp": sdp})
    answer = await room.expect("answer")
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    await room.expect("media_up", timeout=15)
    return Publisher(performer, room, pc, track)


@dataclass
class Viewer:
    room: RoomConn
    pc: RTCPeerConnection
    arrivals: Arrivals


async def start_viewer(
    person: Person, stream_id: int, *, relay_only: bool = False, server: AppServer | None = None
) -> Viewer:
    room = await person.room(stream_id, server)
    if not room.welcome["publisher_up"]:
        await room.expect("publisher_up", timeout=15)
    pc = RTCPeerConnection(rtc_config(room.welcome["ice_servers"], relay_only=relay_only))
    room.on_ice = lambda c: add_remote_candidate(pc, c)
    arrivals = watch(pc)
    await room.send({"type": "subscribe"})
    offer = await room.expect("offer")
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    sdp = pc.localDescription.sdp
    if relay_only and not has_relay_candidate(sdp):
        pytest.fail("the viewer gathered no relay candidate (TURN credential refused?)")
    await room.send({"type": "answer", "sdp": sdp})
    await room.expect("subscribed")
    return Viewer(room, pc, arrivals)


def assert_in_order_and_in_time(arrivals: Arrivals, sent: dict[int, float]) -> dict[str, Any]:
    indices = [i for i, _ in arrivals.frames]
    assert len(indices) >= 30, f"only {len(indices)} frames arrived"
    unknown = [i for i in indices if i not in sent]
    assert not unknown, f"frames that were never sent (stamp misread?): {unknown[:5]}"
    assert indices == sorted(indices), "frames arrived out of order"
    assert len(set(indices)) == len(indices), "a frame arrived twice"
    summary = arrivals.summary(sent)
    assert summary["p50_ms"] < 400, summary
    assert summary["p95_ms"] < 1000, summary
    return summary


async def _close(*pcs: RTCPeerConnection) -> None:
    for pc in pcs:
        await pc.close()


@pytest.mark.slow
async def test_publisher_to_viewer_through_janus_then_end_stops_media(
    app_server: AppServer,
) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    publisher = await start_publisher(performer, stream_id)
    viewer_person = await sign_up(app_server, "viewer", "viewer")
    viewer = await start_viewer(viewer_person, stream_id)
    try:
        await asyncio.wait_for(viewer.arrivals.first.wait(), 10)
        await asyncio.sleep(3)
        summary = assert_in_order_and_in_time(viewer.arrivals, publisher.track.sent)
        print(f"direct: {summary}")

        ended_at = time.monotonic()
        response = await performer.post(f"/api/streams/{stream_id}/end")
        assert response.status_code == 200, response.text
        ended = await viewer.room.expect("stream_ended", timeout=5)
        assert ended["reason"] == "ended by performer"
        assert await viewer.room.wait_closed() == 4409
        await asyncio.sleep(1.5)
        late = [at for _, at in viewer.arrivals.frames if at > ended_at + 1.0]
        assert not late, f"{len(late)} frames arrived more than 1 s after the stream ended"
    finally:
        await _close(publisher.pc, viewer.pc)


@pytest.mark.slow
async def test_relay_only_through_coturn(app_server: AppServer) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    publisher = await start_publisher(performer, stream_id, relay_only=True)
    viewer = await start_viewer(await sign_up(app_server), stream_id, relay_only=True)
    try:
        await asyncio.wait_for(viewer.arrivals.first.wait(), 15)
        await asyncio.sleep(3)
        summary = assert_in_order_and_in_time(viewer.arrivals, publisher.track.sent)
        print(f"relay: {summary}")
        for pc in (publisher.pc, viewer.pc):
            pair = _selected_pair(pc)
            assert pair is not None and pair[0] == "relay", pair
    finally:
        await _close(publisher.pc, viewer.pc)
        await performer.post(f"/api/streams/{stream_id}/end")


def _selected_pair(pc: RTCPeerConnection) -> tuple[str, str] | None:
    """(local, remote) candidate types of the ICE pair in use."""
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport.iceGatherer
        connection = transceiver.receiver.transport.transport._connection  # aiortc internals
        nominated = getattr(connection, "_nominated", {})
        for pair in nominated.values():
            return (pair.local_candidate.type, pair.remote_candidate.type)
        del ice
    return None


async def test_wrong_turn_secret_gives_no_relay_candidate(app_server: AppServer) -> None:
    """What the app and its clients must detect: aiortc raises nothing, it just gathers no
    relay candidate when coturn refuses the credential."""
    viewer = await sign_up(app_server)
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    room = await viewer.room(stream_id)
    try:
        servers = room.welcome["ice_servers"]
        turn_entry = next(s for s in servers if s.get("username"))
        assert turn_entry["username"].endswith(f":{viewer.id}")
        good = RTCPeerConnection(rtc_config([turn_entry], relay_only=True))
        bad = RTCPeerConnection(
            rtc_config([{**turn_entry, "credential": "d3JvbmcK"}], relay_only=True)
        )
        for pc in (good, bad):
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
        assert has_relay_candidate(good.localDescription.sdp)
        assert not has_relay_candidate(bad.localDescription.sdp)
        await _close(good, bad)
    finally:
        await room.close()
        await performer.post(f"/api/streams/{stream_id}/end")


@pytest.mark.slow
async def test_publisher_leaving_tells_viewers_and_ends_the_stream_after_grace(
    app_server_factory: AppServerFactory, rooms_settings_factory: Callable[..., Settings]
) -> None:
    server = await app_server_factory(rooms_settings_factory(rooms={"publisher_grace_seconds": 2}))
    performer = await sign_up(server, "performer", "performer")
    stream_id = await live_stream(performer)
    publisher = await start_publisher(performer, stream_id)
    viewer = await start_viewer(await sign_up(server), stream_id)
    try:
        await asyncio.wait_for(viewer.arrivals.first.wait(), 10)
        await publisher.room.close()  # the performer's tab closes
        down = await viewer.room.expect("publisher_down", timeout=10)
        assert down["reason"] == "publisher disconnected"
        ended = await viewer.room.expect("stream_ended", timeout=15)
        assert ended["reason"] == "publisher left"
        shown = (await performer.http.get(f"/api/streams/{stream_id}")).json()
        assert shown["status"] == "ended" and shown["end_reason"] == "publisher left"
    finally:
        await _close(publisher.pc, viewer.pc)


@pytest.mark.slow
async def test_live_rooms_come_back_after_janus_restarts(
    janus_server: JanusServer, app_server: AppServer, db: Conn
) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    cur = await db.execute("SELECT janus_room_id FROM streams WHERE id = %s", (stream_id,))
    row = await cur.fetchone()
    assert row is not None
    room_id = row["janus_room_id"]
    await janus_server.restart()
    # The app's Janus client reconnects and re-creates the rooms of live streams; a publisher
    # can then go live again in the same room.
    publisher = None
    deadline = time.monotonic() + 30
    while publisher is None:
        try:
            publisher = await start_publisher(performer, stream_id)
        except (TimeoutError, ConnectionError, AssertionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
    viewer = await start_viewer(await sign_up(app_server), stream_id)
    try:
        await asyncio.wait_for(viewer.arrivals.first.wait(), 10)
        assert room_id  # same stream, same room id
    finally:
        await _close(publisher.pc, viewer.pc)
        await performer.post(f"/api/streams/{stream_id}/end")
