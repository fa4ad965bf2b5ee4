"""Per-row work of the build loop: token counts and clips stored at their cap."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def load_tokenizer(tokenizer: Any) -> Any:
    """The tokenizer to count with: the one given (a processor's own) or loaded from a path."""
    if tokenizer is None or hasattr(tokenizer, "apply_chat_template"):
        return getattr(tokenizer, "tokenizer", tokenizer)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer))


def row_tokens(row: dict, tokenizer: Any, n_samples: int) -> dict[str, int]:
    """Text, audio and total tokens one row costs the thinker.

    The chat template renders one ``<|AUDIO|>`` placeholder per clip; the processor expands it
    to 25 tokens per second (:func:`audsemthinker.model.tokens.audio_tokens_for_frames`).
    """
    from audsemthinker.data.examples import audio_paths
    from audsemthinker.model.tokens import audio_tokens_for_frames

    messages = row.get("messages") or row.get("prompt")
    if not messages:
        from audsemthinker import format as fmt

        text = (row.get("prompts") or {}).get("audsem") or row.get("question") or ""
        messages = [{"role": "system", "content": [{"type": "text", "text": fmt.SYSTEM_PROMPT}]},
                    {"role": "user", "content": [{"type": "audio", "audio": row["audio"]},
                                                 {"type": "text", "text": text}]}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    n_clips = len(set(audio_paths(row))) or 1  # the audio column repeats the message's path
    text = len(tokenizer(rendered, add_special_tokens=False)["input_ids"]) - n_clips
    audio = audio_tokens_for_frames(math.ceil(n_samples / 160)) * n_clips if n_samples else 0
    return {"text": text, "audio": audio, "total": text + audio}


def longer_than(path: str, seconds: float) -> bool:
    """Whether the source file holds more than ``seconds`` (True when its header is unread)."""
    import soundfile as sf

    try:
        return sf.info(str(path)).duration > seconds + 1e-6
    except Exception:
        return True


def store_capped(row: dict, wave: Any, audio_root: Path, item_id: str) -> dict:
    """``row`` pointing at a copy of its clip cut to what ``load_audio`` kept.

    The truncated clip is written once at build time (16 kHz mono FLAC) under
    ``audio/capped/`` (a folder the builders never write, so no name meets theirs), so every
    later reader gets the row's ``duration`` whatever cap it applies. The full-length file the
    builder wrote under this row's name is removed (other rows' hard links to the same bytes
    keep theirs); a source file outside the dataset folder stays.
    """
    import os

    import soundfile as sf

    from audsemthinker.audio import SAMPLE_RATE
    from audsemthinker.data.examples import map_audio
    from audsemthinker.data.paths import safe_name

    old = Path(row["audio"])
    new = audio_root / "capped" / f"{safe_name(item_id)}.flac"
    new.parent.mkdir(parents=True, exist_ok=True)
    tmp = new.with_name(new.name + ".tmp")
    sf.write(str(tmp), wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, new)
    if old.resolve().parent == audio_root:
        old.unlink(missing_ok=True)
    return map_audio(row, lambda p: str(new) if Path(p) == old else p)
