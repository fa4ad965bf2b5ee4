"""Load the Qwen2.5-Omni thinker (never the talker) from a hub id or a local folder.

A folder may hold the full Omni checkpoint (``config.json`` with ``thinker_config``, weights
prefixed ``thinker.`` beside ``talker.`` / ``token2wav.`` ones) or a thinker-only one (our export).
``Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained`` handles both; we add the checks
that turn silent failure modes into errors: the audio placeholder id must agree with the
tokenizer, and no thinker weight may be left at its random initialisation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from audsemthinker.schemas import ModelConfig

log = logging.getLogger(__name__)

ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "flash_attention_2", "eager")
"""``auto``: flash_attention_2 when ``flash_attn`` imports and the model goes to CUDA, else sdpa."""
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
          "auto": "auto"}


def resolve_dtype(name: str) -> torch.dtype | str:
    """Map a config dtype name to torch; bf16 falls back to fp32 on a CPU that lacks it."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def flash_attn_available() -> bool:
    """True when the ``flash_attn`` package imports (a broken build counts as absent)."""
    try:
        import flash_attn  # noqa: F401
    except Exception:  # an ImportError, or a build against another torch/CUDA raising anything
        return False
    return True


def resolve_attn_implementation(name: str, device: str | torch.device | None = None,
                                dtype: str = "bfloat16", cuda: bool | None = None,
                                flash: bool | None = None) -> str:
    """The attention implementation to load with; ``auto`` picks one.

    ``auto`` is ``flash_attention_2`` when the ``flash_attn`` package imports, the model will
    run on CUDA (``device``, or any visible GPU when no device is given: the Trainer moves the
    model there) and in 16-bit (flash-attention has no float32 kernels), else ``sdpa`` (correct
    everywhere, and fast on CUDA).

    Args:
        name: ``model.attn_implementation``.
        device: where the model goes, if the caller knows.
        dtype: ``model.dtype`` (a :data:`DTYPES` name).
        cuda: override the CUDA check (tests); None: ask torch.
        flash: override the ``flash_attn`` check (tests); None: try the import.

    Raises:
        ValueError: an unknown name.
    """
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"model.attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, "
                         f"got {name!r}")
    if name != "auto":
        return name
    if cuda is None:
        cuda = (torch.device(device).type == "cuda" if device is not None
                else torch.cuda.is_available())
    half = dtype in ("bfloat16", "float16")
    if flash is None:
        flash = cuda and half and flash_attn_available()
    chosen = "flash_attention_2" if (cuda and half and flash) else "sdpa"
    log.info("model.attn_implementation=auto -> %s (CUDA: %s, %s, flash_attn: %s)", chosen,
             cuda, dtype, flash)
    return chosen


def ensure_checkpoint(cfg: ModelConfig) -> str:
    """Return the path/hub id to load, writing the tiny checkpoint first when ``cfg.tiny``."""
    if cfg.tiny and cfg.pretrain:
        if not (Path(cfg.name_or_path) / "config.json").exists():
            raise FileNotFoundError(
                f"{cfg.name_or_path}: the pretrained tiny base ({cfg.pretrain!r}) is not built; "
                "the SFT and GRPO entry points build it (audsemthinker.train.tiny_base)")
    elif cfg.tiny:
        from audsemthinker.model.tiny import write_tiny_checkpoint

        path = Path(cfg.name_or_path)
        if not (path / "config.json").exists():
            write_tiny_checkpoint(path)
    return cfg.name_or_path


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

    attn = resolve_attn_implementation(cfg.attn_implementation, device, cfg.dtype)
    path = ensure_checkpoint(cfg)
    model, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        path, dtype=resolve_dtype(cfg.dtype), attn_implementation=attn,
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
    log.info("loaded thinker from %s (%.2fM parameters, %s, %s)", path, n / 1e6, cfg.dtype, attn)
    return model.eval()


def check_token_ids(model, tokenizer) -> None:
    """Fail if the model's placeholder ids disagree with the tokenizer's.

    A mismatch raises nothing in transformers: the audio is silently ignored (docs/pitfalls.md).
    """
    pairs = {"audio_token_index": "<|AUDIO|>", "audio_start_token_id": "<|audio_bos|>",
             "audio_end_token_id": "<|audio_eos|>"}
    for attr, tok in pairs.items():
        want = tokenizer.convert_tokens_to_ids(tok)
        have = getattr(model.config, attr, None)
        if have != want:
            raise ValueError(f"model.config.{attr}={have} but the tokenizer maps {tok} to {want}: "
                             "the audio would be silently ignored")
