"""Which ``fast.grpo`` switches can run in a setup, and the decode loop as a ``generate``.

Torch and transformers only (no trl): the fast GRPO trainer (``train/grpo_fast_trainer.py``)
reads :func:`off_reasons` once and swaps :func:`loop_generate` in for ``model.generate``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from audsemthinker.fast.decode import decode_blocker, sample_shared
from audsemthinker.schemas import GRPOFast

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setup:
    """What decides whether a fast path can run: read once from the trainer."""

    sharded: bool  # ZeRO-3 or FSDP: the weights are shards on each rank
    wrapped: bool  # the policy's training forward goes through DDP / DeepSpeed / FSDP
    lora: bool  # the policy has LoRA layers
    checkpointing: bool  # gradient checkpointing in the policy pass
    loss_type: str
    steps_per_generation: int
    gradient_accumulation_steps: int


def off_reasons(fast: GRPOFast, setup: Setup) -> dict[str, str]:
    """Switch name -> why it is off here, for the switches that are on but cannot run.

    ``audio_dedup``, ``audio_cache``, ``shared_prompt`` and the decode loop's own generation
    settings are decided per call (by the data and the generation config), not here.
    """
    out = {}
    if fast.merged_rollouts and (setup.sharded or not setup.lora):
        out["merged_rollouts"] = ("ZeRO-3/FSDP shard the weights" if setup.sharded
                                  else "no LoRA adapter (full fine-tuning)")
    if fast.decode_loop and setup.sharded:
        out["decode_loop"] = "ZeRO-3/FSDP shard the weights"
    if fast.group_batches:
        reason = None
        if not fast.shared_prompt:
            reason = "shared_prompt is off"
        elif setup.checkpointing:
            reason = "gradient checkpointing: the policy pass cannot share a prompt cache"
        elif setup.wrapped:
            reason = "the policy pass runs through a DDP/DeepSpeed/FSDP wrapper"
        elif setup.loss_type == "bnpo":
            reason = "loss_type bnpo normalises per micro-batch"
        elif setup.steps_per_generation != setup.gradient_accumulation_steps:
            reason = "a generation batch spans several optimizer steps"
        if reason:
            out["group_batches"] = reason
    for name, reason in out.items():
        log.info("fast.grpo.%s off: %s", name, reason)
    return out


def log_once(seen: set[str], switch: str, what: str, reason: str) -> None:
    """Log ``reason`` for ``switch`` the first time it is seen (per-call fallbacks repeat)."""
    if reason not in seen:
        seen.add(reason)
        log.info("fast.grpo.%s: %s (%s)", switch, what, reason.splitlines()[0])


def loop_generate(model, fast: GRPOFast, seen: set[str], counter: dict, recorder=None):
    """A ``generate`` for ``model`` that samples with ``decode.sample_shared``.

    A call the loop cannot serve (a generation setting it does not implement, extra arguments)
    goes to the model's own ``generate``, logged once per reason. ``counter["calls"]`` counts
    the calls the loop served. With a ``recorder`` (``sampler_mismatch.SamplerLogps``) each
    call also records the sampled tokens' log-probs, on either path.
    """
    def generate(input_ids, attention_mask, generation_config, input_features=None,
                 feature_attention_mask=None, **other):
        reason = (f"generate arguments {sorted(other)}" if other else
                  decode_blocker(model, generation_config))
        audio = {} if input_features is None else dict(
            input_features=input_features, feature_attention_mask=feature_attention_mask)
        if reason:
            log_once(seen, "decode_loop", "this rollout uses generate", reason)
            stock = type(model).generate if recorder is None else recorder.generate
            return stock(model, input_ids=input_ids, attention_mask=attention_mask,
                         generation_config=generation_config, **audio, **other)
        counter["calls"] += 1
        out = sample_shared(model, input_ids, attention_mask, generation_config, **audio,
                            static_cache=fast.static_cache, compile=fast.compile_decode,
                            return_logprobs=recorder is not None)
        if recorder is None:
            return out
        recorder.record(out[1])
        return out[0]

    return generate
