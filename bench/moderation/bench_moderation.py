"""Moderation benchmarks, pinned to one CPU core; prints its figures.

- chat classifier: messages/s and p50/p99 of one message per call (what the room socket does),
  and messages/s batched;
- sampler: frames/s per core through the worker's whole per-frame path (VP8 decode of a
  640x360 frame + PDQ + NudeNet) against NudeNet's raw inference on the same frames (the ratio);
- detection latency: from a sampled frame's arrival (decoded) to the verdict, p50/p99 (the
  takedown itself, one UPDATE and a Janus destroy, is measured end to end by the slow test);
- rooms per core at the default interval: a watched room costs VP8 decoding of every frame
  (aiortc decodes all of them) plus one analysis per interval.

    .venv/bin/python bench/moderation/bench_moderation.py [--frames 60] [--messages 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np

from tipstream.config import ModerationSettings, Settings
from tipstream.moderation import classifier, pdq, video

WIDTH, HEIGHT, FPS = 640, 360, 30
MESSAGES = [
    "what a lovely show tonight",
    "hello from Berlin!",
    "you are a fucking idiot",
    "can you play that song again?",
    "shut up bitch",
    "tip goal almost there",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_chat(count: int) -> None:
    started = time.perf_counter()
    classifier.warm()
    load = time.perf_counter() - started
    times = []
    for i in range(count):
        t = time.perf_counter()
        classifier.score_sync([MESSAGES[i % len(MESSAGES)]])
        times.append(time.perf_counter() - t)
    batch = [MESSAGES[i % len(MESSAGES)] for i in range(1000)]
    t = time.perf_counter()
    classifier.score_sync(batch)
    batched = 1000 / (time.perf_counter() - t)
    print(f"chat classifier: model load {load:.2f} s")
    print(
        f"chat classifier, one message per call: {count / sum(times):,.0f} msgs/s, "
        f"p50 {pct(times, 0.5) * 1e3:.2f} ms, p99 {pct(times, 0.99) * 1e3:.2f} ms"
    )
    print(f"chat classifier, batches of 1000: {batched:,.0f} msgs/s")


def synthetic_frames(count: int) -> list[np.ndarray[Any, Any]]:
    """Moving, textured frames (a plain image would flatter VP8 and PDQ)."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (HEIGHT // 8 + 1, WIDTH // 8 + 1, 3)).astype(np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    frames = []
    for i in range(count):
        shifted = np.roll(big, i * 3, axis=1)[:HEIGHT, :WIDTH]
        noise = rng.integers(-10, 11, shifted.shape)
        frames.append(np.clip(shifted.astype(int) + noise, 0, 255).astype(np.uint8))
    return frames


def vp8_packets(frames: list[np.ndarray[Any, Any]]) -> list[av.Packet]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base = Fraction(1, FPS)
    codec.bit_rate = 1_500_000
    packets: list[av.Packet] = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets.extend(codec.encode(frame))
    packets.extend(codec.encode(None))
    return packets


def bench_sampler(count: int, interval: float) -> None:
    frames = synthetic_frames(count)
    packets = vp8_packets(frames)
    settings = Settings(moderation=ModerationSettings())
    hashes = pdq.HashList([(pdq.hash_rgb(frames[0]).hex[::-1], "other", "bench")])
    video.detector()
    bgr_frames = [f[..., ::-1].copy() for f in frames]
    video.detect_nudity(bgr_frames[0])  # warm-up

    t = time.perf_counter()
    for bgr in bgr_frames:
        video.detect_nudity(bgr)
    raw = time.perf_counter() - t

    decoder = av.CodecContext.create("libvpx", "r")
    decode_times, latencies = [], []
    t = time.perf_counter()
    for packet in packets:
        d0 = time.perf_counter()
        decoded = decoder.decode(packet)
        decode_times.append(time.perf_counter() - d0)
        for frame in decoded:
            a0 = time.perf_counter()
            bgr = frame.to_ndarray(format="bgr24")
            video.analyse(settings, hashes, bgr, adult=False)
            latencies.append(time.perf_counter() - a0)
    whole = time.perf_counter() - t
    decode_per_frame = sum(decode_times) / max(len(latencies), 1)
    analyse_per_frame = statistics.mean(latencies)
    raw_fps, sampler_fps = count / raw, len(latencies) / whole
    per_room = FPS * decode_per_frame + analyse_per_frame / interval  # core-seconds per second
    print(f"sampler frames: {count} x {WIDTH}x{HEIGHT}, VP8 {len(packets)} packets")
    print(f"NudeNet raw inference: {raw_fps:.1f} frames/s per core ({raw / count * 1e3:.1f} ms)")
    print(
        f"whole sampler (decode + PDQ + NudeNet): {sampler_fps:.1f} frames/s per core; "
        f"ratio to raw {sampler_fps / raw_fps:.2f}"
    )
    print(
        f"detection latency (decoded frame to verdict): p50 {pct(latencies, 0.5) * 1e3:.1f} ms, "
        f"p99 {pct(latencies, 0.99) * 1e3:.1f} ms; VP8 decode {decode_per_frame * 1e3:.2f} ms/frame"
    )
    print(
        f"rooms per core at one sample every {interval:g} s ({FPS} fps decoded per room): "
        f"{1 / per_room:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument(
        "--interval", type=float, default=ModerationSettings().sample_interval_seconds
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"pinned to core {os.sched_getaffinity(0)}; load average {os.getloadavg()[0]:.2f}")
    bench_chat(args.messages)
    bench_sampler(args.frames, args.interval)


if __name__ == "__main__":
    main()
