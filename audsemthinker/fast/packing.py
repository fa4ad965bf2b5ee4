"""Padding-free SFT batches (``fast.sft.padding_free``): the rows of a batch as one row.

A right-padded batch of AudSem rows (1-10 s clips, answers of varied length) is ~29% padding.
:func:`pack_batch` keeps only the real tokens, concatenated in row order into one ``[1, T]`` row,
and tells the Qwen2.5-Omni thinker where each original row starts through ``position_ids``.

Why it is exact (checked against transformers 5.24 ``modeling_qwen2_5_omni`` and
``masking_utils``):

- ``position_ids`` of shape ``[4, 1, T]``: row 0 holds the text positions, which
  ``Qwen2_5OmniThinkerTextModel.forward`` hands to the mask builder; with ``attention_mask``
  None, ``masking_utils.find_packed_sequence_indices`` starts a new sequence wherever a position
  does not follow its left neighbour by 1, and the sdpa/eager mask becomes block-diagonal causal
  (flash-attention 2 takes the same positions to its varlen kernel). Rows 1-3 are the mrope
  positions; for text + audio rows (no image or video grid) ``get_rope_index`` gives
  ``cumsum(attention_mask) - 1``, i.e. ``0 .. len - 1`` per row in all three, which is what we
  pass, so ``compute_3d_position_ids`` (and its stateful ``rope_deltas``) is never called;
- the audio encodings are scattered into the ``<|AUDIO|>`` placeholders in order over the
  flattened batch, so keeping the rows in order keeps every clip with its row; the audio
  features (``input_features``, ``feature_attention_mask``) are passed on untouched;
- the causal shift makes the last token of row ``i`` predict the first token of row ``i + 1``,
  so that first token's label is set to ``-100``. The Trainer counts ``labels[..., 1:] != -100``
  (``num_items_in_batch``), which a padded batch never counts either: the count is unchanged.

Not exact, so refused: image or video inputs (their mrope positions are not ``0 .. len - 1``)
and any other per-token input this module does not know how to pack.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from audsemthinker.fast.lm_loss import IGNORE_INDEX

PASSED_ON = ("input_features", "feature_attention_mask")
"""Per-clip inputs that packing leaves as they are (their order is the rows' order)."""
REFUSED = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw",
           "video_second_per_grid", "use_audio_in_video")
"""Inputs whose positions are not ``0 .. len - 1`` per row: packing them would be wrong."""


def pack_batch(batch: Mapping) -> dict:
    """One padding-free row from a padded ``AudioCollator`` batch.

    Args:
        batch: ``input_ids``, ``attention_mask`` (0/1) and ``labels``, all ``[B, S]`` (either
            padding side: only the positions the mask keeps are used), plus optional
            ``input_features`` / ``feature_attention_mask``.

    Returns:
        ``input_ids`` and ``labels`` ``[1, T]`` (T = real tokens of the batch, rows in order, the
        first label of every row ``-100``), ``position_ids`` ``[4, 1, T]`` (``0 .. len - 1`` per
        row in all four), the audio inputs unchanged, and no ``attention_mask`` (a mask would
        stop transformers from reading the row boundaries off ``position_ids``).

    Raises:
        ValueError: a missing or mis-shaped key, a mask that is not 0/1, an empty row, image or
            video inputs, or any other key this function does not know how to pack.
    """
    for key in ("input_ids", "attention_mask", "labels"):
        if key not in batch:
            raise ValueError(f"pack_batch needs {key!r}; got keys {sorted(batch)}")
    refused = [k for k in batch if k in REFUSED and batch[k] is not None]
    if refused:
        raise ValueError(f"padding-free batches support text + audio only, got {refused}: "
                         "image/video positions are not 0..len-1 per row; turn "
                         "fast.sft.padding_free off")
    unknown = sorted(k for k in batch if k not in ("input_ids", "attention_mask", "labels",
                                                    *PASSED_ON, *REFUSED))
    if unknown:
        raise ValueError(f"pack_batch does not know how to pack {unknown}")
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if ids.ndim != 2 or mask.shape != ids.shape or labels.shape != ids.shape:
        raise ValueError(f"input_ids {tuple(ids.shape)}, attention_mask {tuple(mask.shape)} and "
                         f"labels {tuple(labels.shape)} must be the same [batch, tokens] shape")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("attention_mask must hold only 0 and 1")
    keep = mask.bool()
    lengths = keep.sum(-1)
    if bool((lengths == 0).any()):
        raise ValueError(f"rows {(lengths == 0).nonzero().flatten().tolist()} have no tokens")
    # Position within its own row: 0 .. len - 1 (the thinker's cumsum(mask) - 1, padding dropped).
    positions = (keep.long().cumsum(-1) - 1)[keep]
    packed_labels = labels[keep].clone()
    packed_labels[positions == 0] = IGNORE_INDEX
    out = {"input_ids": ids[keep].unsqueeze(0), "labels": packed_labels.unsqueeze(0),
           "position_ids": positions.view(1, 1, -1).expand(4, 1, -1).contiguous()}
    out.update({k: batch[k] for k in PASSED_ON if k in batch})
    return out


def is_packed(inputs: Mapping) -> bool:
    """True for a :func:`pack_batch` output: ``position_ids`` and no ``attention_mask``."""
    return inputs.get("position_ids") is not None and inputs.get("attention_mask") is None


class PackingCollator:
    """A collator whose batches come out packed (:func:`pack_batch`).

    Used as the training collator, so packing runs in the DataLoader workers. The wrapped
    collator's skips, ``skip_log`` and ``stats`` stay as they are and are exposed here.

    Args:
        collator: a padded-batch collator (``AudioCollator`` with labels).

    Attributes:
        tokens: ``padded`` (batch x longest row) and ``packed`` (real) token totals over the
            batches this process collated.
    """

    def __init__(self, collator):
        self.collator = collator
        self.tokens: Counter = Counter()

    @property
    def stats(self) -> Counter:
        """The wrapped collator's row counts (rows, kept, skipped by reason)."""
        return self.collator.stats

    @property
    def skip_log(self):
        """The wrapped collator's skip log file (or None)."""
        return self.collator.skip_log

    @property
    def last_kept(self) -> list[int]:
        """Indices, into the last call's rows, of the rows in the returned batch."""
        return self.collator.last_kept

    def __call__(self, rows) -> dict:
        batch = self.collator(rows)
        packed = pack_batch(batch)
        self.tokens["padded"] += batch["input_ids"].numel()
        self.tokens["packed"] += packed["input_ids"].numel()
        return packed


def check_packable(model) -> None:
    """Refuse a model that cannot read packed batches, before any training.

    Packed ``position_ids`` ``[4, 1, T]`` (text + 3 mrope rows) are the Qwen2.5-Omni thinker's
    format; another model would read them as something else.

    Args:
        model: the thinker, or a PEFT model around it.

    Raises:
        ValueError: any other model.
    """
    from audsemthinker.model.unwrap import unwrap_thinker

    try:
        unwrap_thinker(model)
    except NotImplementedError as err:
        raise ValueError(f"fast.sft.padding_free: {err}; turn it off for this model") from None
