"""HTTP routes for streams, and the process-wide rooms machinery (the Janus client, the room
fan-out) started with the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from litestar import Controller, Litestar, WebSocket, delete, get, post, put, websocket
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import WebSocketException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter
from valkey.asyncio import Valkey

from tipstream.accounts import guards
from tipstream.accounts.service import Principal
from tipstream.config import Settings
from tipstream.db import Conn, Pool
from tipstream.errors import Problem
from tipstream.rooms import service
from tipstream.rooms import socket as room_socket_impl
from tipstream.rooms.hub import RoomHub
from tipstream.rooms.schemas import (
    CreateStreamRequest,
    EndStreamRequest,
    Goal,
    GoalRequest,
    Stream,
    TipMenu,
    TipMenuRequest,
)
from tipstream.rooms.sfu import RoomSpec, Sfu

StreamId = Annotated[int, Parameter(gt=0, le=2**63 - 1)]


def provide_sfu(state: State) -> Sfu:
    sfu: Sfu = state.sfu
    return sfu


DEPENDENCIES = {
    "principal": Provide(guards.provide_principal),
    "sfu": Provide(provide_sfu, sync_to_thread=False),
}


class StreamsController(Controller):
    path = "/api/streams"
    tags = ["streams"]
    dependencies = DEPENDENCIES

    @post("", guards=[guards.performer], status_code=201)
    async def create(
        self, data: CreateStreamRequest, principal: Principal, conn: Conn, ip: str
    ) -> Stream:
        """Schedule a stream (performers). It goes live with POST /api/streams/{id}/live."""
        row = await service.create_stream(conn, principal, data, ip=ip)
        return service.to_stream(row)

    @get("", guards=[guards.public])
    async def live(
        self,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> list[Stream]:
        """Live streams, most recently started first, with their viewer counts."""
        return await service.public_live_streams(conn, kv, settings, limit=limit)

    @get("/{stream_id:int}", guards=[guards.public])
    async def show(self, stream_id: StreamId, conn: Conn, kv: Valkey, settings: Settings) -> Stream:
        return await service.show_stream(conn, kv, settings, stream_id)

    @post("/{stream_id:int}/live", guards=[guards.performer], status_code=200)
    async def go_live(
        self, stream_id: StreamId, principal: Principal, conn: Conn, sfu: Sfu, ip: str
    ) -> Stream:
        """Open the stream's room (its own performer only); then publish over the room
        WebSocket /ws/rooms/{id}."""
        row = await service.go_live(conn, sfu, principal, stream_id, ip=ip)
        return service.to_stream(row)

    @post("/{stream_id:int}/goal", guards=[guards.performer], status_code=200)
    async def set_goal(
        self,
        stream_id: StreamId,
        data: GoalRequest,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
    ) -> Goal:
        """Set the tip goal of your live stream; tips count toward it from now on and every
        viewer sees its progress."""
        return await service.set_goal(
            conn, kv, settings, principal, stream_id, data.title, data.tokens
        )

    @delete("/{stream_id:int}/goal", guards=[guards.performer], status_code=204)
    async def clear_goal(
        self, stream_id: StreamId, principal: Principal, conn: Conn, kv: Valkey, settings: Settings
    ) -> None:
        await service.clear_goal(conn, kv, settings, principal, stream_id)

    @post(
        "/{stream_id:int}/end",
        guards=[guards.role_guard("performer", "moderator")],
        status_code=200,
    )
    async def end(
        self,
        stream_id: StreamId,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        sfu: Sfu,
        ip: str,
        data: EndStreamRequest | None = None,
    ) -> Stream:
        """End a stream: its performer, or a moderator/admin. The room is destroyed at once."""
        row = await service.end_stream(
            conn,
            sfu,
            kv,
            settings,
            principal.user,
            stream_id,
            reason=data.reason if data else None,
            ip=ip,
        )
        return service.to_stream(row)


UserId = Annotated[int, Parameter(gt=0, le=2**63 - 1)]


class TipMenuController(Controller):
    path = "/api/performers/{performer_id:int}/tip-menu"
    tags = ["tip menus"]
    dependencies = DEPENDENCIES

    @get("", guards=[guards.public])
    async def show(self, performer_id: UserId, conn: Conn) -> TipMenu:
        """A performer's tip menu: the priced items viewers tip with one click."""
        return await service.tip_menu(conn, performer_id)

    @put("", guards=[guards.performer], status_code=200)
    async def replace(
        self,
        performer_id: UserId,
        data: TipMenuRequest,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        ip: str,
    ) -> TipMenu:
        """Replace your own tip menu (at most 20 items, in the order given); viewers in your
        live room see the new menu at once."""
        return await service.set_tip_menu(
            conn, kv, settings, principal, performer_id, data.items, ip=ip
        )


async def _socket_signed_in(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """guards.signed_in for WebSockets: a refusal closes the handshake with 4401/4403."""
    try:
        principal = await guards.resolve_principal(connection)
    except Problem as exc:
        raise WebSocketException(detail=exc.detail, code=4000 + exc.status) from None
    if principal is None:
        raise WebSocketException(detail="sign in first", code=4401)


setattr(_socket_signed_in, guards.GUARD_ATTR, "signed-in")


@websocket("/ws/rooms/{stream_id:int}", guards=[_socket_signed_in])
async def room_socket(socket: WebSocket[Any, Any, Any], stream_id: int) -> None:
    """The room WebSocket: signaling (publish/subscribe/ICE) and chat, tips, viewer counts,
    moderation. Authenticated by the session cookie."""
    await room_socket_impl.serve(socket, stream_id)


def lifespan(settings: Settings) -> Any:
    """Start the process's Janus client (and room fan-out) with the app; stop them after."""

    @asynccontextmanager
    async def rooms_lifespan(app: Litestar) -> AsyncIterator[None]:
        async def live_rooms() -> list[RoomSpec]:
            pool: Pool = app.state.pool
            async with pool.connection() as conn:
                return await service.live_rooms(conn)

        # Connects to Janus on first use, so apps that never open a room never dial Janus.
        sfu = Sfu(settings, live_rooms=live_rooms)
        app.state.sfu = sfu
        hub = RoomHub(settings, app.state.kv)
        app.state.hub = hub
        try:
            yield
        finally:
            await hub.close()
            await sfu.close()

    return rooms_lifespan


ROUTES: list[Any] = [StreamsController, TipMenuController, room_socket]
