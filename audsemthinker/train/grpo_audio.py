"""``AudioGRPOTrainer``: TRL's GRPO with each prompt's audio in every forward, row-aligned.

Stock ``trl.GRPOTrainer`` (1.16.0) hands the processor's extra outputs to ``generate`` but builds
the log-probability forwards (policy, old policy, reference) from image keys only, so audio is
dropped there without an error (docs/pitfalls.md, TRL). This was the public release's worst bug: the
policy was optimised on text it never heard. Here the audio features of every row travel as
batch-first tensors (``input_features`` [B, 128, frames], ``feature_attention_mask`` [B, frames])
in the batch dict that TRL shuffles and splits, so they stay with their row through
``shuffle_sequence_dict``, ``split_tensor_dict``, gradient accumulation and ``num_iterations > 1``.
Every log-prob forward checks, per row, that its ``<|AUDIO|>`` placeholder count equals the
count its features produce, so a misaligned row fails loudly instead of training on the wrong clip.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl import GRPOTrainer
from trl.models import prepare_deepspeed, prepare_fsdp
from trl.trainer.utils import add_fused_lm_head, disable_dropout_in_model

from audsemthinker.model.features import trim_features
from audsemthinker.model.tokens import PLACEHOLDER_TOKENS, audio_tokens_for_frames
from audsemthinker.schemas import GRPOFast, GRPOOptions, SamplerSettings
from audsemthinker.train.dynamic_sampling import DynamicSampler
from audsemthinker.train.grpo_stats import RoundRecorder
from audsemthinker.train.sampler_mismatch import SamplerMismatch

log = logging.getLogger(__name__)


@dataclass
class AudioRows:
    """The audio features of a batch, one row per sequence (clips padded to the longest)."""

    input_features: torch.Tensor  # [B, mel, frames]
    feature_attention_mask: torch.Tensor  # [B, frames], 1 on real frames

    @classmethod
    def from_batch(cls, batch: dict[str, Any]) -> AudioRows | None:
        if batch.get("input_features") is None:
            return None
        return cls(batch["input_features"], batch["feature_attention_mask"])

    def rows(self, start: int, end: int,
             dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Model kwargs for rows ``start:end``, trimmed to their own longest clip."""
        return trim_features(self.input_features[start:end],
                             self.feature_attention_mask[start:end], dtype)

    def check(self, input_ids: torch.Tensor, audio_token_id: int) -> None:
        """Fail unless each row's ``<|AUDIO|>`` count equals what its own features produce.

        Raises:
            ValueError: a row count or placeholder count that disagrees (misaligned audio).
        """
        if self.input_features.size(0) != input_ids.size(0):
            raise ValueError(f"audio rows ({self.input_features.size(0)}) != sequences "
                             f"({input_ids.size(0)}): audio would pair with the wrong prompts")
        have = (input_ids == audio_token_id).sum(-1).tolist()
        want = [audio_tokens_for_frames(int(f)) for f in self.feature_attention_mask.sum(-1)]
        bad = [(i, h, w) for i, (h, w) in enumerate(zip(have, want)) if h != w]
        if bad:
            raise ValueError("audio placeholder / feature count mismatch (row, placeholders, "
                             f"tokens from features): {bad[:4]}; rows and audio are misaligned")


class _AddAudio:
    """Calls ``model`` with one chunk's audio features added to TRL's own keyword arguments."""

    # Over 60 lines: TRL's constructor wrapped: each refused setup is one check before it.
    def __init__(self, model, audio: dict[str, torch.Tensor]):
        self.model, self.audio = model, audio

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs, **self.audio)


def _audio_part(message_content: Any) -> list[str]:
    if not isinstance(message_content, list):
        return []
    return [p.get("audio") or p.get("path") for p in message_content
            if isinstance(p, dict) and p.get("type") == "audio"]


def prompt_audio_paths(prompt: Sequence[dict]) -> list[str]:
    """Audio paths of a conversational prompt's audio parts, in order."""
    return [path for m in prompt for path in _audio_part(m.get("content"))]


@contextlib.contextmanager
def generate_replaced(model, generate):
    """``model.generate`` is ``generate`` inside the block (an instance attribute; one that was
    there before, e.g. a test's spy, is put back after)."""
    before = model.__dict__.get("generate")
    model.generate = generate
    try:
        yield
    finally:
        del model.generate
        if before is not None:
            model.generate = before


class AudioGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` for the Qwen2.5-Omni thinker with per-row audio (no fast path).

    ``grpo_fast_trainer.FastAudioGRPOTrainer`` adds the ``fast.grpo`` paths on top; this class
    is what ``fast=stock`` runs, and it reports every switch off.

    Pinned to trl 1.16.0. Overridden methods and why:

    - ``__init__`` (public): adds ``suppress_tokens`` for <|AUDIO|>/<|IMAGE|>/<|VIDEO|> to the
      generation kwargs (a sampled placeholder breaks the next forward), and runs TRL's
      constructor with ``beta=0`` then restores it. With beta > 0 TRL would otherwise reload the
      reference from ``model.config._name_or_path`` (fails on a full Omni folder, see
      docs/pitfalls.md) or, for a model that is already a ``PeftModel``, copy the adapter into a
      "ref" adapter. Here the reference is the base with the adapter disabled (LoRA) or the
      ``ref_model`` we are given (full fine-tuning), prepared as TRL prepares its own.
    - ``_tokenize_prompts`` (private): renders each prompt, loads its audio with
      ``audsemthinker.audio.load_audio``, and runs the processor once, so the prompt ids carry
      exactly as many <|AUDIO|> tokens as the features produce; the features go to ``generate``.
    - ``_generate_and_score_completions`` (private): scores one round (``_score_round``) or, with
      ``grpo.dynamic_sampling``, as many rounds as ``dynamic_sampling.DynamicSampler`` needs.
      ``_score_round`` wraps TRL's method: the features of its batch are active for the
      old-policy and reference forwards inside it and are added to the returned batch dict,
      where TRL's shuffles and splits keep them on their row. With ``options`` given, TRL's
      ``_calculate_rewards`` is wrapped on the instance by ``grpo_stats.RoundRecorder``, which
      only reads (each round's gathered rewards, think-word statistics).
    - ``_compute_loss`` (private): makes the batch's features active for the policy forward.
    - ``_get_per_token_logps_and_entropies`` (private): while features are active, runs TRL's
      own method chunk by chunk through a wrapper that adds that chunk's rows of features.
    - ``_generate_single_turn`` (private): TRL's own generation; with the sampler recorder on,
      its ``generate`` call records the sampled tokens' log-probs (:func:`generate_replaced`).
    - Sampler/trainer mismatch (``sampler_mismatch.SamplerMismatch``, ``sampler`` config):
      ``_generate_single_turn`` returns the log-probs the sampler recorded (decode loop or
      ``generate`` with scores) where TRL's transformers path returns None, and TRL's vLLM
      importance-sampling code scores them inside ``_generate_and_score_completions`` (and
      applies the capped ratio in ``_compute_loss`` when ``sampler.correction`` is on).
    - ``_save`` (private, ``transformers.Trainer``): ``ProcessorMixin.save_pretrained`` refuses
      our video-less processor, so the Trainer saves the tokenizer only; the other processor
      files are written once per folder, by ``common.ProcessorSaver`` (checkpoints) and the
      recipe (``final/``).
    """

    fast = GRPOFast(merged_rollouts=False, audio_dedup=False, audio_cache=False,
                    decode_loop=False, shared_prompt=False, group_batches=False)
    fast_off = MappingProxyType({})
    audio_cache = audio_dedup = None

    def __init__(self, model, reward_funcs, args, train_dataset=None, eval_dataset=None,
                 processing_class=None, ref_model=None, max_audio_seconds: float | None = None,
                 sampler: SamplerSettings | None = None,
                 options: GRPOOptions | None = None, **kwargs):
        """Build the trainer.

        Args:
            model: the thinker, or a ``PeftModel`` around it (``audsemthinker.model.lora``).
            reward_funcs: TRL reward functions (``audsemthinker.rewards.build_rewards``).
            args: a ``trl.GRPOConfig``.
            train_dataset: rows with a conversational ``prompt`` whose user turn has one audio
                part, plus the columns the rewards read (answer, choices, task, id, ...).
            eval_dataset: same layout, optional.
            processing_class: ``audsemthinker.model.processor.AudioProcessor`` (left padding).
            ref_model: the reference for full fine-tuning with beta > 0 (load it with
                ``load_thinker`` from the policy's folder); must be None with LoRA.
            max_audio_seconds: clip audio longer than this when loading (None: keep all).
            sampler: sampler/trainer mismatch measurement and correction
                (``audsemthinker.train.sampler_mismatch``); None: the defaults.
            options: the ``grpo`` group (``audsemthinker.schemas.GRPOOptions``): dynamic sampling
                and the think-word statistics. None: neither (TRL's rounds as they were).
            **kwargs: passed to ``trl.GRPOTrainer`` (callbacks, optimizers, ...).

        Raises:
            ValueError: no audio processor, a ``ref_model`` for a PEFT model, none for full
                fine-tuning with beta > 0, ``sync_ref_model``, or ``use_vllm`` (drops the audio).
        """
        if processing_class is None or not hasattr(processing_class, "feature_extractor"):
            raise ValueError("AudioGRPOTrainer needs the audio processor "
                             "(audsemthinker.model.processor.build_processor)")
        peft = is_peft_model(model)
        beta = float(args.beta)
        if peft and ref_model is not None:
            raise ValueError("with LoRA the reference is the base with the adapter disabled; "
                             "do not pass ref_model")
        if beta != 0.0 and not peft and ref_model is None:
            raise ValueError("full fine-tuning with beta > 0 needs ref_model (load_thinker of "
                             "the policy's starting folder)")
        if args.sync_ref_model:
            raise ValueError("sync_ref_model is not supported by AudioGRPOTrainer")
        if getattr(args, "use_vllm", False):
            raise ValueError("use_vllm: TRL hands vLLM the prompt text and images only, so the "
                             "policy would be sampled without hearing the audio (the public "
                             "release's bug); generate with transformers instead")
        tok = processing_class.tokenizer
        if tok.padding_side != "left":
            raise ValueError("batched generation needs LEFT padding (processor padding_side)")
        self.audio_token_id = tok.convert_tokens_to_ids("<|AUDIO|>")
        self.max_audio_seconds = max_audio_seconds
        self._active_audio: AudioRows | None = None
        suppress = {tok.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS}
        gen = dict(args.generation_kwargs or {})
        gen["suppress_tokens"] = sorted(set(gen.get("suppress_tokens") or []) | suppress)
        args.generation_kwargs = gen
        args.beta = 0.0  # see the class docstring: we build the reference ourselves
        try:
            super().__init__(model=model, reward_funcs=reward_funcs, args=args,
                             train_dataset=train_dataset, eval_dataset=eval_dataset,
                             processing_class=processing_class, **kwargs)
        finally:
            args.beta = beta
        self.beta = beta
        if beta != 0.0 and ref_model is not None:
            self.ref_model = self._prepare_ref_model(ref_model)
        self.mismatch = SamplerMismatch(self, sampler or SamplerSettings())
        self._setup_options(options)

    def _rollout_swaps(self, stack: contextlib.ExitStack, model) -> None:
        """Enter the swaps around TRL's ``generate`` call: here the sampler's recorder."""
        recorder = self.mismatch.recorder
        if recorder is not None:
            stack.enter_context(generate_replaced(
                model, lambda **kw: recorder.generate(model, **kw)))

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                              has_tool_images=False):
        model = self.accelerator.unwrap_model(self.model_wrapped)
        with contextlib.ExitStack() as stack:
            self._rollout_swaps(stack, model)
            ids, _ = super()._generate_single_turn(prompt_ids, images, multimodal_fields,
                                                   num_generations, has_tool_images)
        return ids, self.mismatch.generated(self, ids)

    def _prepare_ref_model(self, ref):
        """What TRL's constructor does to the reference it loads itself (trl 1.16.0)."""
        ref.eval().requires_grad_(False)
        if self.args.disable_dropout:
            disable_dropout_in_model(ref)
        if self.args.cast_lm_head_to_fp32:
            if ref.config.get_text_config().tie_word_embeddings:
                raise ValueError("cast_lm_head_to_fp32 needs an untied lm_head")
            ref.lm_head.float()
        add_fused_lm_head(ref, temperature=self.temperature,
                          cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(ref, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(ref, self.accelerator)
        return self.accelerator.prepare_model(ref, evaluation_mode=True)

    def _save(self, output_dir: str | None = None, state_dict=None):
        processor = self.processing_class
        self.processing_class = processor.tokenizer
        try:
            super()._save(output_dir, state_dict)
        finally:
            self.processing_class = processor

    # ---------------------------------------------------------------------------------------
    # Prompts -> ids + features (one processor call, so counts agree by construction)
    # ---------------------------------------------------------------------------------------
    def _load_clip(self, path: str):
        from audsemthinker.audio import load_audio

        return load_audio(path, max_seconds=self.max_audio_seconds)

    def _tokenize_prompts(self, prompts: list):
        paths = [prompt_audio_paths(p) for p in prompts]
        counts = {len(p) for p in paths}
        if counts == {0}:
            self._active_audio = None
            return super()._tokenize_prompts(prompts)
        if counts != {1} or any(not p[0] for p in paths):
            raise ValueError("every GRPO prompt must carry exactly one audio part with a path; "
                             f"got {[p for p in paths]}")
        proc = self.processing_class
        texts = [proc.apply_chat_template(p, tokenize=False, add_generation_prompt=True,
                                          **self.chat_template_kwargs) for p in prompts]
        # Each prompt appears num_generations times: process each distinct (text, clip) once.
        keys = [(t, p[0]) for t, p in zip(texts, paths)]
        unique = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        clips = {path: self._load_clip(path) for path in dict.fromkeys(p for _, p in unique)}
        enc = proc(text=[t for t, _ in unique], audio=[clips[p] for _, p in unique],
                   return_tensors="pt", padding=True)
        index = torch.tensor([unique[k] for k in keys])
        ids = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"][index],
                                                        enc["attention_mask"][index])]
        audio = AudioRows(enc["input_features"][index], enc["feature_attention_mask"][index])
        audio.check(torch.nn.utils.rnn.pad_sequence([torch.tensor(i) for i in ids],
                                                    batch_first=True, padding_value=-1),
                    self.audio_token_id)
        self._active_audio = audio
        fields = audio.rows(0, len(ids), dtype=self.model.dtype)
        return ids, None, fields

    def _setup_options(self, options: GRPOOptions | None) -> None:
        """The ``grpo`` group: a round recorder (statistics) and the dynamic sampler."""
        self.options = options
        self.round_recorder = self.dynamic_sampler = None
        if options is None:
            return
        self.round_recorder = RoundRecorder(self, options.stats.think_budget)
        if options.dynamic_sampling.enabled:
            self.dynamic_sampler = DynamicSampler(options.dynamic_sampling, self)

    def _generate_and_score_completions(self, inputs):
        if self.dynamic_sampler is not None and self.model.training:
            return self.dynamic_sampler.fill(self, inputs)
        return self._score_round(inputs)

    def _score_round(self, inputs):
        """TRL's generation and scoring of ``inputs``, each row's audio features added."""
        for x in inputs:  # the row's audio column, when present, must be the prompt's clip
            if x.get("audio") is not None and "prompt" in x:
                in_prompt = prompt_audio_paths(x["prompt"])
                if in_prompt and str(x["audio"]) != str(in_prompt[0]):
                    raise ValueError(f"row {x.get('id')!r}: audio column {x['audio']!r} differs "
                                     f"from the prompt's audio part {in_prompt[0]!r}")
        self._active_audio = None
        try:
            with self.mismatch.scoring(self):
                out = super()._generate_and_score_completions(inputs)
            audio = self._active_audio
        finally:
            self._active_audio = None
        self.mismatch.log(self, out)
        if audio is not None:
            device = out["prompt_ids"].device
            out["input_features"] = audio.input_features.to(device)
            out["feature_attention_mask"] = audio.feature_attention_mask.to(device)
        return out

    def _compute_loss(self, model, inputs):
        self._active_audio = AudioRows.from_batch(inputs)
        try:
            with self.mismatch.loss(self, inputs):
                return super()._compute_loss(model, inputs)
        finally:
            self._active_audio = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask,
                                           logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False,
                                           **image_kwargs):
        audio = self._active_audio
        if audio is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss,
                **image_kwargs)
        if any(v is not None for v in image_kwargs.values()):
            raise NotImplementedError("images together with audio are not supported")
        audio.check(input_ids, self.audio_token_id)
        dtype = self.accelerator.unwrap_model(model).dtype
        n = input_ids.size(0)
        batch_size = batch_size or n
        logps, entropies, aux = [], [], []
        for start in range(0, n, batch_size):
            end = min(start + batch_size, n)
            lp, ent, ax = super()._get_per_token_logps_and_entropies(
                _AddAudio(model, audio.rows(start, end, dtype=dtype)), input_ids[start:end],
                attention_mask[start:end], logits_to_keep, batch_size=end - start,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss)
            logps.append(lp)
            entropies.append(ent)
            aux.append(ax)
        return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None,
                torch.stack(aux).mean() if compute_aux_loss else None)
