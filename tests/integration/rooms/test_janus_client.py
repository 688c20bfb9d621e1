"""The async Janus client against the real Janus from Debian's package."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from tests.integration.rooms.conftest import JanusServer, MediaNet, MediaSecrets, TurnServer
from tipstream.config import Settings
from tipstream.rooms.janus import JanusClient, JanusError, JanusUnavailable
from tipstream.rooms.turn import credential, ice_servers
from tipstream.rooms.turncheck import (
    TurnCheckFailed,
    check_turn,
    parse_turn_url,
    peer_permissions,
)


async def _client(janus_server: JanusServer, secret: str | None, **kwargs: object) -> JanusClient:
    client = JanusClient(janus_server.ws_url, secret, timeout_seconds=5, **kwargs)  # type: ignore[arg-type]
    await client.start()
    return client


async def test_info_session_handle_and_room_roundtrip(
    janus_server: JanusServer, media_secrets: MediaSecrets
) -> None:
    client = await _client(janus_server, media_secrets.janus_api_secret)
    try:
        info = await client.info()
        assert info["janus"] == "server_info"
        assert "janus.plugin.videoroom" in info["plugins"]
        session = await client.create_session()
        handle = await session.attach()
        room = secrets.randbelow(2**52)
        created = await handle.request(
            {"request": "create", "room": room, "admin_key": media_secrets.janus_admin_key}
        )
        assert created["videoroom"] == "created"
        assert (await handle.request({"request": "exists", "room": room}))["exists"] is True
        await handle.request({"request": "destroy", "room": room})
        assert (await handle.request({"request": "exists", "room": room}))["exists"] is False
        await handle.detach()
        await session.destroy()
    finally:
        await client.close()


async def test_wrong_api_secret_and_missing_admin_key_are_refused(
    janus_server: JanusServer, media_secrets: MediaSecrets
) -> None:
    intruder = await _client(janus_server, "not-the-secret")
    try:
        with pytest.raises(JanusError) as refused:
            await intruder.create_session()
        assert refused.value.code == 403
    finally:
        await intruder.close()
    client = await _client(janus_server, media_secrets.janus_api_secret)
    try:
        handle = await (await client.create_session()).attach()
        with pytest.raises(JanusError) as no_key:
            await handle.request({"request": "create", "room": secrets.randbelow(2**52)})
        assert no_key.value.code != 0
    finally:
        await client.close()


@pytest.mark.slow
async def test_keepalive_holds_a_session_past_janus_timeout(
    janus_server: JanusServer, media_secrets: MediaSecrets
) -> None:
    """Janus drops a session after 60 s of silence: the client's keepalives keep its session,
    while a session whose keepalives never go out times out and its owner is told."""
    kept = await _client(janus_server, media_secrets.janus_api_secret, keepalive_seconds=20)
    silent = await _client(janus_server, media_secrets.janus_api_secret, keepalive_seconds=3600)
    try:
        kept_session = await kept.create_session()
        silent_session = await silent.create_session()
        silent_handle = await silent_session.attach()
        await asyncio.wait_for(silent_session.lost.wait(), 80)
        assert await asyncio.wait_for(silent_handle.events.get(), 1) is None
        assert not kept_session.lost.is_set()
        handle = await kept_session.attach()  # still known to Janus
        assert not handle.lost
    finally:
        await kept.close()
        await silent.close()


async def test_client_reconnects_after_janus_restarts(
    janus_server: JanusServer, media_secrets: MediaSecrets
) -> None:
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    client = await _client(janus_server, media_secrets.janus_api_secret, on_reconnect=on_reconnect)
    try:
        session = await client.create_session()
        handle = await session.attach()
        await janus_server.restart()
        # The old session is gone with the old Janus; its owner is told.
        await asyncio.wait_for(session.lost.wait(), 10)
        assert await asyncio.wait_for(handle.events.get(), 1) is None
        await asyncio.wait_for(reconnected.wait(), 15)
        fresh = await client.create_session()
        assert fresh.id != session.id
        assert (await fresh.attach()).id
        with pytest.raises(JanusError) as unknown:
            await session.attach()  # the new Janus has never heard of the old session
        assert unknown.value.code == 458
    finally:
        await client.close()


async def test_unreachable_janus_is_reported_not_hung() -> None:
    client = JanusClient("ws://127.0.0.1:9", None, timeout_seconds=1)
    try:
        with pytest.raises(JanusUnavailable):
            await client.start()
        with pytest.raises(JanusUnavailable):
            await client.create_session()
    finally:
        await client.close()


async def test_turn_check_accepts_the_apps_credential_and_refuses_a_wrong_one(
    turn_server: TurnServer, rooms_settings: Settings
) -> None:
    (server,) = [s for s in ice_servers(rooms_settings, 42) if s.username]
    host, port = parse_turn_url(server.urls[0])
    assert server.username and server.credential
    relayed = await check_turn(host, port, server.username, server.credential)
    assert relayed.startswith(turn_server.relay_ip + ":")
    with pytest.raises(TurnCheckFailed, match="refused"):
        await check_turn(host, port, server.username, "d3JvbmcgcGFzc3dvcmQ=")
    expired = f"{int(time.time()) - 10}:42"
    with pytest.raises(TurnCheckFailed, match="refused"):
        await check_turn(host, port, expired, credential(media_secret(rooms_settings), expired))
    with pytest.raises(TurnCheckFailed, match="no answer"):
        await check_turn("127.0.0.1", 9, server.username, server.credential, wait=0.2)


def media_secret(settings: Settings) -> str:
    assert settings.secrets.turn_secret
    return settings.secrets.turn_secret


async def test_coturn_relays_to_the_sfu_only_never_into_private_or_loopback_ranges(
    turn_server: TurnServer, media_net: MediaNet, rooms_settings: Settings
) -> None:
    """The test config allows exactly the veth's /30 (where Janus is) and loopback, on top of
    the production deny list; every other private, link-local or reserved peer is refused.
    (CreatePermission only: nothing is sent to any of these peers.)"""
    (server,) = [s for s in ice_servers(rooms_settings, 7) if s.username]
    host, port = parse_turn_url(server.urls[0])
    assert server.username and server.credential
    denied = ["10.1.2.3", "172.16.5.4", "192.168.1.1", "169.254.1.1", "100.64.0.1", "0.0.0.1"]
    other_test_range = (
        "198.19.255.250" if not media_net.sfu_ip.startswith("198.19.255.") else ("198.18.0.250")
    )
    allowed = await peer_permissions(
        host,
        port,
        server.username,
        server.credential,
        [media_net.sfu_ip, *denied, other_test_range],
    )
    assert allowed[media_net.sfu_ip] is True
    for peer in [*denied, other_test_range]:
        assert allowed[peer] is False, peer
