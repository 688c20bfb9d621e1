"""The fast chat classifier: alt-profanity-check's linear model, shipped in its wheel.

Loading it takes about 2 s (joblib unpickles the vectorizer and the model), so it is loaded
once per process, the first time it is needed (or by ``warm``), under a lock so concurrent
first messages load it once. A single call costs a few milliseconds; scoring runs in a worker
thread so the event loop keeps serving other sockets meanwhile.

scikit-learn's own predict_proba pays several milliseconds of input checking per call, which
dominates for one chat message. ``LinearScorer`` evaluates the same model directly (TF-IDF with
l2 norm, then each calibrated LinearSVC's decision through its sigmoid, averaged): the same
probabilities (tested against predict_prob) in tens of microseconds.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_lock = threading.Lock()
_predict: Callable[[Sequence[str]], list[float]] | None = None
WORD = re.compile(r"\w[\w'*-]*")


class LinearScorer:
    """alt-profanity-check's TfidfVectorizer + CalibratedClassifierCV(LinearSVC, sigmoid),
    evaluated without scikit-learn's per-call overhead."""

    def __init__(self, vectorizer: Any, model: Any) -> None:
        if list(model.classes_) != [0, 1] or vectorizer.norm != "l2" or vectorizer.sublinear_tf:
            raise RuntimeError("alt-profanity-check's model is not the one LinearScorer knows")
        self.analyze = vectorizer.build_analyzer()
        self.vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        self.members = []
        for member in model.calibrated_classifiers_:
            estimator, calibrator = member.estimator, member.calibrators[0]
            coef = np.asarray(estimator.coef_, dtype=np.float64).reshape(-1)
            intercept = float(np.asarray(estimator.intercept_).reshape(-1)[0])
            self.members.append((coef, intercept, float(calibrator.a_), float(calibrator.b_)))

    def score_one(self, text: str) -> float:
        counts: dict[int, int] = {}
        for token in self.analyze(text):
            index = self.vocabulary.get(token)
            if index is not None:
                counts[index] = counts.get(index, 0) + 1
        indices = np.fromiter(counts, dtype=np.int64, count=len(counts))
        weights = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if counts:
            weights *= self.idf[indices]
            weights /= math.sqrt(float(np.dot(weights, weights)))
        total = 0.0
        for coef, intercept, a, b in self.members:
            decision = intercept + float(np.dot(coef[indices], weights))
            total += 1.0 / (1.0 + math.exp(a * decision + b))
        return total / len(self.members)

    def __call__(self, texts: Sequence[str]) -> list[float]:
        return [self.score_one(t) for t in texts]


def _load() -> Callable[[Sequence[str]], list[float]]:
    global _predict
    with _lock:
        if _predict is None:
            # About 2 s (joblib unpickling): loaded once, on demand.
            from profanity_check import profanity_check

            _predict = LinearScorer(profanity_check.vectorizer, profanity_check.model)
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
