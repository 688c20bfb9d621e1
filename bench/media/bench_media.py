"""Glass-to-glass latency publisher -> Janus -> N subscribers, and Janus CPU per subscriber.

Runs Janus from Debian's package with the repo's configs in its own network namespace (veth,
198.18.0.0/15 addresses, as the tests do; Janus and aiortc both skip loopback for ICE), one
aiortc publisher sending 320x240 synthetic video at 30 fps whose frames carry their send time
(monotonic ms drawn as 32 blocks), and N aiortc subscribers in this process. Signaling goes
straight through tipstream's Janus client (the app only relays it; the media path is the same).

Latency = arrival of the decoded frame at a subscriber - the time stamped into it. Janus CPU is
read from /proc over the measuring window; "per subscriber" is the slope between runs.

    sudo .venv/bin/python bench/media/bench_media.py --subscribers 1 10 50 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import av
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from tipstream.rooms import mediaservers
from tipstream.rooms.janus import Handle, JanusClient

WIDTH, HEIGHT, COLUMNS, ROWS = 320, 240, 8, 4
BW, BH = WIDTH // COLUMNS, HEIGHT // ROWS
CLK_TCK = os.sysconf("SC_CLK_TCK")


def now_ms() -> int:
    return int(time.monotonic() * 1000) & 0xFFFFFFFF


def stamped(stamp: int) -> av.VideoFrame:
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    luma = frame.planes[0]
    stride = luma.line_size
    rows = bytearray(stride * HEIGHT)
    for bit in range(32):
        value = 235 if (stamp >> bit) & 1 else 16
        bx, by = (bit % COLUMNS) * BW, (bit // COLUMNS) * BH
        for y in range(by, by + BH):
            rows[y * stride + bx : y * stride + bx + BW] = bytes([value]) * BW
    luma.update(bytes(rows))
    for plane in frame.planes[1:]:
        plane.update(b"\x80" * plane.buffer_size)
    return frame


def read_stamp(frame: av.VideoFrame) -> int:
    if frame.format.name != "yuv420p" or frame.width != WIDTH:
        frame = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
    luma = frame.planes[0]
    data, stride, stamp = bytes(luma), luma.line_size, 0
    for bit in range(32):
        cx, cy = (bit % COLUMNS) * BW + BW // 2, (bit // COLUMNS) * BH + BH // 2
        if data[cy * stride + cx] > 125:
            stamp |= 1 << bit
    return stamp


class StampTrack(VideoStreamTrack):
    async def recv(self) -> av.VideoFrame:  # type: ignore[override]
        pts, time_base = await self.next_timestamp()
        frame = stamped(now_ms())
        frame.pts, frame.time_base = pts, time_base
        return frame


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class Net:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        base = random.randrange(0, 2**17 // 4) * 4
        third, fourth = divmod(base, 256)
        prefix = f"198.{18 + third // 256}.{third % 256}"
        self.name, self.host_if, self.sfu_if = f"tsb{tag}", f"tsb{tag}h", f"tsb{tag}s"
        self.host_ip, self.sfu_ip = f"{prefix}.{fourth + 1}", f"{prefix}.{fourth + 2}"

    def __enter__(self) -> Net:
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.sfu_if)
        sh("ip", "link", "set", self.sfu_if, "netns", self.name)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        ns = ("ip", "netns", "exec", self.name)
        sh(*ns, "ip", "addr", "add", f"{self.sfu_ip}/30", "dev", self.sfu_if)
        sh(*ns, "ip", "link", "set", self.sfu_if, "up")
        sh(*ns, "ip", "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def subscribe(
    session_handle: Handle, pc: RTCPeerConnection, room: int, pin: str, feed: int
) -> None:
    event = await session_handle.message(
        {"request": "join", "ptype": "subscriber", "room": room, "pin": pin,
         "streams": [{"feed": feed}]}
    )  # fmt: skip
    assert event.jsep is not None
    await pc.setRemoteDescription(RTCSessionDescription(event.jsep["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    await session_handle.message(
        {"request": "start"}, jsep={"type": "answer", "sdp": pc.localDescription.sdp}
    )


async def run_one(
    client: JanusClient, admin_key: str, janus_pid: int, n: int, seconds: float
) -> dict[str, float]:
    session = await client.create_session()
    control = await session.attach()
    room, pin = secrets.randbelow(2**50) + 1, secrets.token_hex(8)
    await control.request(
        {"request": "create", "room": room, "admin_key": admin_key, "pin": pin,
         "publishers": 1, "bitrate": 1_000_000, "videocodec": "vp8"}
    )  # fmt: skip
    publisher = await session.attach()
    pub_pc = RTCPeerConnection()
    pub_pc.addTrack(StampTrack())
    await pub_pc.setLocalDescription(await pub_pc.createOffer())
    await publisher.message(
        {"request": "join", "ptype": "publisher", "room": room, "pin": pin, "id": 1}
    )
    answer = await publisher.message(
        {"request": "publish", "audio": False, "video": True},
        jsep={"type": "offer", "sdp": pub_pc.localDescription.sdp},
    )
    assert answer.jsep is not None
    await pub_pc.setRemoteDescription(RTCSessionDescription(answer.jsep["sdp"], "answer"))
    while True:  # subscribers can join once the publisher's media is up
        event = await asyncio.wait_for(publisher.events.get(), 15)
        if event is not None and event.kind == "webrtcup":
            break

    latencies: list[float] = []
    measuring = asyncio.Event()
    pcs: list[RTCPeerConnection] = []
    consumers: list[asyncio.Task[None]] = []

    def on_track(track: object) -> None:
        async def consume() -> None:
            while True:
                frame = await track.recv()  # type: ignore[attr-defined]
                arrived = now_ms()
                if measuring.is_set():
                    latencies.append((arrived - read_stamp(frame)) & 0xFFFFFFFF)

        consumers.append(asyncio.create_task(consume()))

    for _ in range(n):
        handle = await session.attach()
        pc = RTCPeerConnection()
        pc.on("track", on_track)
        await subscribe(handle, pc, room, pin, 1)
        pcs.append(pc)
    await asyncio.sleep(3)  # ICE, DTLS, first keyframes
    cpu0, t0, own0 = cpu_seconds(janus_pid), time.monotonic(), time.process_time()
    measuring.set()
    await asyncio.sleep(seconds)
    measuring.clear()
    cpu1, t1, own1 = cpu_seconds(janus_pid), time.monotonic(), time.process_time()
    for task in consumers:
        task.cancel()
    for pc in [pub_pc, *pcs]:
        await pc.close()
    await control.request({"request": "destroy", "room": room})
    await session.destroy()
    lat = sorted(x for x in latencies if x < 60_000)
    expected = n * 30 * seconds
    return {
        "subscribers": n,
        "frames": len(lat),
        "delivered_pct": 100 * len(lat) / expected if expected else 0,
        "p50_ms": statistics.median(lat) if lat else float("nan"),
        "p95_ms": lat[int(len(lat) * 0.95)] if lat else float("nan"),
        "janus_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "bench_cpu_pct": 100 * (own1 - own0) / (t1 - t0),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark makes a network namespace for Janus")
    keys = {k: secrets.token_urlsafe(24) for k in ("api", "admin", "key")}
    with Net() as net, tempfile.TemporaryDirectory() as tmp:
        etc = Path(tmp) / "etc"
        mediaservers.render_janus(
            mediaservers.JanusConfig(
                api_secret=keys["api"], admin_secret=keys["admin"], admin_key=keys["key"],
                ws_ip=net.sfu_ip, rtp_port_range="20000-23999", ice_enforce_list=net.sfu_if,
                debug_level=2,
            ),
            etc,
        )  # fmt: skip
        command = ["ip", "netns", "exec", net.name, *mediaservers.janus_command(etc)]
        with (Path(tmp) / "janus.log").open("wb") as log:
            # Started once before any measuring; blocking here costs nothing.
            janus = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
        try:
            client = JanusClient(f"ws://{net.sfu_ip}:8188", keys["api"], timeout_seconds=10)
            for _ in range(100):
                try:
                    await client.start()
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            janus_pid = janus.pid  # `ip netns exec` execs janus: same pid
            idle0, t0 = cpu_seconds(janus_pid), time.monotonic()
            await asyncio.sleep(2)
            idle = 100 * (cpu_seconds(janus_pid) - idle0) / (time.monotonic() - t0)
            print(f"janus idle cpu: {idle:.1f}%")
            print(
                f"{'subs':>5} {'frames':>7} {'deliv%':>7} {'p50 ms':>7} {'p95 ms':>7} "
                f"{'janus cpu%':>10} {'per sub%':>8} {'bench cpu%':>10}"
            )
            for n in args.subscribers:
                r = await run_one(client, keys["key"], janus_pid, n, args.seconds)
                per_sub = (r["janus_cpu_pct"] - idle) / n
                print(
                    f"{n:>5} {r['frames']:>7} {r['delivered_pct']:>7.1f} {r['p50_ms']:>7.1f} "
                    f"{r['p95_ms']:>7.1f} {r['janus_cpu_pct']:>10.1f} {per_sub:>8.2f} "
                    f"{r['bench_cpu_pct']:>10.1f}",
                    flush=True,
                )
            await client.close()
        finally:
            janus.terminate()
            janus.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
