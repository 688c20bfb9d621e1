"""The room WebSocket ``/ws/rooms/{stream_id}``: signaling for the performer (publish) and the
viewers (subscribe), and the realtime channel (chat, tips, viewer count, moderation).

Frames are JSON text, one message each, ``{"type": ...}`` (see schemas.ClientMessage). A bad
frame gets an ``{"type": "error"}`` reply; a client that keeps sending bad frames, sends binary
or oversized frames is closed. Nothing one socket does reaches another except through the
room channel, so a misbehaving client never disturbs the other viewers.

Close codes: 4401 not signed in, 4403 not allowed (banned, not the performer), 4404 no such
stream, 4409 stream not live or ended, 4400 protocol abuse, 4408 too slow, 1009 frame too big.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
import psycopg
import structlog
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect
from valkey.asyncio import Valkey

from tipstream import kv as kvmod
from tipstream.accounts import guards
from tipstream.accounts.queries import UserRow
from tipstream.accounts.service import Principal
from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Pool
from tipstream.errors import Problem
from tipstream.moderation import chatpolicy
from tipstream.rooms import chat, goals, linkhealth, queries, service, turn
from tipstream.rooms.hub import Member, RoomHub
from tipstream.rooms.queries import StreamNotFound, StreamRow
from tipstream.rooms.schemas import (
    AnswerMessage,
    ChatMessage,
    ClientMessage,
    IceMessage,
    ModerateMessage,
    PingMessage,
    PublishMessage,
    QualityMessage,
    SubscribeMessage,
)
from tipstream.rooms.sfu import Sfu
from tipstream.rooms.signaling import Participant, SignalingError

log = structlog.get_logger("tipstream.rooms.socket")

CLOSE_BAD_INPUT = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_NOT_LIVE = 4409
CLOSE_TOO_BIG = 1009
CLOSE_UNSUPPORTED = 1003
# Bad frames tolerated (each answered with an error) before the socket is closed.
MAX_STRIKES = 5
# Messages a client may send: a burst, then a steady rate (signaling needs a few dozen).
MESSAGE_BURST = 60
MESSAGE_RATE = 10
STAFF = frozenset({"moderator", "admin"})

_decoder = msgspec.json.Decoder(ClientMessage)
# Tasks that outlive their socket (the publisher's grace period); kept so they are not collected.
_background: set[asyncio.Task[None]] = set()
_encoder = msgspec.json.Encoder()


@dataclass
class Context:
    settings: Settings
    pool: Pool
    kv: Valkey
    sfu: Sfu
    hub: RoomHub


def _context(socket: WebSocket[Any, Any, Any]) -> Context:
    state = socket.app.state
    return Context(state.settings, state.pool, state.kv, state.sfu, state.hub)


def _origin_allowed(socket: WebSocket[Any, Any, Any], settings: Settings) -> bool:
    """Browsers send Origin on WebSocket handshakes and SameSite does not protect them: refuse
    pages of other sites (cross-site WebSocket hijacking). Non-browser clients send none."""
    origin = socket.headers.get("origin")
    if not origin:
        return True
    public = urlsplit(settings.server.public_url)
    sent = urlsplit(origin)
    return (sent.scheme, sent.netloc) == (public.scheme, public.netloc)


async def serve(socket: WebSocket[Any, Any, Any], stream_id: int) -> None:
    ctx = _context(socket)
    principal = await guards.require_principal(socket)
    if not _origin_allowed(socket, ctx.settings):
        await _refuse(socket, CLOSE_FORBIDDEN, "cross-site WebSocket refused")
        return
    async with ctx.pool.connection() as conn:
        try:
            stream = await queries.get_stream(conn, stream_id)
        except StreamNotFound:
            await _refuse(socket, CLOSE_NOT_FOUND, "no such stream")
            return
        if stream.status != "live":
            await _refuse(socket, CLOSE_NOT_LIVE, f"the stream is {stream.status}")
            return
        user = principal.user
        if await queries.is_banned(conn, performer_id=stream.performer_id, user_id=user.id):
            await _refuse(socket, CLOSE_FORBIDDEN, "banned from this room")
            return
    await socket.accept()
    room = RoomSocket(socket, ctx, principal, stream)
    await room.run()


async def _refuse(socket: WebSocket[Any, Any, Any], code: int, reason: str) -> None:
    # Accept and say why, so the client sees the reason and close code, not a bare handshake
    # failure.
    await socket.accept()
    slug = {CLOSE_NOT_FOUND: "not-found", CLOSE_NOT_LIVE: "not-live"}.get(code, "forbidden")
    await socket.send_text(
        _encoder.encode({"type": "error", "code": slug, "detail": reason}).decode()
    )
    await socket.close(code, reason)


class RoomSocket:
    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        ctx: Context,
        principal: Principal,
        stream: StreamRow,
    ) -> None:
        self.socket = socket
        self.ctx = ctx
        self.settings = ctx.settings
        self.user: UserRow = principal.user
        self.principal = principal
        self.stream = stream
        self.is_performer = stream.performer_id == self.user.id
        self.connection_id = secrets.token_hex(8)
        self.member: Member | None = None
        self.participant = Participant(
            ctx.sfu,
            service.room_of(stream),
            stream.performer_id,
            self.send,
            on_publisher_up=self._publisher_up,
            on_publisher_down=self._publisher_down,
            on_publisher_slowlink=self._publisher_slowlink,
        )
        self.strikes = 0
        self._down_announced = False
        # Token bucket over every message a client sends (ICE, pings, chat...): a burst of
        # MESSAGE_BURST, then MESSAGE_RATE per second; beyond that messages are refused.
        self.tokens = float(MESSAGE_BURST)
        self.tokens_at = time.monotonic()

    # ------------------------------------------------------------------ plumbing

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message for this client only (in order with the room's events)."""
        if self.member is not None:
            self.member.deliver(_encoder.encode(message).decode())

    def error(self, code: str, detail: str, **extra: Any) -> None:
        self.send({"type": "error", "code": code, "detail": detail, **extra})

    def _key(self, *parts: str | int) -> str:
        return kvmod.key(self.settings, "room", self.stream.id, *parts)

    async def run(self) -> None:
        ctx = self.ctx
        self.member = await ctx.hub.join(
            self.stream.id, self.user.id, is_performer=self.is_performer
        )
        self.member.connection_id = self.connection_id
        # "N watching" counts viewers: the performer's own studio socket is not one of them.
        if not self.is_performer:
            await ctx.kv.zadd(
                service.presence_key(self.settings, self.stream.id),
                {self.connection_id: time.time()},
            )
        try:
            await self._welcome()
            reader = asyncio.create_task(self._read())
            writer = asyncio.create_task(self._write())
            done, pending = await asyncio.wait(
                {reader, writer}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                    await task
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if not isinstance(exc, WebSocketDisconnect):
                        log.error("room_socket_failed", error=repr(exc), stream=self.stream.id)
            # Close only after the reader stopped: the server can't close a socket that is
            # still being received on.
            assert self.member is not None
            if self.member.close_code is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self.socket.close(self.member.close_code, self.member.close_reason), 5
                    )
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        ctx = self.ctx
        was_publisher = self.participant.role == "publisher"
        await self.participant.close()
        if self.member is not None:
            await ctx.hub.leave(self.stream.id, self.member)
        with contextlib.suppress(Exception):
            await ctx.kv.zrem(
                service.presence_key(self.settings, self.stream.id), self.connection_id
            )
        if was_publisher:
            await self._publisher_down("publisher disconnected")
        with contextlib.suppress(Exception):
            await self.socket.close()

    async def _welcome(self) -> None:
        ctx = self.ctx
        history = await chat.history(ctx.kv, self.settings, self.stream.id)
        # The stream with its viewer count and link health, as the API shows it.
        (stream,) = await service.with_live_state(ctx.kv, self.settings, [self.stream])
        publishing = bool(await ctx.kv.exists(self._key("publisher")))
        goal = await goals.current_goal(ctx.kv, self.settings, self.stream.id)
        self.send(
            {
                "type": "welcome",
                "stream": msgspec.to_builtins(stream),
                "role": "performer" if self.is_performer else "viewer",
                "user_id": self.user.id,
                "publisher_up": publishing,
                "goal": msgspec.to_builtins(goal) if goal else None,
                "ice_servers": msgspec.to_builtins(turn.ice_servers(self.settings, self.user.id)),
                "history": [msgspec.Raw(h.encode()) for h in history],
            }
        )

    async def _write(self) -> None:
        assert self.member is not None
        outbox = self.member.outbox
        while True:
            text = await outbox.get()
            if text is None:
                return  # run() closes the socket once the reader has stopped
            await self.socket.send_text(text)

    async def _read(self) -> None:
        limit = self.settings.rooms.max_frame_bytes
        while True:
            event = await self.socket.receive()
            if event["type"] == "websocket.disconnect":
                return
            text = event.get("text")
            if not isinstance(text, str):
                await self._close_now(CLOSE_UNSUPPORTED, "send JSON text frames")
                return
            if len(text) > limit:
                await self._close_now(CLOSE_TOO_BIG, f"frames are at most {limit} bytes")
                return
            if not self._take_token():
                self.strikes += 1
                if self.strikes > MAX_STRIKES:
                    await self._close_now(CLOSE_BAD_INPUT, "too many messages")
                    return
                self.error("too-many-messages", f"at most {MESSAGE_RATE} messages per second")
                continue
            try:
                message = _decoder.decode(text)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.strikes += 1
                if self.strikes > MAX_STRIKES:
                    await self._close_now(CLOSE_BAD_INPUT, "too many malformed messages")
                    return
                self.error("bad-message", str(exc)[:200])
                continue
            self.strikes = 0  # only bad messages in a row close the socket
            try:
                await self._handle(message)
            except Problem as exc:
                self.error(exc.slug, exc.detail, **exc.extra)
            except SignalingError as exc:
                self.error(exc.code, exc.detail)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(MESSAGE_BURST, self.tokens + (now - self.tokens_at) * MESSAGE_RATE)
        self.tokens_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def _close_now(self, code: int, reason: str) -> None:
        assert self.member is not None
        self.member.close(code, reason)

    # ------------------------------------------------------------------ messages

    async def _handle(self, message: ClientMessage) -> None:
        if isinstance(message, PingMessage):
            self.send({"type": "pong", "ts": time.time()})
        elif isinstance(message, PublishMessage):
            await self._publish(message)
        elif isinstance(message, SubscribeMessage):
            offer = await self.participant.subscribe(message.substream)
            self.send({"type": "offer", "sdp": offer})
            self.participant.release_ice()
        elif isinstance(message, AnswerMessage):
            await self.participant.start(message.sdp)
            self.send({"type": "subscribed"})
        elif isinstance(message, IceMessage):
            await self.participant.trickle(message.candidate)
        elif isinstance(message, QualityMessage):
            await self.participant.choose_quality(message.substream)
        elif isinstance(message, ChatMessage):
            await self._chat(message)
        elif isinstance(message, ModerateMessage):
            await self._moderate(message)

    async def _publish(self, message: PublishMessage) -> None:
        if not self.is_performer:
            raise SignalingError("not-the-performer", "only this stream's performer may publish")
        async with self.ctx.pool.connection() as conn:
            try:
                await service.ensure_may_publish(conn, self.user)
            except Problem as exc:
                raise SignalingError("may-not-publish", exc.detail) from None
        answer = await self.participant.publish(message.sdp, self.user.display_name)
        self.send({"type": "answer", "sdp": answer})
        self.participant.release_ice()

    async def _publisher_up(self) -> None:
        self._down_announced = False
        kv = self.ctx.kv
        await kv.set(self._key("publisher"), self.connection_id, ex=24 * 3600)
        await service.publish_room_event(
            kv, self.settings, self.stream.id, {"type": "publisher_up"}
        )

    async def _publisher_down(self, reason: str) -> None:
        # A hangup followed by the socket closing is one departure, announced once.
        if self._down_announced:
            return
        self._down_announced = True
        kv = self.ctx.kv
        key = self._key("publisher")
        if (await kv.get(key) or b"").decode() == self.connection_id:
            await kv.delete(key)
        await service.publish_room_event(
            kv, self.settings, self.stream.id, {"type": "publisher_down", "reason": reason}
        )
        task = asyncio.create_task(
            self._end_unless_back(self.settings.rooms.publisher_grace_seconds)
        )
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _publisher_slowlink(self, uplink: bool, lost: int) -> None:
        """Janus is losing the performer's media: the stream shows degraded in the listings
        until a window passes without another slow link (linkhealth.py)."""
        if uplink:
            return  # the performer missing Janus's packets (RTCP only): not the stream's media
        try:
            began = await linkhealth.record_slowlink(
                self.ctx.kv, self.settings, self.stream.id, lost=lost
            )
        except Exception:
            log.exception("slowlink_record_failed", stream=self.stream.id)
            return
        if began:
            log.info("stream_link_degraded", stream=self.stream.id, lost=lost)

    async def _end_unless_back(self, grace: float) -> None:
        """If the performer does not publish again within the grace period, the stream ends."""
        await asyncio.sleep(grace)
        ctx = self.ctx
        if await ctx.kv.exists(self._key("publisher")):
            return
        try:
            async with ctx.pool.connection() as conn:
                await service.end_after_publisher_left(
                    conn, ctx.sfu, ctx.kv, self.settings, self.stream.id, "publisher left"
                )
        except Problem:
            pass  # already ended by someone else
        except Exception:
            log.exception("end_after_publisher_left_failed", stream=self.stream.id)

    async def _chat(self, message: ChatMessage) -> None:
        kv, settings = self.ctx.kv, self.settings
        text = chat.clean_text(settings, message.text)
        await chat.check_may_chat(kv, settings, self.stream.id, self.user.id)
        # Moderation scores the message before anyone sees it; the room's policy may mask,
        # hold or block it (docs/moderation.md).
        verdict = await chatpolicy.screen(
            self.ctx.pool, kv, settings, self.stream, self.user.id, text
        )
        if verdict.text is None:
            self.send({"type": "chat_withheld", "action": verdict.action})
            return
        text = verdict.text
        message_id = await chat.publish_sequenced(
            kv,
            settings,
            self.stream.id,
            {
                "type": "chat",
                "user_id": self.user.id,
                "name": self.user.display_name,
                "performer": self.is_performer,
                "text": text,
                "ts": round(time.time(), 3),
            },
        )
        # The Detoxify tier, when configured, looks again in a worker, after the fact.
        await chatpolicy.rescore_later(settings, self.stream.id, message_id, self.user.id, text)

    async def _moderate(self, message: ModerateMessage) -> None:
        by_staff = self.user.role in STAFF
        if not (self.is_performer or by_staff):
            raise SignalingError("forbidden", "only the performer and moderators moderate")
        if by_staff and not self.principal.mfa_verified:
            raise SignalingError("mfa-required", "moderators must sign in with 2FA")
        kv, settings, stream_id = self.ctx.kv, self.settings, self.stream.id
        event: dict[str, Any]
        if message.action == "delete":
            if message.message_id is None:
                raise SignalingError("bad-message", "delete needs message_id")
            await chat.mark_deleted(kv, settings, stream_id, message.message_id)
            event = {"type": "deleted", "message_id": message.message_id}
        elif message.action in ("mute", "unmute", "ban"):
            if message.user_id is None:
                raise SignalingError("bad-message", f"{message.action} needs user_id")
            if message.user_id == self.stream.performer_id:
                raise SignalingError("forbidden", "the performer cannot be muted or banned")
            if message.action == "mute":
                seconds = message.seconds or 300
                await chat.mute(kv, settings, stream_id, message.user_id, seconds)
                event = {"type": "muted", "user_id": message.user_id, "seconds": seconds}
            elif message.action == "unmute":
                await chat.mute(kv, settings, stream_id, message.user_id, 1)
                event = {"type": "unmuted", "user_id": message.user_id}
            else:
                await self._ban(message)
                event = {"type": "banned", "user_id": message.user_id}
        else:
            seconds = message.seconds or 0
            await chat.set_slow_mode(kv, settings, stream_id, seconds)
            event = {"type": "slow_mode", "seconds": seconds}
        event["by"] = self.user.id
        await service.publish_room_event(kv, settings, stream_id, event)

    async def _ban(self, message: ModerateMessage) -> None:
        assert message.user_id is not None
        try:
            await self._record_ban(message.user_id, message.reason)
        except psycopg.errors.ForeignKeyViolation:
            raise SignalingError("unknown-user", f"no user {message.user_id}") from None

    async def _record_ban(self, user_id: int, reason: str | None) -> None:
        async with self.ctx.pool.connection() as conn, conn.transaction():
            await queries.upsert_ban(
                conn,
                performer_id=self.stream.performer_id,
                user_id=user_id,
                banned_by=self.user.id,
                reason=reason,
                expires_at=None,
            )
            await audit.record(
                conn,
                "room.ban",
                actor_id=self.user.id,
                target_type="user",
                target_id=str(user_id),
                ip=None,
                details={"performer_id": self.stream.performer_id, "stream_id": self.stream.id},
            )
