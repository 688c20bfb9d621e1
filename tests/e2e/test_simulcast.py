"""Simulcast through Janus for real: Chromium publishes its fake camera as three VP8 layers
(rids h, m, l: full, half and quarter resolution), an aiortc viewer subscribes through the room
WebSocket, asks for the other qualities with {"type": "quality"}, and the frames it decodes
change size accordingly (1280 → 640 → 320 → 1280 pixels wide).

aiortc can't send simulcast, so the publisher is Chromium (Debian's, headless, the fake capture
device): the test drives its RTCPeerConnection through Playwright and relays its SDP over the
performer's room WebSocket exactly as the studio page does. Janus reads rids in the order
high, medium, low (its default ``rid_order``), which is the order sendEncodings lists them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.e2e.conftest import Person as BrowserPerson
from tests.integration.rooms.conftest import AppServer
from tests.integration.rooms.media import add_remote_candidate, rtc_config
from tests.integration.rooms.people import RoomConn, live_stream, sign_up

pytestmark = pytest.mark.slow

# The fake camera at 1280x720: Chromium sends a VP8 simulcast layer for each encoding only when
# the captured frame is large enough (its simulcast table allows 3 layers from 960x540 up).
CAPTURE = {"width": 1280, "height": 720, "fps": 20}

PUBLISH = """async ({width, height, fps}) => {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: false,
    video: {width: {exact: width}, height: {exact: height}, frameRate: {ideal: fps}},
  });
  const track = media.getVideoTracks()[0];
  // Keep every layer's size when the (loaded, 2-core) CPU struggles: drop frames instead.
  track.contentHint = 'detail';
  const pc = new RTCPeerConnection({iceServers: []});
  window.publisher = pc;
  pc.addTransceiver(track, {
    direction: 'sendonly',
    sendEncodings: [
      {rid: 'h', maxBitrate: 1200000},
      {rid: 'm', maxBitrate: 400000, scaleResolutionDownBy: 2},
      {rid: 'l', maxBitrate: 120000, scaleResolutionDownBy: 4},
    ],
  });
  await pc.setLocalDescription(await pc.createOffer());
  // Janus gets the offer with every candidate in it (no trickle from this side).
  await new Promise(done => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') done();
    });
  });
  return {sdp: pc.localDescription.sdp, capture: track.getSettings()};
}"""

ANSWER = "sdp => window.publisher.setRemoteDescription({type: 'answer', sdp})"

ADD_CANDIDATE = """async candidate => {
  while (!window.publisher.remoteDescription) await new Promise(r => setTimeout(r, 20));
  await window.publisher.addIceCandidate(candidate);
}"""

# What Chromium is sending, per layer: rid → frame size and frames encoded so far.
LAYERS = """async () => {
  const layers = {};
  (await window.publisher.getStats()).forEach(s => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      layers[s.rid] = {
        width: s.frameWidth || 0, height: s.frameHeight || 0,
        frames: s.framesEncoded || 0, bytes: s.bytesSent || 0,
        limited: s.qualityLimitationReason || 'none', active: s.active,
      };
    }
  });
  return layers;
}"""


@dataclass
class Frames:
    """Every decoded frame's (arrival time, width, height)."""

    seen: list[tuple[float, int, int]] = field(default_factory=list)
    tasks: list[asyncio.Future[None]] = field(default_factory=list)

    def widths_since(self, since: float) -> list[int]:
        return [w for at, w, _ in self.seen if at >= since]


def record_sizes(pc: RTCPeerConnection) -> Frames:
    frames = Frames()

    @pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind != "video":
            return

        async def consume() -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                frames.seen.append((time.monotonic(), frame.width, frame.height))

        frames.tasks.append(asyncio.ensure_future(consume()))

    return frames


async def layers(page: Any) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = await page.evaluate(LAYERS)
    return result


async def wait_for_layers(page: Any, count: int, timeout: float) -> dict[str, dict[str, Any]]:
    """Until Chromium encodes frames on `count` layers of distinct sizes (its bandwidth
    estimate has to ramp up before it turns the upper layers on)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        seen = await layers(page)
        sending = {rid: s for rid, s in seen.items() if s["frames"] > 10 and s["width"] > 0}
        if len({s["width"] for s in sending.values()}) >= count:
            return seen
        await asyncio.sleep(0.5)
    pytest.fail(f"Chromium did not send {count} simulcast layers in {timeout} s: {seen}")


async def wait_for_width(frames: Frames, since: float, accept: Any, timeout: float) -> int:
    """The first frame after `since` whose width satisfies accept(width)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for width in frames.widths_since(since):
            if accept(width):
                return width
        await asyncio.sleep(0.1)
    tail = frames.seen[-5:]
    pytest.fail(f"no fitting frame within {timeout} s; last frames (t, w, h): {tail}")


async def expect_quality(room: RoomConn, substream: int) -> None:
    """Janus tells the viewer when its feed has switched (after the layer's next keyframe);
    an earlier switch's notice may still be on its way."""
    deadline = time.monotonic() + 20
    while (await room.expect("quality", timeout=deadline - time.monotonic()))[
        "substream"
    ] != substream:
        pass


async def test_viewer_switches_simulcast_quality_of_a_chromium_publisher(
    web_server: AppServer, new_person: Any
) -> None:
    performer = await sign_up(web_server, "performer", "performer")
    stream_id = await live_stream(performer, "Simulcast")

    # The performer's browser: the fake camera as three layers, signaled over the room socket.
    browser: BrowserPerson = await new_person(web_server.base_url)
    await browser.goto("/healthz")  # a page of the app's (secure) origin, for getUserMedia
    page = browser.page
    room: RoomConn = await performer.room(stream_id)
    room.on_ice = lambda c: page.evaluate(ADD_CANDIDATE, c) if c else asyncio.sleep(0)
    published = await page.evaluate(PUBLISH, CAPTURE)
    assert published["capture"]["width"] == CAPTURE["width"], published["capture"]
    assert "a=simulcast:send h;m;l" in published["sdp"], "Chromium offered no simulcast"
    await room.send({"type": "publish", "sdp": published["sdp"]})
    answer = await room.expect("answer", timeout=20)
    await page.evaluate(ANSWER, answer["sdp"])
    await room.expect("media_up", timeout=30)
    sent = await wait_for_layers(page, 3, timeout=60)
    print(f"chromium layers: {sent}")

    viewer_person = await sign_up(web_server, "viewer", "viewer")
    viewer = await viewer_person.room(stream_id)
    pc = RTCPeerConnection(rtc_config(viewer.welcome["ice_servers"], relay_only=False))
    viewer.on_ice = lambda c: add_remote_candidate(pc, c)
    frames = record_sizes(pc)
    try:
        await viewer.send({"type": "subscribe", "substream": 2})
        offer = await viewer.expect("offer", timeout=20)
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await viewer.send({"type": "answer", "sdp": pc.localDescription.sdp})
        await viewer.expect("subscribed", timeout=20)

        full = CAPTURE["width"]
        high = await wait_for_width(frames, 0, lambda w: w > full // 2, timeout=60)

        middle_at = time.monotonic()
        await viewer.send({"type": "quality", "substream": 1})
        await expect_quality(viewer, 1)
        middle = await wait_for_width(
            frames, middle_at, lambda w: full // 4 < w <= full // 2, timeout=30
        )

        switched_at = time.monotonic()
        await viewer.send({"type": "quality", "substream": 0})
        await expect_quality(viewer, 0)
        low = await wait_for_width(frames, switched_at, lambda w: w <= full // 4, timeout=30)
        # Once switched, the big layer stops: two seconds later only small frames arrive.
        await asyncio.sleep(2)
        settled = time.monotonic()
        await asyncio.sleep(2)
        after = frames.widths_since(settled)
        assert len(after) >= 10, f"only {len(after)} frames in 2 s on the low layer"
        assert max(after) <= full // 4, f"frames wider than the low layer: {sorted(set(after))}"

        back_at = time.monotonic()
        await viewer.send({"type": "quality", "substream": 2})
        await expect_quality(viewer, 2)
        again = await wait_for_width(frames, back_at, lambda w: w > full // 2, timeout=30)
        print(f"received widths: high {high}, middle {middle}, low {low}, high again {again}")
    finally:
        await pc.close()
        await viewer.close()
        await room.close()
        await performer.post(f"/api/streams/{stream_id}/end")
