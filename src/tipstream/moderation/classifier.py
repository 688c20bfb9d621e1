"""The fast chat classifier: alt-profanity-check's linear model, shipped in its wheel.

Loading it takes about 2 s (joblib unpickles the vectorizer and the model), so it is loaded
once per process, the first time it is needed (or by ``warm``), under a lock so concurrent
first messages load it once. A single call costs a few milliseconds; scoring runs in a worker
thread so the event loop keeps serving other sockets meanwhile.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

_lock = threading.Lock()
_predict: Callable[[Sequence[str]], Any] | None = None
WORD = re.compile(r"\w[\w'*-]*")


def _load() -> Callable[[Sequence[str]], Any]:
    global _predict
    with _lock:
        if _predict is None:
            from profanity_check import predict_prob

            _predict = predict_prob
        return _predict


def warm() -> None:
    """Load the model now (at worker start) rather than on the first message."""
    _load()


def score_sync(texts: Sequence[str]) -> list[float]:
    """The probability that each text is toxic/profane, 0..1 (one batched call)."""
    if not texts:
        return []
    return [float(p) for p in _load()(list(texts))]


async def score(text: str) -> float:
    return (await asyncio.to_thread(score_sync, [text]))[0]


def mask_sync(text: str, threshold: float) -> str:
    """The text with every word that scores at or above the threshold replaced by asterisks
    (all words scored in one batch)."""
    words = list(WORD.finditer(text))
    if not words:
        return text
    scores = score_sync([m.group() for m in words])
    out, last = [], 0
    for match, value in zip(words, scores, strict=True):
        out.append(text[last : match.start()])
        out.append("*" * len(match.group()) if value >= threshold else match.group())
        last = match.end()
    out.append(text[last:])
    return "".join(out)


async def mask(text: str, threshold: float) -> str:
    return await asyncio.to_thread(mask_sync, text, threshold)
