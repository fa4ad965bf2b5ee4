"""The ``fast`` section: the switches of the exact fast training paths."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from audsemthinker.schemas.checks import ConfigError, nested_section


@dataclass
class SFTFast:
    """SFT switches (``fast.sft``)."""

    chunked_ce: bool = False
    """Loss from the final hidden states, in chunks of label tokens: the [tokens, 152k] float
    logits of the whole batch are never materialised, and prompt/audio positions cost nothing."""
    ce_chunk_tokens: int = 2048
    """Label tokens per cross-entropy chunk (peak extra memory ~ chunk x vocab x 4 bytes)."""
    length_grouped: bool = False
    """Batch rows of similar length together, so less of each batch is padding."""
    compile_layers: bool = False
    """``torch.compile`` each decoder layer (regional, dynamic shapes: compiled in the first
    step, never again for new lengths), fusing the norm / rotary / SwiGLU / LoRA element-wise
    work. Exact to
    float rounding. Off until timed on a GPU (``bench/train_speed.py`` has the row): the first
    step pays the compilation."""
    padding_free: bool = False
    """Train on packed batches: the rows of a batch concatenated into one row without padding
    (``fast/packing.py``), the row boundaries given by ``position_ids``. Exact (same loss and
    gradients) with every attention implementation, but off by default: with sdpa/eager the
    packed row attends through a [T, T] block mask, so attention cost grows with the square of
    the summed row lengths instead of the sum of their squares; it pays with flash-attention 2's
    varlen kernel (a GPU), which skips the padding and the cross-row blocks alike."""


@dataclass
class GRPOFast:
    """GRPO switches (``fast.grpo``)."""

    merged_rollouts: bool = True
    """Generate with the LoRA merged into the base weights (no adapter math per decode step);
    the base weights are restored bit-exactly from a snapshot afterwards."""
    audio_dedup: bool = True
    """Encode each distinct clip once per forward: the G samples of a prompt share it."""
    audio_cache: bool = True
    """With a frozen audio encoder (no trainable parameter in it), reuse a clip's encoding
    across the step's passes (generation, old policy, reference, policy)."""
    decode_loop: bool = True
    """Rollouts sampled by our loop (``fast/decode.py``) instead of ``generate``: each distinct
    prompt + clip prefilled once and its KV cache copied to its G rows; the same sampling
    (transformers' own logits processors, one multinomial draw over all rows per step, so a seed
    gives generate's tokens). Settings the loop does not implement fall back to ``generate``."""
    static_cache: bool = False
    """Decode into a pre-allocated static KV cache (fixed shapes per step). Off: on its own it
    only pays together with ``compile_decode``."""
    compile_decode: bool = False
    """``torch.compile`` the one-token decode step (CUDA graphs on GPU; needs ``static_cache``).
    Off until timed on a GPU (``bench/train_speed.py``): the first call compiles, and each new
    prompt width recompiles."""
    group_batches: bool = True
    """Cut the generation batch into micro-batches with each prompt's G rows kept together
    (prompts in random order) instead of TRL's row-by-row shuffle, so the policy pass can run
    each prompt once (``shared_prompt``). The optimizer step's gradient is the same: every loss
    TRL normalises per sequence, per generation batch or by a constant sums to the same value
    over any split into equal micro-batches. Used only where the policy pass can share (no
    gradient checkpointing, one process) and exact (not ``bnpo``, which normalises per
    micro-batch; one optimizer step per generation batch)."""
    shared_prompt: bool = True
    """Log-prob passes run each distinct prompt (+ clip) once and only the completions on its
    copied KV cache. Used where it is exact and possible: the no-gradient passes (reference,
    old policy) always; the policy pass when it is not DDP-wrapped and gradient checkpointing
    is off (transformers drops the cache under checkpointing)."""


@dataclass
class FastSettings:
    """The whole ``fast`` group."""

    sft: SFTFast = field(default_factory=SFTFast)
    grpo: GRPOFast = field(default_factory=GRPOFast)


def fast_settings(cfg: DictConfig | None) -> FastSettings:
    """``cfg.fast`` as :class:`FastSettings`; the defaults when the config has no ``fast``.

    Raises:
        ConfigError: an unknown key (by its full name) or a bad value.
    """
    out = nested_section(cfg, "fast", FastSettings)
    if out is None:
        return FastSettings()
    grpo = out.grpo
    if grpo.compile_decode and not (grpo.decode_loop and grpo.static_cache):
        raise ConfigError("fast.grpo.compile_decode needs fast.grpo.decode_loop and "
                          "fast.grpo.static_cache (the compiled step decodes into a static cache)")
    if out.sft.ce_chunk_tokens < 1:
        raise ConfigError(f"fast.sft.ce_chunk_tokens={out.sft.ce_chunk_tokens}: must be >= 1")
    return out
