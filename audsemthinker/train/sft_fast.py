"""The SFT fast paths (``fast.sft``): chunked cross-entropy, length-grouped and packed
batches.

:class:`FastSFTTrainer` is ``trl.SFTTrainer`` with a few public/overridable methods replaced, each
only when its switch is on (:func:`sft_trainer_class` returns the plain ``SFTTrainer`` when all
are off, so ``fast=stock`` is exactly stock TRL):

- ``compute_loss`` (``chunked_ce``): :func:`audsemthinker.train.lm_loss.chunked_lm_loss` with
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
- ``padding_free``: the training collator packs each batch (``train/packing.py``; wired in
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
from torch.utils.data import Sampler
from trl import SFTTrainer

from audsemthinker.model.tokens import audio_tokens_for_frames
from audsemthinker.train.lm_loss import chunked_lm_loss
from audsemthinker.train.packing import is_packed

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = 100  # mel frames per second of audio (hop 160 at 16 kHz)


# --------------------------------------------------------------------------------------------
# Lengths and the sampler
# --------------------------------------------------------------------------------------------
def _texts(messages: Sequence[Mapping]) -> str:
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [str(p.get("text") or "") for p in content or [] if p.get("type") == "text"]
    return "\n".join(parts)


def row_lengths(rows: Sequence[Mapping], tokenizer) -> tuple[list[int], int]:
    """Approximate tokens per SFT row: message text tokens plus audio placeholders.

    Only the ordering matters (rows of similar length share a batch), so the chat template's
    few fixed tokens are left out and the text is tokenised in one batched call.

    Args:
        rows: SFT rows (``messages``, ``duration`` in seconds).
        tokenizer: the processor's tokenizer.

    Returns:
        ``(lengths, missing)``: one length per row, and how many rows had no ``duration``
        (counted as no audio; the caller reports it).
    """
    texts = [_texts(r.get("messages") or []) for r in rows]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    lengths, missing = [], 0
    for row, toks in zip(rows, ids):
        secs = row.get("duration")
        if secs is None:
            missing += 1
            secs = 0.0
        audio = audio_tokens_for_frames(int(float(secs) * FRAMES_PER_SECOND)) if secs else 0
        lengths.append(len(toks) + audio)
    return lengths, missing


def padding_fraction(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> float:
    """Share of a padded batch's positions that are padding, over batches of ``order``."""
    pad = total = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        total += max(batch) * len(batch)
        pad += max(batch) * len(batch) - sum(batch)
    return pad / total if total else 0.0


LENGTH_JITTER_TOKENS = 64
"""Random tokens added to each row's length before sorting (uniform in [0, 64), ~2.5 s of
audio). Without it, rows whose lengths differ by a few text tokens are sorted by those tokens;
when that correlates with the target (``"low"`` vs ``"high"``), whole batches hold one class and
the tiny pitch run drops from 100% to 33% held-out accuracy. With it, near-equal rows stay in
random order and a batch pads at most ~64 tokens more than an exact sort would."""


class LengthGroupedEpochSampler(Sampler):
    """Rows of similar length next to each other, a fresh random grouping per epoch.

    The epoch is a random permutation cut into mega-batches (``min(50, n // (4 x group))``
    groups each, as transformers' ``LengthGroupedSampler``), each sorted by length plus a random
    jitter and cut into groups (one optimizer step each); the groups then run in random order,
    the one holding the longest row first, so an out-of-memory shows at the first step. The
    generator is seeded from ``seed + epoch``, not the global RNG, so the order does not depend
    on what ran before (a resumed run replays it).

    Args:
        lengths: one length per dataset row.
        group_size: rows per optimizer step across all ranks (per-device batch x accumulation x
            processes); mega-batches are multiples of it.
        seed: the run's seed.
        jitter: see :data:`LENGTH_JITTER_TOKENS`; 0 sorts exactly.
    """

    def __init__(self, lengths: Sequence[int], group_size: int, seed: int = 0,
                 jitter: float = LENGTH_JITTER_TOKENS):
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.lengths, self.group_size, self.seed = list(lengths), group_size, seed
        self.jitter, self.epoch = jitter, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (through accelerate) at the start of each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        n = len(self.lengths)
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(n, generator=gen).tolist()
        key = (torch.tensor(self.lengths, dtype=torch.float64)
               + torch.rand(n, generator=gen, dtype=torch.float64) * self.jitter).tolist()
        size = self.group_size * max(1, min(50, n // (4 * self.group_size)))
        groups = []
        for start in range(0, n, size):
            mega = sorted(perm[start:start + size], key=lambda j: -key[j])
            groups += [mega[k:k + self.group_size] for k in range(0, len(mega), self.group_size)]
        # Steps in random order: no long-to-short sweep through each mega-batch (a drift the
        # model would follow wherever length correlates with the target), longest step first.
        shuffled = [groups[g] for g in torch.randperm(len(groups), generator=gen).tolist()]
        first = max(range(len(shuffled)), key=lambda g: max(self.lengths[i] for i in shuffled[g]),
                    default=0)
        shuffled.insert(0, shuffled.pop(first))
        return iter([i for group in shuffled for i in group])


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

