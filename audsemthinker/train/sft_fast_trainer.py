"""The SFT fast paths (``fast.sft``): chunked cross-entropy, length-grouped and packed
batches.

:class:`FastSFTTrainer` is ``trl.SFTTrainer`` with a few public/overridable methods replaced, each
only when its switch is on (:func:`sft_trainer_class` returns the plain ``SFTTrainer`` when all
are off, so ``fast=stock`` is exactly stock TRL):

- ``compute_loss`` (``chunked_ce``): :func:`audsemthinker.fast.lm_loss.chunked_lm_loss` with
  ``ce_chunk_tokens``, normalised like TRL (``num_items_in_batch``, times the process count when
  ``average_tokens_across_devices``). TRL 1.16's own SFT loss already avoids full logits (its
  ``add_fused_lm_head`` kernel); this path adds a configurable chunk over labelled positions only
  and is the one the bare-model benchmark measures. It logs ``mean_token_accuracy``,
  ``entropy`` and ``num_tokens`` like TRL.
- ``_get_train_sampler`` (``length_grouped``): :class:`LengthGroupedEpochSampler` over
  :func:`row_lengths` (text tokens + audio placeholders), seeded by ``(seed, epoch)`` so a
  resumed run sees the same batches; accelerate shards its batches across ranks as it does the
  stock sampler's. Not exact: batches differ from the stock random ones, so the losses differ
  (rows of a batch share a length range, and so partly a task or source).
- ``padding_free``: the training collator packs each batch (``fast/packing.py``; wired in
  ``train/sft.py``). Both losses read packed batches as they are; ``compute_loss`` corrects the
  ``num_tokens`` metric, which TRL takes from ``position_ids.size(1)`` (1 for the thinker's
  ``[4, 1, T]`` positions), and ``get_eval_dataloader`` / ``get_test_dataloader`` use the
  unpacked ``eval_data_collator`` (an eval batch stays one row per example).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import torch
from trl import SFTTrainer

from audsemthinker.fast.compile import compile_decoder_layers
from audsemthinker.fast.length_groups import LengthGroupedEpochSampler, row_lengths
from audsemthinker.fast.lm_loss import chunked_lm_loss
from audsemthinker.fast.packing import PackingCollator, check_packable, is_packed

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------
class FastSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with the ``fast.sft`` paths; see the module docstring.

    Args:
        ce_chunk_tokens: labelled positions per LM-head chunk; None keeps TRL's loss.
        row_lengths: per training row length; None keeps TRL's sampler.
        eval_data_collator: the collator of eval/test batches when it differs from the training
            one (the unpacked collator under ``padding_free``); None uses ``data_collator``.
        *args, **kwargs: as ``SFTTrainer``.
    """

    def __init__(self, *args, ce_chunk_tokens: int | None = None,
                 row_lengths: Sequence[int] | None = None, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ce_chunk_tokens = ce_chunk_tokens
        self.eval_data_collator = eval_data_collator
        self.row_lengths = None if row_lengths is None else list(row_lengths)
        if self.row_lengths is not None and len(self.row_lengths) != len(self.train_dataset):
            raise ValueError(f"{len(self.row_lengths)} row lengths for "
                             f"{len(self.train_dataset)} training rows")

    def _get_train_sampler(self, train_dataset=None):
        if self.row_lengths is None:
            return super()._get_train_sampler(train_dataset)
        group = (self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
                 * max(self.args.world_size, 1))
        return LengthGroupedEpochSampler(self.row_lengths, group, self.args.seed)

    @contextmanager
    def _eval_collator(self):
        """``data_collator`` is the eval collator within the block (when one was given)."""
        train_collator = self.data_collator
        if self.eval_data_collator is not None:
            self.data_collator = self.eval_data_collator
        try:
            yield
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        with self._eval_collator():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        with self._eval_collator():
            return super().get_test_dataloader(test_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Chunked loss (see :func:`chunked_lm_loss`); TRL's own when ``ce_chunk_tokens`` is
        None or the caller wants the logits (``return_outputs``)."""
        if self.ce_chunk_tokens is None or return_outputs:
            before = self._total_train_tokens
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.model.training and is_packed(inputs):
                # TRL counted position_ids.size(1), the 1 of [4, 1, T]: count the T real tokens.
                self._total_train_tokens = before
                self._count_train_tokens(inputs)
            return out
        mode = "train" if self.model.training else "eval"
        batch = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
        stats: dict = {}
        loss = chunked_lm_loss(model, batch, inputs["labels"], self.ce_chunk_tokens,
                               num_items_in_batch=num_items_in_batch, stats=stats)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._log_token_metrics(mode, inputs, stats)
        return loss

    def _log_token_metrics(self, mode: str, inputs, stats: dict) -> None:
        """The metrics TRL's ``compute_loss`` logs, from the chunk statistics."""
        gather = self.accelerator.gather_for_metrics
        device = inputs["labels"].device
        n, correct, ent = (gather(torch.tensor(v, device=device, dtype=torch.float64)).sum()
                           for v in (stats["n_labels"], stats["n_correct"], stats["entropy_sum"]))
        self._metrics[mode]["entropy"].append((ent / n).item() if n > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((correct / n).item() if n > 0 else 0.0)
        if mode == "train":
            self._count_train_tokens(inputs)
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def _count_train_tokens(self, inputs) -> None:
        """Add this batch's real tokens (over all ranks) to the ``num_tokens`` metric: the
        attention mask's ones, or every token of a packed batch (it has no padding)."""
        mask = inputs.get("attention_mask")
        local = mask.sum() if mask is not None else torch.tensor(
            inputs["input_ids"].numel(), device=inputs["input_ids"].device)
        tokens = self.accelerator.gather_for_metrics(local).sum().item()
        self._total_train_tokens += tokens // self._tp_size
        self._metrics["train"]["num_tokens"] = [self._total_train_tokens]


def sft_trainer_class(fast) -> type:
    """``FastSFTTrainer`` when any ``fast.sft`` switch is on, else plain ``trl.SFTTrainer``.

    Args:
        fast: ``FastSettings.sft`` (``audsemthinker.schemas``).
    """
    return FastSFTTrainer if (fast.chunked_ce or fast.length_grouped or fast.padding_free) \
        else SFTTrainer


def fast_trainer_kwargs(fast, rows: Sequence[Mapping], tokenizer) -> dict:
    """The extra constructor arguments of :class:`FastSFTTrainer` for these settings.

    Args:
        fast: ``FastSettings.sft``.
        rows: the training rows (lengths are computed only when ``length_grouped``).
        tokenizer: the processor's tokenizer.
    """
    if not (fast.chunked_ce or fast.length_grouped):
        return {}
    kwargs: dict = {"ce_chunk_tokens": fast.ce_chunk_tokens if fast.chunked_ce else None}
    if fast.length_grouped:
        lengths, missing = row_lengths(rows, tokenizer)
        if missing:
            log.warning("length-grouped batches: %d of %d training rows have no duration; "
                        "their audio is not counted in their length", missing, len(rows))
        kwargs["row_lengths"] = lengths
    return kwargs


def prepare_model(model, fast) -> None:
    """The ``fast.sft`` changes to the model before the trainer is built (packing check,
    compiled decoder layers)."""
    if fast.padding_free:
        check_packable(model)
    if fast.compile_layers:
        n = compile_decoder_layers(model)
        log.info("fast.sft.compile_layers: %d decoder layers compiled", n)


def train_collator(fast, collator):
    """The training batches' collator: ``collator``, packed under ``fast.sft.padding_free``."""
    return PackingCollator(collator) if fast.padding_free else collator
