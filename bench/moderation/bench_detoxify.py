"""The optional Detoxify tier's cost per message, pinned to one CPU core; prints its figures.

No real checkpoint can be fetched here, so the bench builds one of the released model's size:
Detoxify "original" is bert-base-uncased (12 layers, hidden 768, 110 M parameters) with a
6-label head; random weights cost the same time as trained ones. It is saved in Detoxify's
checkpoint format with a local config and tokenizer, and loaded through tipstream's own loader
(moderation/detox.py, offline), as the worker loads it. Then: one message per call (what the
worker's actor does) and batches.

    .venv/bin/python bench/moderation/bench_detoxify.py [--messages 100] [--layers 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

MESSAGES = [
    "what a lovely show tonight",
    "hello from Berlin, greetings to everyone in the room!",
    "you are such an idiot, nobody wants to watch this",
    "can you play that song again? the one from yesterday",
    "shut up",
    "tip goal almost there, come on everyone",
]
CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def build(root: Path, layers: int) -> tuple[Path, Path]:
    """A bert-base-sized Detoxify checkpoint and its config directory."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = sorted({w.strip("!?,.") for m in MESSAGES for w in m.lower().split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    config = BertConfig(num_hidden_layers=layers, num_labels=len(CLASSES))  # bert-base sizes
    config_dir = root / "config"
    config.save_pretrained(config_dir)
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(config_dir)
    model = BertForSequenceClassification(config)
    checkpoint = root / "bench.ckpt"
    arch = {
        "model_type": "bert-base-uncased",
        "model_name": "BertForSequenceClassification",
        "tokenizer_name": "BertTokenizer",
        "num_classes": len(CLASSES),
    }
    document = {"arch": {"args": arch}, "dataset": {"args": {"classes": CLASSES}}}
    torch.save({"config": document, "state_dict": model.state_dict()}, checkpoint)
    return checkpoint, config_dir


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"pinned to core {os.sched_getaffinity(0)}; load average {os.getloadavg()[0]:.2f}")
    from tipstream.moderation import detox

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, config_dir = build(Path(tmp), args.layers)
        size = checkpoint.stat().st_size / 1e6
        started = time.perf_counter()
        scorer = detox.load(detox.DetoxifyPaths(checkpoint, config_dir))
        load = time.perf_counter() - started
    print(f"detoxify: bert-base, {args.layers} layers, checkpoint {size:.0f} MB, load {load:.2f} s")
    scorer.score(MESSAGES)  # warm up
    times = []
    for i in range(args.messages):
        t = time.perf_counter()
        scorer.score([MESSAGES[i % len(MESSAGES)]])
        times.append(time.perf_counter() - t)
    print(
        f"detoxify, one message per call: {len(times) / sum(times):.1f} msgs/s, "
        f"p50 {statistics.median(times) * 1000:.1f} ms, p99 {pct(times, 0.99) * 1000:.1f} ms"
    )
    for size in (8, 32):
        batch = [MESSAGES[i % len(MESSAGES)] for i in range(size)]
        t = time.perf_counter()
        rounds = max(1, args.messages // size)
        for _ in range(rounds):
            scorer.score(batch)
        rate = rounds * size / (time.perf_counter() - t)
        print(f"detoxify, batches of {size}: {rate:.1f} msgs/s")


if __name__ == "__main__":
    main()
