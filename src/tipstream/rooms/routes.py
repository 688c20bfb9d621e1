"""HTTP routes for streams, and the process-wide rooms machinery (the Janus client, the room
fan-out) started with the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from litestar import Controller, Litestar, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from valkey.asyncio import Valkey

from tipstream.accounts import guards
from tipstream.accounts.service import Principal
from tipstream.config import Settings
from tipstream.db import Conn, Pool
from tipstream.rooms import queries, service
from tipstream.rooms.schemas import CreateStreamRequest, EndStreamRequest, Stream
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
        rows = await queries.list_streams(conn, status="live", limit=limit)
        counts = await service.viewer_counts(kv, settings, [r.id for r in rows])
        return [service.to_stream(r, counts.get(r.id, 0)) for r in rows]

    @get("/{stream_id:int}", guards=[guards.public])
    async def show(self, stream_id: StreamId, conn: Conn, kv: Valkey, settings: Settings) -> Stream:
        row = await queries.get_stream(conn, stream_id)
        counts = await service.viewer_counts(kv, settings, [row.id])
        return service.to_stream(row, counts.get(row.id, 0))

    @post("/{stream_id:int}/live", guards=[guards.performer], status_code=200)
    async def go_live(
        self, stream_id: StreamId, principal: Principal, conn: Conn, sfu: Sfu, ip: str
    ) -> Stream:
        """Open the stream's room (its own performer only); then publish over the room
        WebSocket /ws/rooms/{id}."""
        row = await service.go_live(conn, sfu, principal, stream_id, ip=ip)
        return service.to_stream(row)

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
        try:
            yield
        finally:
            await sfu.close()

    return rooms_lifespan


ROUTES: list[Any] = [StreamsController]
