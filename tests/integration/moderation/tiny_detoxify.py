"""A tiny Detoxify model the tests build themselves: nothing is downloaded.

A two-layer BERT with random weights, a word-level tokenizer from a small vocabulary, saved as
a Hugging Face config directory (config.json + tokenizer files) and a checkpoint in Detoxify's
format (its training config, class names and state dict). The classifier's weights are zero
and its biases chosen, so every text gets the same, known scores: sigmoid(bias) per label.
"""

from __future__ import annotations

import math
from pathlib import Path

# Detoxify's "original" model's classes, in its checkpoint's own names.
CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
LABELS = ["toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "a", "nice", "person",
         "idiot", "hello", "world", "what", "!", ".", ","]  # fmt: skip


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def build_config_dir(directory: Path, *, hidden_size: int = 16) -> Path:
    from transformers import BertConfig, BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=64,
        num_labels=len(CLASSES),
    )
    config.save_pretrained(directory)
    BertTokenizer(vocab={word: i for i, word in enumerate(VOCAB)}).save_pretrained(directory)
    return directory


def build_checkpoint(path: Path, config_dir: Path, biases: list[float]) -> Path:
    """A checkpoint whose scores are sigmoid(biases[i]) for every text."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig.from_pretrained(config_dir))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(biases))
    torch.save(
        {
            "config": {
                "arch": {
                    "args": {
                        # The hub name Detoxify's loader would fetch: it must not.
                        "model_type": "bert-base-uncased",
                        "model_name": "BertForSequenceClassification",
                        "tokenizer_name": "BertTokenizer",
                        "num_classes": len(CLASSES),
                    }
                },
                "dataset": {"args": {"classes": CLASSES}},
            },
            "state_dict": model.state_dict(),
        },
        path,
    )
    return path


TOXIC_BIASES = [4.0, -1.0, 2.0, -4.0, 3.0, -4.0]  # toxicity 0.982, the highest
CLEAN_BIASES = [-4.0] * len(CLASSES)  # every label 0.018
