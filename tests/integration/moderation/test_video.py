"""The moderator worker against a real Janus: a performer's aiortc publisher shows a frame whose
PDQ hash is on the operator's hash list; the worker, a hidden subscriber, ends the stream within
the sampling interval of the frame's arrival and files a severity-5 case with the frame."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any

import av
import msgspec
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from prometheus_client import REGISTRY
from valkey.asyncio import Valkey

from tests.helpers import scalar
from tests.integration.moderation.conftest import MakeModerator, ModWorld, decode
from tests.integration.rooms.media import add_remote_candidate, rtc_config
from tests.integration.rooms.people import live_stream, sign_up
from tipstream import db as tsdb
from tipstream.moderation import pdq
from tipstream.moderation.sampler import run_moderator

INTERVAL = 1.0


def other_image() -> np.ndarray[Any, np.dtype[np.uint8]]:
    rng = np.random.default_rng(7)
    blocks = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    return np.kron(blocks, np.ones((40, 40, 1), dtype=np.uint8))


def listed_image() -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Big flat blocks: a picture VP8 keeps recognisable (PDQ distance well under 31)."""
    rng = np.random.default_rng(20261125)
    blocks = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    return np.kron(blocks, np.ones((40, 40, 1), dtype=np.uint8))  # 240 x 320 RGB


class ImageTrack(VideoStreamTrack):
    def __init__(self, rgb: np.ndarray[Any, np.dtype[np.uint8]]) -> None:
        super().__init__()
        self.rgb = rgb

    async def recv(self) -> av.VideoFrame:  # type: ignore[override]
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.rgb, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


@pytest.mark.slow
async def test_hash_listed_frame_ends_the_stream_and_lands_in_the_queue(
    mod_world: ModWorld,
    mod_db: tsdb.Conn,
    mod_kv: Valkey,
    make_moderator: MakeModerator,
    tmp_path: Any,
) -> None:
    image = listed_image()
    hash_file = tmp_path / "known.pdq"
    hash_file.write_text(
        "# test list\n"
        + f"{'0' * 64} unrelated\n"
        + f"{pdq.hash_rgb(image).hex} test-known-image\n"
    )
    settings = msgspec.structs.replace(
        mod_world.settings,
        moderation=msgspec.structs.replace(
            mod_world.settings.moderation,
            hash_lists=[str(hash_file)],
            sample_interval_seconds=INTERVAL,
            metrics_port=0,
        ),
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_moderator(settings, stop))
    performer = await sign_up(mod_world.server, "performer", "hashed")
    stream_id = await live_stream(performer, "known image")
    reporter = await sign_up(mod_world.server, tag="viewer")
    viewer_room = await reporter.room(stream_id)
    room = await performer.room(stream_id)
    pc = RTCPeerConnection(rtc_config(room.welcome["ice_servers"], relay_only=False))
    room.on_ice = lambda c: add_remote_candidate(pc, c)
    # First an ordinary picture; a viewer reports the stream while it shows.
    track = ImageTrack(other_image())
    pc.addTrack(track)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        await room.send({"type": "publish", "sdp": pc.localDescription.sdp})
        answer = await room.expect("answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await room.expect("media_up", timeout=15)
        frame_key = f"{settings.valkey.key_prefix}moderation:frame:{stream_id}"
        for _ in range(150):  # the worker joins and samples its first frame
            if await mod_kv.exists(frame_key):
                break
            await asyncio.sleep(0.1)
        reported = await reporter.post(
            "/api/moderation/reports",
            json={"target": "stream", "stream_id": stream_id, "reason": "looks wrong"},
        )
        assert reported.status_code == 201, reported.text
        report_id = reported.json()["id"]
        # Now the hash-listed picture.
        track.rgb = image
        started = time.monotonic()
        ended = await viewer_room.expect("stream_ended", timeout=30)
        took = time.monotonic() - started
        assert "hash-list match: test-known-image" in ended["reason"]
        assert took < 20, f"ended {took:.1f} s after media started"
        status = await scalar(
            mod_db, "SELECT status::text FROM streams WHERE id = %s", (stream_id,)
        )
        assert status == "ended"
        for _ in range(50):  # the case is filed right after the takedown
            if await scalar(
                mod_db,
                "SELECT count(*) FROM moderation_cases WHERE stream_id = %s AND source = 'hash'",
                (stream_id,),
            ):
                break
            await asyncio.sleep(0.1)
        # From the frame's arrival at the worker to the takedown: within the interval.
        action = REGISTRY.get_sample_value("tipstream_moderator_action_seconds_sum")
        assert action is not None and 0 < action < INTERVAL
    finally:
        await pc.close()
        stop.set()
        await asyncio.wait_for(worker, 15)
    moderator = await make_moderator()
    queue = (await moderator.http.get("/api/moderation/queue")).json()
    case = next(c for c in queue if c["stream_id"] == stream_id and c["source"] == "hash")
    assert case["source"] == "hash" and case["severity"] == 5
    assert queue[0]["severity"] == 5  # the most severe first
    detail = (await moderator.http.get(f"/api/moderation/cases/{case['id']}")).json()
    evidence = decode(detail["evidence"])
    jpeg = base64.b64decode(str(evidence["frame_jpeg_base64"]))
    assert jpeg[:3] == b"\xff\xd8\xff"
    assert evidence["facts"]["match"]["label"] == "test-known-image"  # type: ignore[index]
    # The viewer's report captured the frame on screen at that moment, sealed with the rest.
    reported_case = (await moderator.http.get(f"/api/moderation/cases/{report_id}")).json()
    frame = decode(reported_case["evidence"])["frame"]
    assert isinstance(frame, dict)
    shown = base64.b64decode(str(frame["jpeg_base64"]))
    assert shown[:3] == b"\xff\xd8\xff"
    assert hashlib.sha256(shown).hexdigest() == frame["sha256"]
