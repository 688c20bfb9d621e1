"""PDQ perceptual hashing (Meta's PDQ, https://github.com/facebook/ThreatExchange/tree/main/pdq),
on numpy, following the reference implementation step by step:

1. luminance Y = 0.299 R + 0.587 G + 0.114 B (float);
2. two passes of a Jarosz box filter (rows then columns), windows ceil(size / 128);
3. decimation to 64x64 by sampling at ((i + 0.5) * size / 64);
4. the 16x16 low-frequency block of the 2-D DCT-II (D A D^T, D 16x64);
5. bit i*16+j set where that coefficient is above the median (the 128th smallest value).

The hash is 256 bits, written as 64 hex digits (the reference's Hash256 string: bit k is bit k
of the number the hex spells). Quality (0..100) measures the image's gradients; flat frames
(quality under ~50) make hashes that match too easily and should not be matched.

Hash lists (operator files): one hash per line, 64 hex digits, optionally followed by
whitespace and a label; blank lines and lines starting with # are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

HASH_BITS = 256
_SCALE = math.sqrt(2.0 / 64)
_ROWS, _COLS = np.meshgrid(np.arange(16), np.arange(64), indexing="ij")
_DCT = _SCALE * np.cos((math.pi / 128.0) * (_ROWS + 1) * (2 * _COLS + 1))


class HashListError(ValueError):
    pass


def _window(old: int, new: int = 64) -> int:
    return (old + 2 * new - 1) // (2 * new)


def _box(values: NDArray[np.float64], window: int, axis: int) -> NDArray[np.float64]:
    """The reference's box_one_d_float along an axis: a mean over [k - left, k + right],
    truncated at the edges (left = window - half, right = half - 1, half = (window + 2) // 2)."""
    half = (window + 2) // 2
    left, right = window - half, half - 1
    n = values.shape[axis]
    moved = np.moveaxis(values, axis, -1)
    sums = np.concatenate([np.zeros((*moved.shape[:-1], 1)), np.cumsum(moved, axis=-1)], axis=-1)
    k = np.arange(n)
    lo = np.maximum(k - left, 0)
    hi = np.minimum(k + right + 1, n)
    out = (sums[..., hi] - sums[..., lo]) / (hi - lo)
    return np.moveaxis(out, -1, axis)


@dataclass(frozen=True)
class PdqHash:
    bits: NDArray[np.bool_]  # 256, bit k = coefficient (k // 16, k % 16) above the median
    quality: int

    @property
    def hex(self) -> str:
        value = 0
        for k in np.flatnonzero(self.bits):
            value |= 1 << int(k)
        return f"{value:064x}"


def hash_rgb(rgb: NDArray[np.uint8]) -> PdqHash:
    """PDQ of an H x W x 3 RGB image."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError("an RGB image (H x W x 3) is needed")
    pixels = rgb[..., :3].astype(np.float64)
    luma = 0.299 * pixels[..., 0] + 0.587 * pixels[..., 1] + 0.114 * pixels[..., 2]
    rows, cols = luma.shape
    along_rows, along_cols = _window(cols), _window(rows)
    for _ in range(2):
        luma = _box(luma, along_rows, axis=1)
        luma = _box(luma, along_cols, axis=0)
    ri = ((np.arange(64) + 0.5) * rows / 64).astype(int)
    ci = ((np.arange(64) + 0.5) * cols / 64).astype(int)
    small = luma[np.ix_(ri, ci)]
    quality = _quality(small)
    coefficients = _DCT @ small @ _DCT.T
    flat = coefficients.reshape(-1)
    median = np.partition(flat, 127)[127]
    return PdqHash(bits=flat > median, quality=quality)


def hash_bgr(bgr: NDArray[np.uint8]) -> PdqHash:
    return hash_rgb(bgr[..., ::-1])


def _quality(small: NDArray[np.float64]) -> int:
    vertical = np.abs(np.trunc((small[:-1, :] - small[1:, :]) * 100 / 255)).sum()
    horizontal = np.abs(np.trunc((small[:, :-1] - small[:, 1:]) * 100 / 255)).sum()
    return min(int((vertical + horizontal) / 90), 100)


def bits_of_hex(text: str) -> NDArray[np.bool_]:
    value = int(text, 16)
    return np.array([(value >> k) & 1 for k in range(HASH_BITS)], dtype=bool)


def distance(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> int:
    return int(np.count_nonzero(a != b))


@dataclass(frozen=True)
class Match:
    label: str
    distance: int
    source: str


class HashList:
    """Every hash of the operator's files, matched by Hamming distance."""

    def __init__(self, entries: list[tuple[str, str, str]]) -> None:
        self.labels = [label for _, label, _ in entries]
        self.sources = [source for _, _, source in entries]
        self.matrix = (
            np.stack([bits_of_hex(h) for h, _, _ in entries])
            if entries
            else np.zeros((0, HASH_BITS), dtype=bool)
        )

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def load(cls, paths: list[str]) -> HashList:
        entries: list[tuple[str, str, str]] = []
        for name in paths:
            path = Path(name)
            for number, raw in enumerate(path.read_text().splitlines(), 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split(None, 1)
                digest = parts[0].lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise HashListError(f"{path}:{number}: not a 64-hex-digit PDQ hash")
                label = parts[1].strip() if len(parts) > 1 else ""
                entries.append((digest, label, f"{path.name}:{number}"))
        return cls(entries)

    def best_match(self, bits: NDArray[np.bool_], max_distance: int) -> Match | None:
        if not len(self):
            return None
        distances = np.count_nonzero(self.matrix != bits, axis=1)
        best = int(np.argmin(distances))
        if int(distances[best]) > max_distance:
            return None
        return Match(self.labels[best], int(distances[best]), self.sources[best])
