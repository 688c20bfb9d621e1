"""The Janus videoroom as the streams service uses it: one room per live stream.

One ``Sfu`` per process owns the process's ``JanusClient`` and a control handle for room
management. Rooms are created with a random id, a room secret (to destroy or kick) and a PIN
(to join), all known only to the app, and admit one publisher. After Janus restarts, every
process re-creates the rooms of the streams still live (creating an existing room is harmless).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from tipstream.config import Settings
from tipstream.rooms.janus import Handle, JanusClient, JanusError, JanusUnavailable, Session

log = structlog.get_logger("tipstream.rooms.sfu")

ROOM_EXISTS = 427
NO_SUCH_ROOM = 426
# Room ids stay below 2**53 so JavaScript clients of Janus tooling can hold them exactly.
MAX_ROOM_ID = 2**53 - 1


@dataclass(frozen=True)
class RoomSpec:
    room_id: int
    secret: str
    pin: str
    description: str


def new_room(description: str) -> RoomSpec:
    return RoomSpec(
        room_id=secrets.randbelow(MAX_ROOM_ID - 1) + 1,
        secret=secrets.token_urlsafe(24),
        pin=secrets.token_urlsafe(24),
        description=description,
    )


class Sfu:
    def __init__(
        self,
        settings: Settings,
        *,
        live_rooms: Callable[[], Awaitable[list[RoomSpec]]] | None = None,
    ) -> None:
        janus = settings.janus
        self.settings = settings
        self.admin_key = settings.secrets.janus_admin_key
        self.client = JanusClient(
            janus.ws_url,
            settings.secrets.janus_api_secret,
            keepalive_seconds=janus.keepalive_seconds,
            timeout_seconds=janus.request_timeout_seconds,
            on_reconnect=self._recreate_rooms,
        )
        self._live_rooms = live_rooms
        self._session: Session | None = None
        self._control: Handle | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connect now (otherwise the first room request connects). The app starts even while
        Janus is down; requests then fail with JanusUnavailable."""
        await self.client.start(wait=False)

    async def close(self) -> None:
        await self.client.close()

    async def session(self) -> Session:
        """The process's Janus session (participants attach their handles to it)."""
        async with self._lock:
            if self._session is None or self._session.lost.is_set():
                await self.client.start(wait=False)
                if not self.client.is_connected:
                    await self.client.wait_connected()
                self._session = await self.client.create_session()
                self._control = None
            return self._session

    async def control(self) -> Handle:
        session = await self.session()
        async with self._lock:
            if self._control is None or self._control.lost:
                self._control = await session.attach()
            return self._control

    async def attach(self) -> Handle:
        return await (await self.session()).attach()

    async def create_room(self, room: RoomSpec) -> None:
        janus = self.settings.janus
        body = {
            "request": "create",
            "room": room.room_id,
            "admin_key": self.admin_key,
            "secret": room.secret,
            "pin": room.pin,
            "description": room.description[:100],
            "is_private": True,
            "publishers": janus.publishers_per_room,
            "bitrate": janus.bitrate_bps,
            "fir_freq": 10,
            "audiocodec": "opus",
            "videocodec": "vp8,h264,vp9",
            "notify_joining": False,
            "permanent": False,
        }
        try:
            await (await self.control()).request(body)
        except JanusError as exc:
            if exc.code != ROOM_EXISTS:
                raise

    async def destroy_room(self, room_id: int, secret: str) -> bool:
        """Destroy the room: every publisher and subscriber is kicked out at once."""
        try:
            await (await self.control()).request(
                {"request": "destroy", "room": room_id, "secret": secret, "permanent": False}
            )
        except JanusError as exc:
            if exc.code == NO_SUCH_ROOM:
                return False
            raise
        return True

    async def room_exists(self, room_id: int) -> bool:
        reply = await (await self.control()).request({"request": "exists", "room": room_id})
        return bool(reply.get("exists"))

    async def participants(self, room_id: int, secret: str) -> list[dict[str, object]]:
        reply = await (await self.control()).request(
            {"request": "listparticipants", "room": room_id, "secret": secret}
        )
        participants: list[dict[str, object]] = reply.get("participants", [])
        return participants

    async def kick(self, room_id: int, secret: str, participant_id: int) -> None:
        await (await self.control()).request(
            {"request": "kick", "room": room_id, "secret": secret, "id": participant_id}
        )

    async def _recreate_rooms(self) -> None:
        if self._live_rooms is None:
            return
        rooms = await self._live_rooms()
        for room in rooms:
            try:
                await self.create_room(room)
            except JanusUnavailable:
                return
            except JanusError as exc:
                log.warning("room_recreate_failed", room=room.room_id, error=str(exc))
        log.info("rooms_recreated", count=len(rooms))
