"""The optional higher-quality chat tier: a Detoxify model, loaded only from files the operator
put on the box, never fetched.

Detoxify (torch + transformers) normally downloads its checkpoint and a Hugging Face base model
config by name. Here both come from configured paths: ``moderation.detoxify_checkpoint`` (a
checkpoint in Detoxify's format: a torch file holding ``config`` — the architecture and class
names it was trained with — and ``state_dict``) and ``moderation.detoxify_config_dir`` (the
Hugging Face config and tokenizer files of its base model, as ``save_pretrained`` writes them).
The Hugging Face libraries run offline (HF_HUB_OFFLINE, local_files_only): a missing file is an
error naming it, never a download.

Detoxify's own loader also asks for the base model's config by its hub name even when given a
local config; the name is pointed at the local directory instead, so the rest of its loading
code (model class, tokenizer class, state dict) is used unchanged.

Torch is heavy: it is imported by the worker that scores, when the model is first loaded, never
by the app.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tipstream.config import Settings

_lock = threading.Lock()
_loaded: dict[tuple[str, str], Scorer] = {}
# What a Hugging Face config directory needs: the model's config and a tokenizer's files.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")


class DetoxifyUnavailable(Exception):
    """The Detoxify tier is configured but cannot load: the message says which file and why."""


@dataclass(frozen=True)
class DetoxifyPaths:
    checkpoint: Path
    config_dir: Path


def configured(settings: Settings) -> DetoxifyPaths | None:
    """The tier's two paths, or None when it is off; half a configuration is an error."""
    moderation = settings.moderation
    checkpoint, config_dir = moderation.detoxify_checkpoint, moderation.detoxify_config_dir
    if checkpoint is None and config_dir is None:
        return None
    if checkpoint is None or config_dir is None:
        raise DetoxifyUnavailable(
            "moderation.detoxify_checkpoint and moderation.detoxify_config_dir go together: "
            "set both (a local checkpoint and its local Hugging Face config) or neither"
        )
    return DetoxifyPaths(Path(checkpoint), Path(config_dir))


def check_files(paths: DetoxifyPaths) -> None:
    """Cheap checks of what loading needs (for tipctl doctor and the worker's start)."""
    if not paths.checkpoint.is_file():
        raise DetoxifyUnavailable(
            f"moderation.detoxify_checkpoint: no checkpoint file at {paths.checkpoint}"
        )
    if not os.access(paths.checkpoint, os.R_OK):
        raise DetoxifyUnavailable(f"moderation.detoxify_checkpoint: {paths.checkpoint} unreadable")
    if not paths.config_dir.is_dir():
        raise DetoxifyUnavailable(
            f"moderation.detoxify_config_dir: no directory at {paths.config_dir}"
        )
    if not (paths.config_dir / "config.json").is_file():
        raise DetoxifyUnavailable(
            f"moderation.detoxify_config_dir: {paths.config_dir} has no config.json "
            "(the base model's Hugging Face config, as save_pretrained writes it)"
        )
    if not any((paths.config_dir / name).is_file() for name in TOKENIZER_FILES):
        raise DetoxifyUnavailable(
            f"moderation.detoxify_config_dir: {paths.config_dir} has no tokenizer files "
            f"(one of {', '.join(TOKENIZER_FILES)})"
        )


class Scorer:
    """A loaded Detoxify model: per-label probabilities (0..1) for a batch of texts."""

    def __init__(self, detoxify: Any, labels: list[str]) -> None:
        self.detoxify = detoxify
        self.labels = labels
        self._lock = threading.Lock()  # one forward pass at a time per model

    def score(self, texts: list[str]) -> list[dict[str, float]]:
        if not texts:
            return []
        with self._lock:
            found = self.detoxify.predict(texts)
        # Detoxify squeezes a batch of one to plain floats.
        columns = {k: v if isinstance(v, list) else [v] for k, v in found.items()}
        return [
            {label: float(columns[label][i]) for label in self.labels} for i in range(len(texts))
        ]


def load(paths: DetoxifyPaths) -> Scorer:
    """Load the checkpoint and its base model's config and tokenizer, offline."""
    check_files(paths)
    # Set before the Hugging Face libraries are imported: they read these once.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import torch
        from detoxify.detoxify import Detoxify, get_model_and_tokenizer  # type: ignore[import-untyped]
    except ImportError as exc:
        raise DetoxifyUnavailable(
            f"the Detoxify tier needs the 'detoxify' extra (torch, transformers): {exc}"
        ) from None
    try:
        # Detoxify's checkpoints are pickles (weights_only=False): the operator's own file.
        loaded = torch.load(paths.checkpoint, map_location="cpu", weights_only=False)
        arch = dict(loaded["config"]["arch"]["args"])
        classes = list(loaded["config"]["dataset"]["args"]["classes"])
        state_dict = loaded["state_dict"]
    except (KeyError, TypeError) as exc:
        raise DetoxifyUnavailable(
            f"moderation.detoxify_checkpoint: {paths.checkpoint} is not a Detoxify checkpoint "
            f"(needs config.arch.args, config.dataset.args.classes and state_dict; missing {exc})"
        ) from None
    except Exception as exc:
        raise DetoxifyUnavailable(
            f"moderation.detoxify_checkpoint: {paths.checkpoint} does not load: {exc}"
        ) from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no terminal in a worker
    local = str(paths.config_dir.resolve())
    arch["model_type"] = local  # its hub name would be looked up, even offline
    try:
        model, tokenizer = get_model_and_tokenizer(
            **arch, state_dict=state_dict, huggingface_config_path=local
        )
    except Exception as exc:
        raise DetoxifyUnavailable(
            f"moderation.detoxify_config_dir: {paths.config_dir} does not fit "
            f"{paths.checkpoint}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    # Detoxify's own names for the labels, as its constructor sets them.
    renamed = {"toxic": "toxicity", "identity_hate": "identity_attack"}
    renamed["severe_toxic"] = "severe_toxicity"
    labels = [renamed.get(c, c) for c in classes]
    detoxify = Detoxify.__new__(Detoxify)  # its __init__ would fetch by name
    detoxify.model, detoxify.tokenizer, detoxify.class_names = model, tokenizer, labels
    detoxify.device = "cpu"
    model.to("cpu")
    model.eval()
    torch.set_num_threads(1)  # a worker thread scores; one core per worker stays predictable
    return Scorer(detoxify, labels)


def scorer(settings: Settings) -> Scorer:
    """The process's model for these settings, loaded once (under a lock)."""
    paths = configured(settings)
    if paths is None:
        raise DetoxifyUnavailable("the Detoxify tier is off (moderation.detoxify_checkpoint)")
    key = (str(paths.checkpoint), str(paths.config_dir))
    with _lock:
        if key not in _loaded:
            _loaded[key] = load(paths)
        return _loaded[key]


def top(scores: dict[str, float], labels: list[str]) -> tuple[str, float]:
    """The highest of the considered labels (all when none are listed)."""
    considered = {k: v for k, v in scores.items() if k in labels} or scores
    label = max(considered, key=lambda k: considered[k])
    return label, considered[label]


async def doctor_check(settings: Settings) -> str:
    """tipctl doctor's line for the tier: off, or its files in place (loading is the worker's)."""
    paths = configured(settings)
    if paths is None:
        return "off (optional: moderation.detoxify_checkpoint + detoxify_config_dir)"
    check_files(paths)
    require_extra()
    return f"checkpoint {paths.checkpoint}, config {paths.config_dir}"


def require_extra() -> None:
    """The tier's libraries are installed (the 'detoxify' extra); checked without importing
    torch, which takes seconds."""
    import importlib.util

    missing = [n for n in ("torch", "transformers", "detoxify") if not importlib.util.find_spec(n)]
    if missing:
        raise DetoxifyUnavailable(
            f"the 'detoxify' extra is not installed (missing: {', '.join(missing)})"
        )
