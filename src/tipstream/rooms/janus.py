"""A small async client for the Janus WebSocket API (the ``janus-protocol`` subprotocol).

One ``JanusClient`` per process holds one WebSocket to Janus. On it live sessions (kept alive
well inside Janus's 60 s session timeout), plugin handles, and transactions: every request
carries a random transaction id and its answer resolves the matching future. Events without a
transaction (webrtcup, media, slowlink, hangup, plugin notifications) are routed to the handle
that sent them (``Handle.events``).

When the connection drops (Janus restarted, network blip) every pending request fails with
``JanusUnavailable``, every session and handle is marked lost (their owners see ``None`` on
their event queue), and the client reconnects with backoff; ``on_reconnect`` then lets the
owner rebuild what Janus forgot (rooms, sessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

log = structlog.get_logger("tipstream.rooms.janus")

SUBPROTOCOL = Subprotocol("janus-protocol")
VIDEOROOM = "janus.plugin.videoroom"
Json = dict[str, Any]


class JanusError(Exception):
    """Janus (or its plugin) refused a request; ``code`` is Janus's numeric error code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"janus error {code}: {reason}")
        self.code = code
        self.reason = reason


class JanusUnavailable(JanusError):
    """Janus is not reachable or did not answer in time."""

    def __init__(self, reason: str) -> None:
        super().__init__(0, reason)


@dataclass
class JanusEvent:
    """Something Janus said about a handle: ``kind`` is Janus's "janus" field ("event",
    "webrtcup", "media", "slowlink", "hangup", "detached"); ``data`` the plugin's data."""

    kind: str
    data: Json
    jsep: Json | None
    raw: Json


@dataclass
class _Pending:
    future: asyncio.Future[Json]
    # Async plugin requests are answered with "ack" first and the "event" later.
    wants_event: bool


class Handle:
    """A plugin handle: one participant's (or the control channel's) link to the plugin."""

    def __init__(self, session: Session, handle_id: int) -> None:
        self.session = session
        self.id = handle_id
        # Events for this handle; None means the handle is gone (detached, session lost).
        self.events: asyncio.Queue[JanusEvent | None] = asyncio.Queue(maxsize=1000)
        self.lost = False

    @property
    def client(self) -> JanusClient:
        return self.session.client

    async def request(self, body: Json) -> Json:
        """A synchronous plugin request (create, destroy, exists, kick, listparticipants...):
        returns the plugin's data; a plugin error becomes JanusError."""
        reply = await self.client.send(
            {"janus": "message", "body": body}, session_id=self.session.id, handle_id=self.id
        )
        return _plugin_data(reply)

    async def message(self, body: Json, jsep: Json | None = None) -> JanusEvent:
        """An asynchronous plugin request (join, configure, start...): waits for its event."""
        payload: Json = {"janus": "message", "body": body}
        if jsep is not None:
            payload["jsep"] = jsep
        reply = await self.client.send(
            payload, session_id=self.session.id, handle_id=self.id, wants_event=True
        )
        data = _plugin_data(reply)
        return JanusEvent("event", data, reply.get("jsep"), reply)

    async def trickle(self, candidate: Json | None) -> None:
        """Pass one ICE candidate on; None says gathering is complete."""
        done = {"completed": True}
        await self.client.send(
            {"janus": "trickle", "candidate": candidate if candidate is not None else done},
            session_id=self.session.id,
            handle_id=self.id,
        )

    async def hangup(self) -> None:
        await self.client.send({"janus": "hangup"}, session_id=self.session.id, handle_id=self.id)

    async def detach(self) -> None:
        if self.lost:
            return
        try:
            await self.client.send(
                {"janus": "detach"}, session_id=self.session.id, handle_id=self.id
            )
        finally:
            self.session.forget(self)

    def mark_lost(self) -> None:
        if not self.lost:
            self.lost = True
            _offer(self.events, None)


class Session:
    """A Janus session; the client keeps it alive until it is destroyed or lost."""

    def __init__(self, client: JanusClient, session_id: int) -> None:
        self.client = client
        self.id = session_id
        self.handles: dict[int, Handle] = {}
        self.lost = asyncio.Event()

    async def attach(self, plugin: str = VIDEOROOM) -> Handle:
        reply = await self.client.send({"janus": "attach", "plugin": plugin}, session_id=self.id)
        handle = Handle(self, int(reply["data"]["id"]))
        self.handles[handle.id] = handle
        return handle

    def forget(self, handle: Handle) -> None:
        self.handles.pop(handle.id, None)
        handle.mark_lost()

    async def destroy(self) -> None:
        if self.lost.is_set():
            return
        try:
            await self.client.send({"janus": "destroy"}, session_id=self.id)
        finally:
            self.client.forget(self)

    def mark_lost(self) -> None:
        self.lost.set()
        for handle in list(self.handles.values()):
            handle.mark_lost()
        self.handles.clear()


def _offer(queue: asyncio.Queue[JanusEvent | None], item: JanusEvent | None) -> None:
    """Queue an event without blocking the reader: a full queue drops its oldest event."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(item)


def _plugin_data(reply: Json) -> Json:
    data: Json = reply.get("plugindata", {}).get("data", {})
    if "error_code" in data:
        raise JanusError(int(data["error_code"]), str(data.get("error", "plugin error")))
    return data


@dataclass
class JanusClient:
    url: str
    api_secret: str | None
    keepalive_seconds: float = 20.0
    timeout_seconds: float = 10.0
    # Called after every reconnect (not the first connect), when Janus has forgotten everything.
    on_reconnect: Callable[[], Awaitable[None]] | None = None
    sessions: dict[int, Session] = field(default_factory=dict)
    _ws: ClientConnection | None = None
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: asyncio.Task[None] | None = None
    _closing: bool = False
    connects: int = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, wait: bool = True) -> None:
        """Start connecting (and reconnecting) in the background; wait for the first connect."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="janus-client")
        if wait:
            await self.wait_connected()

    async def wait_connected(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), self.timeout_seconds)
        except TimeoutError:
            raise JanusUnavailable(f"cannot reach Janus at {self.url}") from None

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def close(self) -> None:
        self._closing = True
        for session in list(self.sessions.values()):
            with contextlib.suppress(JanusError):
                await asyncio.wait_for(session.destroy(), 2)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._ws is not None:
            await self._ws.close()
        self._lose_everything("client closed")

    async def _run(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                async with connect(
                    self.url,
                    subprotocols=[SUBPROTOCOL],
                    open_timeout=self.timeout_seconds,
                    max_size=1 << 20,
                    ping_interval=10,
                    ping_timeout=10,
                ) as ws:
                    self._ws = ws
                    self.connects += 1
                    self._connected.set()
                    delay = 0.2
                    log.info("janus_connected", url=self.url, connects=self.connects)
                    keepalive = asyncio.create_task(self._keepalive())
                    try:
                        if self.connects > 1 and self.on_reconnect is not None:
                            asyncio.create_task(self._call_on_reconnect())  # noqa: RUF006
                        await self._read(ws)
                    finally:
                        keepalive.cancel()
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                if not self._closing and delay <= 0.2:  # once per outage, not every retry
                    log.warning("janus_unreachable", url=self.url, error=type(exc).__name__)
            finally:
                self._ws = None
                self._connected.clear()
                self._lose_everything("connection to Janus lost")
            if self._stopping():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _stopping(self) -> bool:
        return self._closing

    async def _call_on_reconnect(self) -> None:
        assert self.on_reconnect is not None
        try:
            await self.on_reconnect()
        except Exception:
            log.exception("janus_on_reconnect_failed")

    def _lose_everything(self, reason: str) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(JanusUnavailable(reason))
        self._pending.clear()
        for session in list(self.sessions.values()):
            session.mark_lost()
        self.sessions.clear()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_seconds)
            for session in list(self.sessions.values()):
                try:
                    await self.send({"janus": "keepalive"}, session_id=session.id)
                except JanusError as exc:
                    log.warning("janus_keepalive_failed", session=session.id, error=str(exc))
                    if exc.code == 458:  # no such session: Janus already dropped it
                        self.forget(session)

    # ------------------------------------------------------------------ messages

    async def _read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            try:
                message = msgspec.json.decode(frame)
            except msgspec.DecodeError:
                log.warning("janus_bad_frame")
                continue
            if isinstance(message, dict):
                self._dispatch(message)

    def _dispatch(self, message: Json) -> None:
        kind = message.get("janus")
        transaction = message.get("transaction")
        pending = self._pending.get(transaction) if isinstance(transaction, str) else None
        if pending is not None:
            if kind == "ack" and pending.wants_event:
                return
            if kind in ("ack", "success", "event", "server_info"):
                self._pending.pop(str(transaction))
                if not pending.future.done():
                    pending.future.set_result(message)
                return
            if kind == "error":
                self._pending.pop(str(transaction))
                error = message.get("error", {})
                if not pending.future.done():
                    pending.future.set_exception(
                        JanusError(int(error.get("code", 0)), str(error.get("reason", "error")))
                    )
                return
        session = self.sessions.get(int(message.get("session_id") or 0))
        if session is None:
            return
        if kind == "timeout":
            self.forget(session)
            return
        handle = session.handles.get(int(message.get("sender") or 0))
        if handle is None:
            return
        data = message.get("plugindata", {}).get("data", {})
        _offer(handle.events, JanusEvent(str(kind), data, message.get("jsep"), message))
        if kind == "detached":
            session.forget(handle)

    async def send(
        self,
        payload: Json,
        *,
        session_id: int | None = None,
        handle_id: int | None = None,
        wants_event: bool = False,
    ) -> Json:
        """Send one request and wait for its answer (or event); JanusError on refusal."""
        ws = self._ws
        if ws is None:
            raise JanusUnavailable(f"not connected to Janus at {self.url}")
        transaction = secrets.token_hex(12)
        message = {**payload, "transaction": transaction}
        if self.api_secret:
            message["apisecret"] = self.api_secret
        if session_id is not None:
            message["session_id"] = session_id
        if handle_id is not None:
            message["handle_id"] = handle_id
        future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = _Pending(future, wants_event)
        try:
            await ws.send(msgspec.json.encode(message).decode())
            return await asyncio.wait_for(future, self.timeout_seconds)
        except ConnectionClosed:
            raise JanusUnavailable("connection to Janus lost") from None
        except TimeoutError:
            raise JanusUnavailable(
                f"Janus did not answer {payload.get('janus')} in {self.timeout_seconds} s"
            ) from None
        finally:
            self._pending.pop(transaction, None)

    # ------------------------------------------------------------------ sessions

    async def info(self) -> Json:
        return await self.send({"janus": "info"})

    async def create_session(self) -> Session:
        reply = await self.send({"janus": "create"})
        session = Session(self, int(reply["data"]["id"]))
        self.sessions[session.id] = session
        return session

    def forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        session.mark_lost()
