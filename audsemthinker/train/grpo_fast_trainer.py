"""The one switch point of the GRPO fast paths: ``AudioGRPOTrainer`` with ``fast.grpo`` on.

The paths live in ``audsemthinker/fast/`` (``rollout.py``: merged LoRA, audio dedup and cache;
``decode.py``: the rollout loop; ``grpo_switches.py``: which switches can run) and in
``shared_scoring.py`` (one forward per prompt, TRL's log-prob kernel as the head).
:func:`grpo_trainer_class` returns the plain :class:`AudioGRPOTrainer` when every switch is
off, so ``fast=stock`` runs none of this module.
"""

from __future__ import annotations

import contextlib

from audsemthinker.fast.grpo_switches import Setup, log_once, loop_generate, off_reasons
from audsemthinker.fast.prefix_share import shared_prompt_blocker
from audsemthinker.fast.rollout import (
    AudioEncodingCache,
    LoraSnapshot,
    install_audio_dedup,
    lora_layers,
    merged_lora,
    same_tower,
)
from audsemthinker.schemas import GRPOFast
from audsemthinker.train.grpo_audio import AudioGRPOTrainer, AudioRows, generate_replaced
from audsemthinker.train.shared_scoring import (
    group_shuffle,
    head_unsupported,
    shared_logps_and_entropies,
)

GROUP_KEYS = ("prompt_ids", "prompt_mask", "input_features", "feature_attention_mask")
"""The generation-batch entries that identify a prompt group (text and clip)."""

SWITCHES = ("merged_rollouts", "audio_dedup", "audio_cache", "decode_loop", "shared_prompt",
            "group_batches")
"""The ``fast.grpo`` switches that install a path (``static_cache``/``compile_decode`` only
tune the decode loop)."""


def grpo_trainer_class(fast: GRPOFast) -> type:
    """:class:`FastAudioGRPOTrainer` when any ``fast.grpo`` switch is on, else the stock one."""
    return FastAudioGRPOTrainer if any(getattr(fast, s) for s in SWITCHES) \
        else AudioGRPOTrainer


@contextlib.contextmanager
def grouped_shuffle():
    """TRL's generation-batch shuffle keeps prompt groups whole inside the block."""
    import trl.trainer.grpo_trainer as trl_grpo  # TRL calls its module's function by name

    row_shuffle = trl_grpo.shuffle_sequence_dict
    trl_grpo.shuffle_sequence_dict = \
        lambda d: group_shuffle(d, tuple(k for k in GROUP_KEYS if k in d))
    try:
        yield
    finally:
        trl_grpo.shuffle_sequence_dict = row_shuffle


class FastAudioGRPOTrainer(AudioGRPOTrainer):
    """``AudioGRPOTrainer`` with the ``fast.grpo`` paths. Overridden methods and why:

    - ``__init__``: takes ``fast`` (None: every switch on) and installs what applies here;
      with ``audio_dedup`` / ``audio_cache`` the inner thinker's ``get_audio_features`` is
      replaced on the instance (``rollout.AudioDedup``), so every pass encodes each distinct
      clip once and, with a frozen tower, once per generation batch.
    - ``_generate_and_score_completions``: empties the audio cache (a new generation batch).
    - ``_prepare_inputs`` (TRL, private): with ``group_batches``, TRL's own method with its row
      shuffle swapped for a prompt-group shuffle (:func:`grouped_shuffle`).
    - ``_rollout_swaps``: with ``merged_rollouts``, TRL's generation runs with the LoRA merged
      into the base weights (``rollout.merged_lora``; the base is restored bit-exactly from a
      snapshot taken at the first rollout). Off under ZeRO-3 and FSDP (sharded weights) and for
      full fine-tuning. With ``decode_loop`` the ``generate`` call runs ``decode.sample_shared``
      (each prompt prefilled once), also off under ZeRO-3 and FSDP. Which switches cannot run
      here, and why, is ``grpo_switches.off_reasons``.
    - ``_get_per_token_logps_and_entropies`` (TRL, private): with ``shared_prompt`` it first
      tries ``shared_scoring.shared_logps_and_entropies`` (each prompt run once, TRL's own
      log-prob kernel as the head), where the pass allows it.
    """

    def __init__(self, *args, fast: GRPOFast | None = None, **kwargs):
        """As :class:`AudioGRPOTrainer`, plus ``fast``: the ``fast.grpo`` switches."""
        super().__init__(*args, **kwargs)
        self._setup_fast(fast if fast is not None else GRPOFast())

    def _setup_fast(self, fast: GRPOFast) -> None:
        """Install the ``fast.grpo`` paths that apply here; log why any is off.

        ``audio_cache`` works inside the dedup wrapper, so it installs that wrapper too.
        """
        self.fast = fast
        args = self.args
        self.fast_off = off_reasons(fast, Setup(
            sharded=self._dist.is_zero3 or self.is_fsdp_enabled,
            wrapped=self.accelerator.num_processes > 1 or self.is_deepspeed_enabled
            or self.is_fsdp_enabled,
            lora=bool(lora_layers(self.model)), checkpointing=bool(args.gradient_checkpointing),
            loss_type=self.loss_type, steps_per_generation=args.steps_per_generation,
            gradient_accumulation_steps=args.gradient_accumulation_steps))
        self.shared_prompt_stats = {"passes": 0, "rows": 0, "prompt_forwards": 0}
        self.decode_loop_stats = {"calls": 0}
        self._logged: set[str] = set()
        self._lora_snapshot: LoraSnapshot | None = None
        self.audio_cache = AudioEncodingCache() if fast.audio_cache else None
        self.audio_dedup = None
        if fast.audio_dedup or fast.audio_cache:
            self.audio_dedup = install_audio_dedup(self.model, self.audio_cache)
            if self.ref_model is not None:  # full FT: the separately loaded reference
                ref = self.accelerator.unwrap_model(self.ref_model)
                # One cache serves both only when the towers are bit-identical (checked once;
                # under ZeRO-3 the shards cannot be compared here, so the reference gets none).
                shared = self.audio_cache if self.audio_cache is not None and \
                    not self._dist.is_zero3 and same_tower(self.model, ref) else None
                install_audio_dedup(ref, shared)

    def _fast_on(self, switch: str) -> bool:
        return getattr(self.fast, switch) and switch not in self.fast_off

    def _prepare_inputs(self, generation_batch):
        with grouped_shuffle() if self._fast_on("group_batches") else contextlib.nullcontext():
            return super()._prepare_inputs(generation_batch)

    def _rollout_swaps(self, stack: contextlib.ExitStack, model) -> None:
        if self._fast_on("merged_rollouts"):
            if self._lora_snapshot is None:  # first rollout: after any checkpoint loaded
                self._lora_snapshot = LoraSnapshot(model)
            stack.enter_context(merged_lora(model, self._lora_snapshot))
        if self._fast_on("decode_loop"):
            stack.enter_context(generate_replaced(model, loop_generate(
                model, self.fast, self._logged, self.decode_loop_stats,
                self.mismatch.recorder)))
        else:
            super()._rollout_swaps(stack, model)

    def _generate_and_score_completions(self, inputs):
        if self.audio_cache is not None:
            self.audio_cache.clear()
        return super()._generate_and_score_completions(inputs)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask,
                                           logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False,
                                           **image_kwargs):
        audio = self._active_audio
        if audio is not None and self.fast.shared_prompt and not compute_aux_loss and \
                all(v is None for v in image_kwargs.values()):
            audio.check(input_ids, self.audio_token_id)
            shared = self._shared_prompt_pass(
                model, input_ids, attention_mask, logits_to_keep,
                batch_size or input_ids.size(0), compute_entropy, audio,
                self.accelerator.unwrap_model(model).dtype)
            if shared is not None:
                return shared
        return super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
            compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **image_kwargs)

    def _shared_prompt_pass(self, model, input_ids, attention_mask, logits_to_keep, batch_size,
                            compute_entropy, audio: AudioRows, dtype):
        """``fast.grpo.shared_prompt``: TRL's outputs with each prompt run once, or None.

        None (the caller runs TRL's pass) when the switch is off, when this pass cannot share
        (logged once per reason: a DDP/DeepSpeed-wrapped policy, gradient checkpointing with
        gradients, ZeRO-3/FSDP shards), or when no two rows of the pass share a prompt.
        """
        if not self.fast.shared_prompt:
            return None
        reason = None
        if self._dist.is_zero3 or self.is_fsdp_enabled:
            reason = "ZeRO-3/FSDP shard the weights"
        reason = reason or shared_prompt_blocker(model) or head_unsupported(model)
        if reason:
            log_once(self._logged, "shared_prompt", "this pass uses TRL's forward", reason)
            return None
        with self.accelerator.autocast():
            out = shared_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, temperature=self.temperature,
                max_rows=batch_size, compute_entropy=compute_entropy,
                cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32,
                input_features=audio.input_features, feature_attention_mask=
                audio.feature_attention_mask, feature_dtype=dtype)
        if out is None:
            return None
        logps, entropies, stats = out
        self.shared_prompt_stats["passes"] += 1
        for key in ("rows", "prompt_forwards"):
            self.shared_prompt_stats[key] += stats[key]
        return logps, entropies, None
