"""People using a real app server over HTTP and the room WebSocket, as a browser would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.kyc.approved import approve_kyc_in
from tests.integration.rooms.conftest import AppServer

PASSWORD = "correct horse battery staple"


@dataclass
class Person:
    server: AppServer
    http: httpx.AsyncClient
    user: dict[str, Any]
    csrf: str
    email: str

    @property
    def id(self) -> int:
        return int(self.user["id"])

    @property
    def cookie(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.http.cookies.jar)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.http.post(url, headers={"x-csrf-token": self.csrf}, **kwargs)

    async def login(self, **fields: Any) -> None:
        self.http.cookies.clear()  # a fresh sign-in, as from a new browser tab after logout
        response = await self.http.post(
            "/api/auth/login", json={"email": self.email, "password": PASSWORD, **fields}
        )
        assert response.status_code == 200, response.text
        self.csrf = response.json()["csrf_token"]
        self.user = response.json()["user"]

    async def room(self, stream_id: int, server: AppServer | None = None) -> RoomConn:
        ws = await connect(
            f"{(server or self.server).ws_url}/ws/rooms/{stream_id}",
            additional_headers={"Cookie": self.cookie},
            max_size=2**22,
            open_timeout=10,
        )
        conn = RoomConn(ws)
        conn.welcome = await conn.expect("welcome")
        return conn


async def sign_up(server: AppServer, role: str = "viewer", tag: str = "user") -> Person:
    http = httpx.AsyncClient(base_url=server.base_url, timeout=20)
    email = f"{tag}-{uuid.uuid4().hex[:12]}@example.test"
    registered = await http.post(
        "/api/auth/register",
        json={
            "email": email,
            "password": PASSWORD,
            "date_of_birth": "1990-05-17",
            "display_name": tag.title(),
            "role": role,
        },
    )
    assert registered.status_code == 201, registered.text
    person = Person(server, http, registered.json(), "", email)
    if role == "performer" and server.settings is not None:
        await approve_kyc_in(server.settings, person.id)  # publishing needs approved KYC
    await person.login()
    return person


async def live_stream(performer: Person, title: str = "Live test") -> int:
    created = await performer.post("/api/streams", json={"title": title})
    assert created.status_code == 201, created.text
    stream_id = int(created.json()["id"])
    live = await performer.post(f"/api/streams/{stream_id}/live")
    assert live.status_code == 200, live.text
    return stream_id


@dataclass
class RoomConn:
    """A room WebSocket read by one background task: every message lands in .inbox (and
    .seen); ICE candidates go to on_ice when it is set."""

    ws: ClientConnection
    seen: list[dict[str, Any]] = field(default_factory=list)
    welcome: dict[str, Any] = field(default_factory=dict)
    inbox: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    on_ice: Callable[[dict[str, Any] | None], Awaitable[None]] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    _pump: asyncio.Task[None] | None = None
    _ice_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _paused: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._paused.set()
        self._pump = asyncio.create_task(self._read())

    def pause(self) -> None:
        """Stop reading (a stalled client): frames pile up in TCP buffers, then at the server."""
        self._paused.clear()

    def resume(self) -> None:
        self._paused.set()

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                await self._paused.wait()
                message: dict[str, Any] = msgspec.json.decode(frame)
                self.seen.append(message)
                if message.get("type") == "ice" and self.on_ice is not None:
                    task = asyncio.create_task(self.on_ice(message.get("candidate")))
                    self._ice_tasks.add(task)
                    task.add_done_callback(self._ice_tasks.discard)
                await self.inbox.put(message)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            await self.inbox.put(None)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(msgspec.json.encode(message).decode())

    async def expect(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next message of this type (earlier ones of other types are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            try:
                message = await asyncio.wait_for(self.inbox.get(), max(left, 0.001))
            except TimeoutError:
                raise TimeoutError(
                    f"no {kind!r} message; saw {[m.get('type') for m in self.seen]}"
                ) from None
            if message is None:
                await self.inbox.put(None)
                raise ConnectionError(f"socket closed ({self.close_code}) before {kind!r}")
            if message.get("type") == kind:
                return message

    async def wait_closed(self, timeout: float = 10) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        if self._pump is not None:
            await asyncio.wait([self._pump], timeout=5)
