"""Load the Qwen2.5-Omni thinker (never the talker) from a hub id or a local folder.

A folder may hold the full Omni checkpoint (``config.json`` with ``thinker_config``, weights
prefixed ``thinker.`` beside ``talker.`` / ``token2wav.`` ones) or a thinker-only one (our export).
``Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained`` handles both; we add the checks
that turn silent failure modes into errors: the audio placeholder id must agree with the
tokenizer, and no thinker weight may be left at its random initialisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
          "auto": "auto"}


@dataclass
class ModelConfig:
    """The ``model`` config group (see ``configs/model/*.yaml``)."""

    name_or_path: str = "Qwen/Qwen2.5-Omni-7B"
    dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False
    revision: str | None = None
    tiny: bool = False  # build the tiny random checkpoint at name_or_path if it is missing
    gradient_checkpointing: bool = False


def resolve_dtype(name: str) -> torch.dtype | str:
    """Map a config dtype name to torch; bf16 falls back to fp32 on a CPU that lacks it."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def ensure_checkpoint(cfg: ModelConfig) -> str:
    """Return the path/hub id to load, writing the tiny checkpoint first when ``cfg.tiny``."""
    if cfg.tiny:
        from audsemthinker.model.tiny import write_tiny_checkpoint

        path = Path(cfg.name_or_path)
        if not (path / "config.json").exists():
            write_tiny_checkpoint(path)
    return cfg.name_or_path


def is_full_omni_folder(path: str | Path) -> bool:
    """True if ``path`` is a local folder whose config is the full Omni model's."""
    import json

    cfg = Path(path) / "config.json"
    return cfg.exists() and "thinker_config" in json.loads(cfg.read_text())


def load_thinker(cfg: ModelConfig, device: str | torch.device | None = None):
    """Load ``Qwen2_5OmniThinkerForConditionalGeneration`` as the config says.

    Args:
        cfg: model config (path or hub id, dtype, attention implementation).
        device: optional device to move the model to.

    Returns:
        The thinker, in train mode off (``eval()``); the caller switches modes.

    Raises:
        ValueError: bad dtype / attention name, or weights missing from the checkpoint.
    """
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    if cfg.attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"model.attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, "
                         f"got {cfg.attn_implementation!r}")
    path = ensure_checkpoint(cfg)
    model, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        path, dtype=resolve_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation,
        trust_remote_code=cfg.trust_remote_code, revision=cfg.revision,
        output_loading_info=True,
    )
    missing = [k for k in info.get("missing_keys", []) if "lm_head" not in k or
               not model.config.get_text_config().tie_word_embeddings]
    if missing:
        raise ValueError(f"{path}: {len(missing)} thinker weights missing from the checkpoint, "
                         f"e.g. {missing[:5]}; is this a Qwen2.5-Omni folder?")
    if device is not None:
        model.to(device)
    n = sum(p.numel() for p in model.parameters())
    log.info("loaded thinker from %s (%.2fM parameters, %s, %s)", path, n / 1e6, cfg.dtype,
             cfg.attn_implementation)
    return model.eval()


def check_token_ids(model, tokenizer) -> None:
    """Fail if the model's placeholder ids disagree with the tokenizer's.

    A mismatch raises nothing in transformers: the audio is silently ignored (PITFALLS.md).
    """
    pairs = {"audio_token_index": "<|AUDIO|>", "audio_start_token_id": "<|audio_bos|>",
             "audio_end_token_id": "<|audio_eos|>"}
    for attr, tok in pairs.items():
        want = tokenizer.convert_tokens_to_ids(tok)
        have = getattr(model.config, attr, None)
        if have != want:
            raise ValueError(f"model.config.{attr}={have} but the tokenizer maps {tok} to {want}: "
                             "the audio would be silently ignored")
