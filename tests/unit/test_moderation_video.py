"""PDQ against the reference implementation's output, hash-list files, and NudeNet on frames the
test generates (BGR, as the worker hands them over)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tipstream.config import ModerationSettings, Settings
from tipstream.moderation import pdq, video


def _blocks(seed: int) -> np.ndarray:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (91, 161, 3)).astype(np.uint8)
    return np.kron(img, np.ones((4, 4, 1), dtype=np.uint8))[:360, :640].copy()


def test_pdq_matches_the_reference_implementation() -> None:
    # Expected value computed with pdqhash 0.2.8 (Meta's C++ PDQ): same bits, same order.
    digest = pdq.hash_rgb(_blocks(7))
    assert digest.hex == "c847e28c9d20556d6073a4f0333fb2cc1dacd35684f52b75153291db09ef73ca"
    assert digest.quality == 100


def test_pdq_is_robust_to_small_changes_and_tells_images_apart() -> None:
    image = _blocks(7)
    noisy = np.clip(
        image.astype(int) + np.random.default_rng(1).integers(-8, 9, image.shape), 0, 255
    )
    a = pdq.hash_rgb(image).bits
    assert pdq.distance(a, pdq.hash_rgb(noisy.astype(np.uint8)).bits) <= 31
    assert pdq.distance(a, pdq.hash_rgb(_blocks(8)).bits) > 64
    assert pdq.hash_bgr(image[..., ::-1]).hex == pdq.hash_rgb(image).hex


def test_hash_list_format_and_matching(tmp_path: Path) -> None:
    image_hash = pdq.hash_rgb(_blocks(7)).hex
    listed = tmp_path / "list.pdq"
    listed.write_text(f"# comment\n\n{image_hash.upper()}  known image\n{'f' * 64}\n")
    hashes = pdq.HashList.load([str(listed)])
    assert len(hashes) == 2
    match = hashes.best_match(pdq.bits_of_hex(image_hash), 31)
    assert match is not None and match.label == "known image" and match.distance == 0
    assert match.source == "list.pdq:3"
    assert hashes.best_match(pdq.hash_rgb(_blocks(9)).bits, 31) is None
    bad = tmp_path / "bad.pdq"
    bad.write_text("nothex\n")
    with pytest.raises(pdq.HashListError, match=r"bad\.pdq:1"):
        pdq.HashList.load([str(bad)])


def test_nudenet_on_generated_frames() -> None:
    bgr = _blocks(3)[..., ::-1].copy()
    detections = video.detect_nudity(bgr)
    assert isinstance(detections, list)
    assert not [d for d in detections if d["class"].endswith("_EXPOSED") and d["score"] > 0.6]
    settings = Settings(moderation=ModerationSettings())
    verdict = video.analyse(settings, pdq.HashList([]), bgr, adult=False)
    assert verdict.nudity == [] and verdict.match is None
    assert 0 < verdict.nudenet_seconds <= verdict.seconds
