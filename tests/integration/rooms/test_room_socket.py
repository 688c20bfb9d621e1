"""The room WebSocket without media: who may connect, chat, moderation, bad input."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.integration.rooms.conftest import AppServer
from tests.integration.rooms.people import live_stream, sign_up


async def test_ending_the_stream_tells_and_closes_every_viewer(app_server: AppServer) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    viewers = [await (await sign_up(app_server)).room(stream_id) for _ in range(3)]
    response = await performer.post(f"/api/streams/{stream_id}/end", json={"reason": "done"})
    assert response.status_code == 200
    for room in viewers:
        assert (await room.expect("stream_ended"))["reason"] == "done"
        assert await room.wait_closed() == 4409


async def test_who_may_connect(app_server: AppServer) -> None:
    performer = await sign_up(app_server, "performer", "performer")
    stream_id = await live_stream(performer)
    # Not signed in: the handshake is refused.
    with pytest.raises(InvalidStatus):
        await connect(f"{app_server.ws_url}/ws/rooms/{stream_id}", open_timeout=5)
    viewer = await sign_up(app_server)
    for bad_id, code in ((999_999_999, 4404),):
        ws = await connect(
            f"{app_server.ws_url}/ws/rooms/{bad_id}",
            additional_headers={"Cookie": viewer.cookie},
        )
        assert '"not-found"' in str(await asyncio.wait_for(ws.recv(), 5))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == code
    # A cross-site page may not open the socket with the viewer's cookie.
    ws = await connect(
        f"{app_server.ws_url}/ws/rooms/{stream_id}",
        additional_headers={"Cookie": viewer.cookie},
        origin="https://evil.example",  # type: ignore[arg-type]
    )
    assert '"forbidden"' in str(await asyncio.wait_for(ws.recv(), 5))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4403
    await performer.post(f"/api/streams/{stream_id}/end")
