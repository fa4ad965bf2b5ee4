"""Audio feature tensors cut to the rows that use them (stock and fast paths alike)."""

from __future__ import annotations

import torch


def trim_features(features: torch.Tensor, mask: torch.Tensor,
                  dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Model kwargs for some rows' clips, cut to their own longest clip (frames past it are
    padding for every row) and cast to ``dtype`` (the model's) when given."""
    n = int(mask.sum(-1).max()) if mask.numel() else 0
    feats = features[:, :, :n]
    return {"input_features": feats if dtype is None else feats.to(dtype),
            "feature_attention_mask": mask[:, :n]}
