"""The moderator worker (``tipctl run moderator``): a hidden aiortc subscriber in every live
room, through the app's Janus client (Janus is never exposed to a browser for this), sampling
one frame every moderation.sample_interval_seconds through NudeNet and PDQ.

A hash-list match ends the stream at once and files a severity-5 case with the frame as
evidence; nudity in a room not marked adult files a case and, as the room's video policy says
(nudity_action, nudity_action_by_room), hides the stream from the listings or ends it. Each
room is flagged at most once per kind while it is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from typing import Any

import numpy as np
import structlog
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp
from numpy.typing import NDArray
from PIL import Image
from prometheus_client import Counter, Histogram, start_http_server
from valkey.asyncio import Valkey

from tipstream.config import Settings, VideoAction
from tipstream.db import Pool
from tipstream.errors import Problem
from tipstream.moderation import pdq, service, video
from tipstream.rooms import queries as rooms_queries
from tipstream.rooms import service as rooms
from tipstream.rooms.queries import StreamRow
from tipstream.rooms.sfu import Sfu
from tipstream.rooms.signaling import Participant, SignalingError

log = structlog.get_logger("tipstream.moderation.sampler")

FRAMES = Counter("tipstream_moderator_frames_total", "Frames sampled and analysed")
FRAME_SECONDS = Histogram(
    "tipstream_moderator_frame_seconds",
    "Decode-to-verdict time of one sampled frame (PDQ + NudeNet)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DETECTIONS = Counter("tipstream_moderator_detections_total", "Detections acted on", ["kind"])
ACTION_SECONDS = Histogram(
    "tipstream_moderator_action_seconds",
    "From a frame's arrival to the action taken on it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROOMS = Counter("tipstream_moderator_rooms_joined_total", "Rooms the worker joined")


def video_action_for(settings: Settings, stream: StreamRow) -> VideoAction:
    """What nudity in this room (not marked adult) does: flag, hide or end."""
    moderation = settings.moderation
    return moderation.nudity_action_by_room.get(str(stream.performer_id), moderation.nudity_action)


def frame_jpeg(bgr: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(bgr[..., ::-1])).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class RoomWatcher:
    """One live room: subscribe through Janus, sample frames, act."""

    def __init__(self, moderator: Moderator, stream: StreamRow) -> None:
        self.moderator = moderator
        self.stream = stream
        self.pc: RTCPeerConnection | None = None
        self.participant: Participant | None = None
        self.flagged: set[str] = set()
        self.done = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_signal(self, message: dict[str, Any]) -> None:
        if message.get("type") == "ice" and self.pc is not None:
            self._spawn(self._add_candidate(message.get("candidate")))
        elif message.get("type") in ("media_ended", "media_lost"):
            self.done.set()

    async def _add_candidate(self, candidate: dict[str, Any] | None) -> None:
        if not candidate or not candidate.get("candidate") or self.pc is None:
            return
        parsed = candidate_from_sdp(str(candidate["candidate"]).removeprefix("candidate:"))
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        with contextlib.suppress(Exception):
            await self.pc.addIceCandidate(parsed)

    async def run(self) -> None:
        sfu = self.moderator.sfu
        self.participant = Participant(
            sfu, rooms.room_of(self.stream), self.stream.performer_id, self._on_signal
        )
        offer = await self.participant.subscribe(None)
        self.pc = pc = RTCPeerConnection()

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                self._spawn(self._consume(track))

        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.participant.start(pc.localDescription.sdp)
        self.participant.release_ice()
        ROOMS.inc()
        log.info("room_joined", stream=self.stream.id)
        await self.done.wait()

    async def _consume(self, track: Any) -> None:
        interval = self.moderator.settings.moderation.sample_interval_seconds
        last = 0.0
        try:
            while not self.done.is_set():
                frame = await track.recv()
                arrived = time.monotonic()
                if arrived - last < interval:
                    continue
                last = arrived
                bgr = frame.to_ndarray(format="bgr24")
                await self.moderator.examine(self, bgr, arrived)
        except Exception as exc:  # the track ended (MediaStreamError) or the room went away
            log.info("track_ended", stream=self.stream.id, error=type(exc).__name__)
            self.done.set()

    async def close(self) -> None:
        self.done.set()
        for task in list(self._tasks):
            task.cancel()
        if self.pc is not None:
            await self.pc.close()
        if self.participant is not None:
            await self.participant.close()


class Moderator:
    """Watches every live room; the supervisor loop joins new ones and leaves ended ones."""

    def __init__(self, settings: Settings, pool: Pool, kv: Valkey, sfu: Sfu) -> None:
        self.settings = settings
        self.pool = pool
        self.kv = kv
        self.sfu = sfu
        self.hashes = pdq.HashList.load(settings.moderation.hash_lists)
        self.watchers: dict[int, tuple[RoomWatcher, asyncio.Task[None]]] = {}

    async def examine(self, watcher: RoomWatcher, bgr: NDArray[np.uint8], arrived: float) -> None:
        stream = watcher.stream
        # The latest frame, for a viewer's report to capture as evidence (kept briefly, in
        # memory only, until it is sealed in the vault with a report).
        jpeg = await asyncio.to_thread(frame_jpeg, bgr)
        await service.keep_current_frame(self.kv, self.settings, stream.id, jpeg)
        verdict = await asyncio.to_thread(
            video.analyse, self.settings, self.hashes, bgr, adult=stream.adult
        )
        FRAMES.inc()
        FRAME_SECONDS.observe(verdict.seconds)
        if verdict.match is not None and "hash" not in watcher.flagged:
            watcher.flagged.add("hash")
            match = verdict.match
            reason = f"hash-list match: {match.label or match.source} (distance {match.distance})"
            facts = {"pdq": verdict.hash.hex, "quality": verdict.hash.quality,
                     "match": {"label": match.label, "source": match.source,
                               "distance": match.distance}}  # fmt: skip
            await self.apply(stream, "hash", reason, None, bgr, facts, "end", arrived=arrived)
            DETECTIONS.labels("hash").inc()
        elif verdict.nudity and "nudity" not in watcher.flagged:
            watcher.flagged.add("nudity")
            top = max(verdict.nudity, key=lambda d: float(d["score"]))
            reason = f"nudity in a room not marked adult: {top['class']}"
            facts = {"pdq": verdict.hash.hex, "detections": verdict.nudity}
            action = video_action_for(self.settings, stream)
            score = float(top["score"])
            await self.apply(stream, "video", reason, score, bgr, facts, action, arrived=arrived)
            DETECTIONS.labels("nudity").inc()

    async def apply(
        self,
        stream: StreamRow,
        source: str,
        reason: str,
        score: float | None,
        bgr: NDArray[np.uint8],
        facts: dict[str, Any],
        action: VideoAction,
        *,
        arrived: float,
    ) -> None:
        """The room's video policy on a detection: flag it (a case with the frame), and hide
        the stream from the listings or end it when the policy says so."""
        end = action == "end"
        log.warning("video_detection", stream=stream.id, source=source, reason=reason,
                    action=action)  # fmt: skip
        async with self.pool.connection() as conn:
            if end:
                # Takedown first: the case (and its evidence) can wait a few milliseconds.
                try:
                    await rooms.end_stream(
                        conn, self.sfu, self.kv, self.settings, None, stream.id,
                        reason=f"moderation: {reason}", ip=None,
                    )  # fmt: skip
                except Problem as exc:
                    log.info("end_stream_refused", stream=stream.id, error=str(exc))
                ACTION_SECONDS.observe(time.monotonic() - arrived)
            try:
                await service.flag_video(
                    conn, self.kv, self.settings, stream, source=source, reason=reason,
                    score=score, frame_jpeg=frame_jpeg(bgr), facts=facts, hide=action == "hide",
                )  # fmt: skip
            except Problem as exc:
                log.exception("video_flag_not_recorded", stream=stream.id, error=str(exc))
            if not end:
                ACTION_SECONDS.observe(time.monotonic() - arrived)

    async def sync_rooms(self) -> None:
        async with self.pool.connection() as conn:
            live = {
                s.id: s
                for s in await rooms_queries.list_streams(conn, status="live", limit=100_000)
            }
        for stream_id in list(self.watchers):
            watcher, task = self.watchers[stream_id]
            if stream_id not in live or task.done():
                del self.watchers[stream_id]
                await watcher.close()
                task.cancel()
        for stream_id, stream in live.items():
            if stream_id not in self.watchers:
                watcher = RoomWatcher(self, stream)
                task = asyncio.create_task(self._watch(watcher))
                self.watchers[stream_id] = (watcher, task)

    async def _watch(self, watcher: RoomWatcher) -> None:
        try:
            await watcher.run()
        except SignalingError as exc:
            # No publisher yet: the next sync tries again.
            log.debug("room_not_joined", stream=watcher.stream.id, error=exc.code)
        except Exception:
            log.exception("room_watch_failed", stream=watcher.stream.id)

    async def run(self, *, sync_seconds: float = 1.0, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                try:
                    await self.sync_rooms()
                except Exception:
                    log.exception("moderator_sync_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), sync_seconds)
        finally:
            for watcher, task in self.watchers.values():
                await watcher.close()
                task.cancel()
            self.watchers.clear()


async def run_moderator(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """The moderator worker's main: metrics, the model warmed, then the supervisor loop."""
    from tipstream import db, kv

    if settings.moderation.metrics_port:
        start_http_server(settings.moderation.metrics_port, addr="127.0.0.1")
    await asyncio.to_thread(video.detector)
    pool = db.create_pool(settings)
    await pool.open(wait=True)
    client = kv.create_client(settings)
    sfu = Sfu(settings)
    try:
        await Moderator(settings, pool, client, sfu).run(stop=stop)
    finally:
        await sfu.close()
        await client.aclose()
        await pool.close()
