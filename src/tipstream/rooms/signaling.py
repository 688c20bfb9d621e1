"""One room socket's link to Janus: a videoroom handle as publisher (the performer) or
subscriber (a viewer). The app relays SDP and ICE between the browser and Janus; the browser
never learns the room's id, secret or PIN."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from tipstream.rooms.janus import Handle, JanusError, JanusEvent
from tipstream.rooms.schemas import IceCandidate
from tipstream.rooms.sfu import RoomSpec, Sfu

log = structlog.get_logger("tipstream.rooms.signaling")

NO_SUCH_FEED = 428
Send = Callable[[dict[str, Any]], None]


class SignalingError(Exception):
    """A signaling step failed; ``code`` is a short slug for the client."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Participant:
    """A publisher or subscriber handle; Janus's events become messages to the client."""

    def __init__(
        self,
        sfu: Sfu,
        room: RoomSpec,
        feed_id: int,
        send: Callable[[dict[str, Any]], None],
        *,
        on_publisher_up: Callable[[], Any] | None = None,
        on_publisher_down: Callable[[str], Any] | None = None,
        on_publisher_slowlink: Callable[[bool, int], Any] | None = None,
    ) -> None:
        self.sfu = sfu
        self.room = room
        self.feed_id = feed_id
        self.send = send
        self.on_publisher_up = on_publisher_up
        self.on_publisher_down = on_publisher_down
        self.on_publisher_slowlink = on_publisher_slowlink
        self.handle: Handle | None = None
        self.role: str | None = None
        self._events: asyncio.Task[None] | None = None
        # Janus may trickle candidates before its SDP reached the client, which can't use them
        # yet: they wait here until release_ice() (after the SDP was sent).
        self._held_ice: list[dict[str, Any]] | None = None

    async def _attach(self, role: str) -> Handle:
        if self.handle is not None and not self.handle.lost:
            raise SignalingError("already-connected", f"this socket is already a {self.role}")
        try:
            self.handle = await self.sfu.attach()
        except JanusError as exc:
            raise SignalingError("sfu-unavailable", "the media server is not available") from exc
        self.role = role
        self._held_ice = []
        self._events = asyncio.create_task(self._pump(self.handle), name=f"janus-{role}")
        return self.handle

    async def publish(self, offer_sdp: str, display: str) -> str:
        """Join the room as its publisher and return Janus's SDP answer."""
        handle = await self._attach("publisher")
        try:
            await handle.message(
                {
                    "request": "join",
                    "ptype": "publisher",
                    "room": self.room.room_id,
                    "pin": self.room.pin,
                    "id": self.feed_id,
                    "display": display[:64],
                }
            )
            event = await handle.message(
                {"request": "publish", "audio": True, "video": True},
                jsep={"type": "offer", "sdp": offer_sdp},
            )
        except JanusError as exc:
            await self.close()
            raise SignalingError(
                "publish-failed", f"Janus refused the offer: {exc.reason}"
            ) from exc
        if not event.jsep or event.jsep.get("type") != "answer":
            await self.close()
            raise SignalingError("publish-failed", "Janus sent no answer")
        return str(event.jsep["sdp"])

    async def subscribe(self, substream: int | None) -> str:
        """Join as a subscriber of the performer's feed; return Janus's SDP offer."""
        handle = await self._attach("subscriber")
        stream: dict[str, Any] = {"feed": self.feed_id}
        body: dict[str, Any] = {
            "request": "join",
            "ptype": "subscriber",
            "room": self.room.room_id,
            "pin": self.room.pin,
            "streams": [stream],
            "use_msid": False,
        }
        try:
            event = await handle.message(body)
        except JanusError as exc:
            await self.close()
            if exc.code == NO_SUCH_FEED:
                raise SignalingError(
                    "no-publisher", "the performer is not sending yet; wait for publisher_up"
                ) from exc
            raise SignalingError("subscribe-failed", exc.reason) from exc
        if not event.jsep or event.jsep.get("type") != "offer":
            await self.close()
            raise SignalingError("subscribe-failed", "Janus sent no offer")
        if substream is not None:
            with contextlib.suppress(JanusError):
                await self.choose_quality(substream)
        return str(event.jsep["sdp"])

    async def start(self, answer_sdp: str) -> None:
        if self.handle is None or self.role != "subscriber":
            raise SignalingError("no-offer", "subscribe first, then answer the offer")
        try:
            await self.handle.message(
                {"request": "start"}, jsep={"type": "answer", "sdp": answer_sdp}
            )
        except JanusError as exc:
            raise SignalingError("answer-failed", exc.reason) from exc

    async def choose_quality(self, substream: int) -> None:
        if self.handle is None or self.role != "subscriber":
            raise SignalingError("no-subscription", "subscribe first")
        await self.handle.message({"request": "configure", "substream": substream})

    async def trickle(self, candidate: IceCandidate | None) -> None:
        if self.handle is None:
            raise SignalingError("no-peer", "publish or subscribe before sending candidates")
        payload: dict[str, Any] | None = None
        if candidate is not None:
            payload = {"candidate": candidate.candidate}
            if candidate.sdpMid is not None:
                payload["sdpMid"] = candidate.sdpMid
            if candidate.sdpMLineIndex is not None:
                payload["sdpMLineIndex"] = candidate.sdpMLineIndex
        try:
            await self.handle.trickle(payload)
        except JanusError as exc:
            raise SignalingError("ice-failed", exc.reason) from exc

    async def _pump(self, handle: Handle) -> None:
        """Janus's events for this handle → client messages (and room events)."""
        while True:
            event = await handle.events.get()
            if event is None:
                # Janus restarted or dropped the handle: the peer connection is dead.
                self.send({"type": "media_lost", "role": self.role})
                if self.role == "publisher" and self.on_publisher_down is not None:
                    await _maybe_await(self.on_publisher_down("media server lost"))
                return
            await self._on_event(event)

    def release_ice(self) -> None:
        """The SDP went out: send the candidates Janus trickled before it, and later ones."""
        held, self._held_ice = self._held_ice or [], None
        for message in held:
            self.send(message)

    async def _on_event(self, event: JanusEvent) -> None:
        if event.kind == "trickle":
            candidate = event.raw.get("candidate", {})
            message = {
                "type": "ice",
                "candidate": None if candidate.get("completed") else candidate,
            }
            if self._held_ice is not None:
                self._held_ice.append(message)
            else:
                self.send(message)
        elif event.kind == "webrtcup":
            self.send({"type": "media_up", "role": self.role})
            if self.role == "publisher" and self.on_publisher_up is not None:
                await _maybe_await(self.on_publisher_up())
        elif event.kind == "hangup":
            self.send({"type": "media_ended", "role": self.role, "reason": event.raw.get("reason")})
            if self.role == "publisher" and self.on_publisher_down is not None:
                await _maybe_await(self.on_publisher_down("publisher hung up"))
        elif event.kind == "slowlink":
            uplink, lost = bool(event.raw.get("uplink")), event.raw.get("lost")
            self.send(
                {
                    "type": "slowlink",
                    "uplink": uplink,
                    "media": event.raw.get("media"),
                    "lost": lost,
                }
            )
            if self.role == "publisher" and self.on_publisher_slowlink is not None:
                count = lost if isinstance(lost, int) else 0
                await _maybe_await(self.on_publisher_slowlink(uplink, count))
        elif event.kind == "event" and self.role == "subscriber":
            data = event.data
            if data.get("videoroom") == "destroyed":
                self.send({"type": "media_ended", "role": self.role, "reason": "room closed"})
            elif "substream" in data:
                self.send({"type": "quality", "substream": data["substream"]})

    async def close(self) -> None:
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events
            self._events = None
        handle, self.handle = self.handle, None
        if handle is not None and not handle.lost:
            with contextlib.suppress(JanusError):
                await handle.detach()


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        await value
