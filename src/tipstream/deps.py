"""Request-scoped dependencies every domain's routes use: a pooled connection, Valkey, the
settings, the client's address and the authenticated principal."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from valkey.asyncio import Valkey

from tipstream.config import Settings
from tipstream.db import Conn, Pool


async def provide_conn(state: State) -> AsyncIterator[Conn]:
    pool: Pool = state.pool
    async with pool.connection() as conn:
        yield conn


def provide_kv(state: State) -> Valkey:
    kv: Valkey = state.kv
    return kv


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


UNKNOWN_IP = "0.0.0.0"  # noqa: S104


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer address, or the address nginx saw when the peer is a trusted proxy."""
    settings: Settings = connection.app.state.settings
    peer = connection.client.host if connection.client else ""
    if peer in settings.server.trusted_proxies:
        # nginx appends the address it saw last; anything before it is client-supplied.
        forwarded = _as_ip(connection.headers.get("x-forwarded-for", "").rsplit(",", 1)[-1])
        if forwarded is not None:
            return forwarded
    # A peer that is no IP address (a Unix socket, a test client) must not reach inet columns.
    return _as_ip(peer) or UNKNOWN_IP


def _as_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def provide_ip(request: Request[Any, Any, Any]) -> str:
    return client_ip(request)


DEPENDENCIES = {
    "conn": Provide(provide_conn),
    "kv": Provide(provide_kv, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "ip": Provide(provide_ip, sync_to_thread=False),
}
