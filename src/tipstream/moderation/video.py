"""What the moderator worker does with one sampled frame: NudeNet's detections and the PDQ hash
matched against the operator's hash lists, then the room's policy decides.

NudeNet (its 320n ONNX model ships in the wheel) takes BGR arrays; the detector is loaded once
per process and runs single-threaded, so one worker core serves many rooms predictably.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tipstream.config import Settings
from tipstream.moderation import pdq

_lock = threading.Lock()
_detector: Any = None


def detector() -> Any:
    global _detector
    with _lock:
        if _detector is None:
            # Heavy: loaded by the moderator worker only.
            import onnxruntime
            from nudenet import NudeDetector

            nude = NudeDetector()
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            nude.onnx_session = onnxruntime.InferenceSession(
                nude.onnx_session._model_path, options, providers=["CPUExecutionProvider"]
            )
            _detector = nude
        return _detector


def detect_nudity(bgr: NDArray[np.uint8]) -> list[dict[str, Any]]:
    """NudeNet's detections: [{"class": label, "score": 0..1, "box": [x, y, w, h]}]."""
    found: list[dict[str, Any]] = detector().detect(np.ascontiguousarray(bgr))
    return found


@dataclass
class FrameVerdict:
    hash: pdq.PdqHash
    detections: list[dict[str, Any]]
    match: pdq.Match | None
    nudity: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    nudenet_seconds: float = 0.0


def analyse(
    settings: Settings, hashes: pdq.HashList, bgr: NDArray[np.uint8], *, adult: bool
) -> FrameVerdict:
    """NudeNet and PDQ on one BGR frame; `nudity` holds the detections this room may not show."""
    started = time.perf_counter()
    moderation = settings.moderation
    digest = pdq.hash_bgr(bgr)
    match = None
    if digest.quality >= moderation.hash_min_quality:
        match = hashes.best_match(digest.bits, moderation.hash_max_distance)
    nudenet_started = time.perf_counter()
    detections = detect_nudity(bgr)
    nudenet_seconds = time.perf_counter() - nudenet_started
    forbidden = set(moderation.nudity_labels)
    nudity = (
        []
        if adult
        else [
            d
            for d in detections
            if d.get("class") in forbidden
            and float(d.get("score", 0)) >= moderation.nudity_threshold
        ]
    )
    return FrameVerdict(
        digest, detections, match, nudity, time.perf_counter() - started, nudenet_seconds
    )
