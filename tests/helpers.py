"""Checks only the tests use: audio preflight, LoRA placement, category coverage, padding."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from audsemthinker import format as fmt
from audsemthinker.audio import AudioError, _check_path, load_audio, wav_shortfall
from audsemthinker.rewards.registry import completion_text
from audsemthinker.rewards.semantic import _check_targets, elements_of


def audio_problem(path: str | Path) -> str | None:
    """A quick check before a long run: the :data:`REASONS` entry that makes ``path`` unusable,
    or None.

    Reads the header only (libsndfile) for the formats it knows, which catches a missing,
    empty, truncated-header or non-audio file in well under a millisecond; anything libsndfile
    cannot open goes through :func:`load_audio` in full, so a format only the fallback decoder
    reads is not refused. A file whose samples break later still fails at load time.
    """
    import soundfile as sf

    try:
        path = _check_path(path)
    except AudioError as e:
        return e.reason
    try:
        info = sf.info(str(path))
        if info.format in ("WAV", "WAVEX") and wav_shortfall(path) > 0:
            return "truncated"
        return None if info.frames > 0 else "empty_file"
    except Exception:
        try:
            load_audio(path)
        except AudioError as e:
            return e.reason
        return None


def lora_module_names(model: nn.Module) -> list[str]:
    """Base-module names that carry a LoRA adapter."""
    out = []
    for name, m in model.named_modules():
        if hasattr(m, "lora_A") and isinstance(m.lora_A, nn.ModuleDict) and m.lora_A:
            out.append(re.sub(r"^base_model\.model\.", "", name))
    return out


def covers_all_targets(completion: Any, targets: Iterable[str] = fmt.CATEGORY_KEYS) -> bool:
    """Whether every target category has at least one element (a metric).

    Args:
        completion: plain or conversational completion.
        targets: category keys (:data:`format.CATEGORY_KEYS`).

    Raises:
        ValueError: unknown or empty targets.
    """
    targets = _check_targets(targets, "covers_all_targets")
    found = elements_of(completion_text(completion))
    return all(found.get(t) for t in targets)


def padding_fraction(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> float:
    """Share of a padded batch's positions that are padding, over batches of ``order``."""
    pad = total = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        total += max(batch) * len(batch)
        pad += max(batch) * len(batch) - sum(batch)
    return pad / total if total else 0.0
