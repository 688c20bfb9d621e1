"""aiortc peers for the media tests: a publisher whose frames carry their own index (drawn as
a 32-block bit pattern that survives VP8), and a subscriber that reads the index back and
records when each frame arrived. Send and arrival times share this process's clock."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    VideoStreamTrack,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp

WIDTH, HEIGHT = 320, 240
COLUMNS, ROWS = 8, 4
BLOCK_W, BLOCK_H = WIDTH // COLUMNS, HEIGHT // ROWS
BLACK, WHITE = 16, 235


def stamped_frame(index: int) -> av.VideoFrame:
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    luma = frame.planes[0]
    stride = luma.line_size
    rows = bytearray(stride * HEIGHT)
    for bit in range(COLUMNS * ROWS):
        value = WHITE if (index >> bit) & 1 else BLACK
        bx, by = (bit % COLUMNS) * BLOCK_W, (bit // COLUMNS) * BLOCK_H
        block_row = bytes([value]) * BLOCK_W
        for y in range(by, by + BLOCK_H):
            rows[y * stride + bx : y * stride + bx + BLOCK_W] = block_row
    luma.update(bytes(rows))
    for plane in frame.planes[1:]:
        plane.update(b"\x80" * plane.buffer_size)
    return frame


def read_stamp(frame: av.VideoFrame) -> int:
    if frame.format.name != "yuv420p" or frame.width != WIDTH or frame.height != HEIGHT:
        frame = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
    luma = frame.planes[0]
    data = bytes(luma)
    stride = luma.line_size
    index = 0
    for bit in range(COLUMNS * ROWS):
        cx = (bit % COLUMNS) * BLOCK_W + BLOCK_W // 2
        cy = (bit // COLUMNS) * BLOCK_H + BLOCK_H // 2
        samples = [
            data[(cy + dy) * stride + cx + dx] for dy in range(-4, 5, 2) for dx in range(-4, 5, 2)
        ]
        if sum(samples) / len(samples) > (BLACK + WHITE) / 2:
            index |= 1 << bit
    return index


class StampedVideoTrack(VideoStreamTrack):
    """30 fps synthetic video; remembers when each frame index was handed to the encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.index = 0
        self.sent: dict[int, float] = {}

    async def recv(self) -> av.VideoFrame:  # type: ignore[override]
        pts, time_base = await self.next_timestamp()
        self.index += 1
        frame = stamped_frame(self.index)
        frame.pts, frame.time_base = pts, time_base
        self.sent[self.index] = time.monotonic()
        return frame


def rtc_config(ice_servers: list[dict[str, Any]] | None, *, relay_only: bool) -> RTCConfiguration:
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in (ice_servers or [])
    ]
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def has_relay_candidate(sdp: str) -> bool:
    return any("typ relay" in line for line in sdp.splitlines() if line.startswith("a=candidate"))


async def add_remote_candidate(pc: RTCPeerConnection, candidate: dict[str, Any] | None) -> None:
    """Add a trickled candidate once the remote description is set (as browsers queue them)."""
    if not candidate or not candidate.get("candidate"):
        return
    for _ in range(200):
        if pc.remoteDescription is not None:
            break
        await asyncio.sleep(0.025)
    parsed = candidate_from_sdp(candidate["candidate"].removeprefix("candidate:"))
    parsed.sdpMid = candidate.get("sdpMid")
    parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
    await pc.addIceCandidate(parsed)


@dataclass
class Arrivals:
    """What a subscriber saw: (frame index, arrival time) in arrival order."""

    frames: list[tuple[int, float]] = field(default_factory=list)
    first: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    consumers: list[asyncio.Future[None]] = field(default_factory=list)

    def latencies_ms(self, sent: dict[int, float]) -> list[float]:
        return [(at - sent[i]) * 1000 for i, at in self.frames if i in sent]

    def summary(self, sent: dict[int, float]) -> dict[str, float]:
        lat = sorted(self.latencies_ms(sent))
        if not lat:
            return {"frames": 0}
        return {
            "frames": len(lat),
            "p50_ms": statistics.median(lat),
            "p95_ms": lat[min(len(lat) - 1, int(len(lat) * 0.95))],
        }


def watch(pc: RTCPeerConnection) -> Arrivals:
    """Record every video frame the peer receives."""
    arrivals = Arrivals()

    @pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind != "video":
            return

        async def consume() -> None:
            try:
                while True:
                    frame = await track.recv()
                    arrivals.frames.append((read_stamp(frame), time.monotonic()))
                    arrivals.first.set()
            except Exception:
                arrivals.ended.set()

        arrivals.consumers.append(asyncio.ensure_future(consume()))

    return arrivals
