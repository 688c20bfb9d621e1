"""Stream rules: create, go live (a Janus room per live stream), end (the room is destroyed at
once). The HTTP routes, the room WebSocket and tipctl all call these functions."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import psycopg
import structlog
from valkey.asyncio import Valkey

from tipstream import kv as kvmod
from tipstream.accounts import service as accounts
from tipstream.accounts.queries import UserRow
from tipstream.accounts.service import Principal
from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Conflict, Forbidden, InvalidInput, NotFound, Problem
from tipstream.kyc import service as kyc
from tipstream.rooms import goals, linkhealth, queries
from tipstream.rooms.janus import JanusError
from tipstream.rooms.linkhealth import GOOD as GOOD_LINK
from tipstream.rooms.linkhealth import LinkHealth
from tipstream.rooms.queries import StreamRow
from tipstream.rooms.schemas import (
    CreateStreamRequest,
    Goal,
    Stream,
    TipMenu,
    TipMenuItem,
)
from tipstream.rooms.sfu import RoomSpec, Sfu, new_room

log = structlog.get_logger("tipstream.rooms.service")

STAFF = frozenset({"moderator", "admin"})


class SfuUnavailable(Problem):
    status, slug, title = 503, "sfu-unavailable", "The media server is not available"


class NotYourStream(Forbidden):
    slug, title = "not-your-stream", "This stream belongs to another performer"


class StreamNotLive(Conflict):
    slug, title = "stream-not-live", "The stream is not live"


def room_channel(settings: Settings, stream_id: int) -> str:
    """The Valkey pub/sub channel of one stream's room: chat, tips, viewer counts, lifecycle."""
    return kvmod.key(settings, "room", stream_id)


async def publish_room_event(
    kv: Valkey, settings: Settings, stream_id: int, event: dict[str, Any]
) -> None:
    await kv.publish(room_channel(settings, stream_id), msgspec.json.encode(event))


def to_stream(row: StreamRow, viewers: int = 0, link: LinkHealth = GOOD_LINK) -> Stream:
    return Stream(
        id=row.id,
        performer_id=row.performer_id,
        performer_name=row.performer_name,
        title=row.title,
        tags=row.tags,
        adult=row.adult,
        status=row.status,  # type: ignore[arg-type]
        scheduled_at=row.scheduled_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        created_at=row.created_at,
        viewers=viewers,
        health=link.health,
        slow_links=link.slow_links,
        lost_packets=link.lost_packets,
    )


async def with_live_state(kv: Valkey, settings: Settings, rows: list[StreamRow]) -> list[Stream]:
    """Streams with what Valkey knows of them now: viewer counts and link health."""
    ids = [r.id for r in rows]
    counts = await viewer_counts(kv, settings, ids)
    links = await linkhealth.link_health(kv, settings, ids)
    return [to_stream(r, counts.get(r.id, 0), links.get(r.id, GOOD_LINK)) for r in rows]


async def public_live_streams(
    conn: Conn, kv: Valkey, settings: Settings, *, limit: int
) -> list[Stream]:
    """Live streams as the public listings show them (not those moderation hid), most
    recently started first, with their viewer counts."""
    rows = await queries.list_streams(conn, status="live", limit=limit, listed_only=True)
    return await with_live_state(kv, settings, rows)


async def show_stream(conn: Conn, kv: Valkey, settings: Settings, stream_id: int) -> Stream:
    """One stream with its viewer count; StreamNotFound when there is no such stream."""
    row = await queries.get_stream(conn, stream_id)
    return (await with_live_state(kv, settings, [row]))[0]


def room_of(row: StreamRow) -> RoomSpec:
    if row.janus_room_id is None or row.janus_room_secret is None or row.janus_room_pin is None:
        raise StreamNotLive(f"stream {row.id} has no room")
    return RoomSpec(row.janus_room_id, row.janus_room_secret, row.janus_room_pin, row.title)


async def ensure_may_publish(conn: Conn, user: UserRow) -> None:
    """May this user broadcast at all? The performer role and approved KYC (an unexpired
    document); every publishing path (go-live, the publisher's room WebSocket) goes through
    this one function."""
    if user.role != "performer":
        raise Forbidden("only performers may broadcast")
    await kyc.require_approved(conn, user.id)


async def create_stream(
    conn: Conn, principal: Principal, data: CreateStreamRequest, *, ip: str | None
) -> StreamRow:
    await ensure_may_publish(conn, principal.user)
    async with conn.transaction():
        row = await queries.insert_stream(
            conn,
            performer_id=principal.user.id,
            title=data.title,
            tags=list(dict.fromkeys(t.lower() for t in data.tags)),
            adult=data.adult,
            scheduled_at=data.scheduled_at,
        )
        await audit.record(
            conn,
            "stream.create",
            actor_id=principal.user.id,
            target_type="stream",
            target_id=str(row.id),
            ip=ip,
            details={"title": row.title},
        )
    return row


async def go_live(
    conn: Conn, sfu: Sfu, principal: Principal, stream_id: int, *, ip: str | None
) -> StreamRow:
    """scheduled → live: the stream's own performer only; creates its Janus room first."""
    await ensure_may_publish(conn, principal.user)
    row = await queries.get_stream(conn, stream_id)
    if row.performer_id != principal.user.id:
        raise NotYourStream
    if row.status != "scheduled":
        raise Conflict(f"stream {stream_id} is {row.status}; only a scheduled stream can go live")
    room = new_room(f"stream {row.id}")
    try:
        await sfu.create_room(room)
    except JanusError as exc:
        log.warning("room_create_failed", stream=stream_id, error=str(exc))
        raise SfuUnavailable("the media server could not open the room; try again") from None
    try:
        async with conn.transaction():
            went_live = await queries.mark_live(
                conn, stream_id, room_id=room.room_id, room_secret=room.secret, room_pin=room.pin
            )
            if went_live:
                await audit.record(
                    conn,
                    "stream.live",
                    actor_id=principal.user.id,
                    target_type="stream",
                    target_id=str(stream_id),
                    ip=ip,
                    details={},
                )
    except psycopg.errors.UniqueViolation:
        went_live = False
        await _destroy_quietly(sfu, room)
        raise Conflict("you are already live with another stream") from None
    if not went_live:
        await _destroy_quietly(sfu, room)
        raise Conflict(f"stream {stream_id} is no longer scheduled")
    return await queries.get_stream(conn, stream_id)


async def end_stream(
    conn: Conn,
    sfu: Sfu,
    kv: Valkey,
    settings: Settings,
    actor: UserRow | None,
    stream_id: int,
    *,
    reason: str | None,
    ip: str | None,
) -> StreamRow:
    """→ ended. The performer ends their own stream; moderators and admins end any (actor None:
    the system, e.g. tipctl). The room is destroyed at once, which stops all media."""
    row = await queries.get_stream(conn, stream_id)
    by_staff = actor is None or actor.role in STAFF
    if actor is not None and not by_staff and row.performer_id != actor.id:
        raise NotYourStream
    if row.status == "ended":
        raise Conflict(f"stream {stream_id} has already ended")
    final_reason = reason or ("ended by moderator" if by_staff else "ended by performer")
    async with conn.transaction():
        ended = await queries.mark_ended(conn, stream_id, reason=final_reason)
        if not ended:
            raise Conflict(f"stream {stream_id} has already ended")
        await audit.record(
            conn,
            "stream.end",
            actor_id=actor.id if actor else None,
            target_type="stream",
            target_id=str(stream_id),
            ip=ip,
            details={"reason": final_reason, "by_staff": by_staff},
        )
    if row.janus_room_id is not None:
        await _destroy_quietly(sfu, room_of(row))
    await publish_room_event(
        kv, settings, stream_id, {"type": "stream_ended", "reason": final_reason}
    )
    return await queries.get_stream(conn, stream_id)


async def end_after_publisher_left(
    conn: Conn, sfu: Sfu, kv: Valkey, settings: Settings, stream_id: int, reason: str
) -> None:
    """The system ends a live stream whose publisher is gone for good."""
    row = await queries.get_stream(conn, stream_id)
    if row.status == "live":
        await end_stream(conn, sfu, kv, settings, None, stream_id, reason=reason, ip=None)


async def _destroy_quietly(sfu: Sfu, room: RoomSpec) -> None:
    try:
        await sfu.destroy_room(room.room_id, room.secret)
    except JanusError as exc:
        # Janus down: its rooms died with it; a restarted Janus only re-creates live ones.
        log.warning("room_destroy_failed", room=room.room_id, error=str(exc))


async def live_rooms(conn: Conn) -> list[RoomSpec]:
    rows = await queries.list_streams(conn, status="live", limit=100_000)
    return [room_of(r) for r in rows]


# A socket's presence entry is refreshed by its process every PRESENCE_REFRESH seconds and
# counts while younger than PRESENCE_TTL: a crashed process's sockets drop out on their own.
PRESENCE_REFRESH = 15
PRESENCE_TTL = 45


def presence_key(settings: Settings, stream_id: int) -> str:
    """Sorted set: connection id -> time of its last heartbeat."""
    return kvmod.key(settings, "room", stream_id, "viewers")


async def viewer_counts(kv: Valkey, settings: Settings, stream_ids: list[int]) -> dict[int, int]:
    """Viewers per stream: sockets with a fresh presence entry in Valkey (all processes)."""
    if not stream_ids:
        return {}
    fresh_since = time.time() - PRESENCE_TTL
    async with kv.pipeline(transaction=False) as pipe:
        for stream_id in stream_ids:
            pipe.zcount(presence_key(settings, stream_id), fresh_since, "+inf")
        counts = await pipe.execute()
    return {sid: int(n) for sid, n in zip(stream_ids, counts, strict=True)}


async def set_goal(
    conn: Conn, kv: Valkey, settings: Settings, principal: Principal, stream_id: int,
    title: str, tokens: int,
) -> Goal:  # fmt: skip
    """The performer sets (or replaces) the tip goal of their live stream."""
    row = await queries.get_stream(conn, stream_id)
    if row.performer_id != principal.user.id:
        raise NotYourStream
    if row.status != "live":
        raise StreamNotLive(f"stream {stream_id} is {row.status}")
    return await goals.set_goal(kv, settings, stream_id, title, tokens)


async def clear_goal(
    conn: Conn, kv: Valkey, settings: Settings, principal: Principal, stream_id: int
) -> None:
    row = await queries.get_stream(conn, stream_id)
    if row.performer_id != principal.user.id:
        raise NotYourStream
    await goals.clear_goal(kv, settings, stream_id)


# --------------------------------------------------------------------------- tip menus


class NotYourMenu(Forbidden):
    slug, title = "not-your-menu", "This tip menu belongs to another performer"


class NoSuchPerformer(NotFound):
    slug, title = "performer-not-found", "Performer not found"


def _menu(performer_id: int, rows: list[queries.TipMenuItemRow]) -> TipMenu:
    return TipMenu(
        performer_id=performer_id,
        items=[TipMenuItem(label=r.label, tokens=r.tokens) for r in rows],
    )


async def tip_menu(conn: Conn, performer_id: int) -> TipMenu:
    """A performer's tip menu as viewers see it (empty when they have not set one)."""
    try:
        user = await accounts.get_user(conn, performer_id)
    except NotFound:
        raise NoSuchPerformer(f"no performer {performer_id}") from None
    if user.role != "performer":
        raise NoSuchPerformer(f"no performer {performer_id}")
    return _menu(performer_id, await queries.tip_menu(conn, performer_id))


def _clean_menu(items: list[TipMenuItem]) -> list[tuple[str, int]]:
    """Labels trimmed; one label once (case-insensitive). Field errors name the item, as the
    request validator's do (items[2].label), so the editor marks the right row."""
    cleaned: list[tuple[str, int]] = []
    seen: set[str] = set()
    errors: list[dict[str, str]] = []
    for index, item in enumerate(items):
        label = " ".join(item.label.split())
        if label.lower() in seen:
            errors.append(
                {"key": f"items[{index}].label", "message": "This label is already on the menu"}
            )
        seen.add(label.lower())
        cleaned.append((label, item.tokens))
    if errors:
        raise InvalidInput("each item on the menu needs its own label", extra={"errors": errors})
    return cleaned


async def set_tip_menu(
    conn: Conn, kv: Valkey, settings: Settings, principal: Principal, performer_id: int,
    items: list[TipMenuItem], *, ip: str | None,
) -> TipMenu:  # fmt: skip
    """The performer replaces their own tip menu; viewers in their live room see it at once."""
    if principal.user.id != performer_id:
        raise NotYourMenu
    cleaned = _clean_menu(items)
    async with conn.transaction():
        rows = await queries.replace_tip_menu(conn, performer_id, cleaned)
        await audit.record(
            conn,
            "tip_menu.set",
            actor_id=principal.user.id,
            target_type="user",
            target_id=str(performer_id),
            ip=ip,
            details={"items": len(rows)},
        )
    menu = _menu(performer_id, rows)
    event = {"type": "tip_menu", **msgspec.to_builtins(menu)}
    for row in await queries.list_streams(conn, status="live", performer_id=performer_id, limit=5):
        await publish_room_event(kv, settings, row.id, event)
    return menu
