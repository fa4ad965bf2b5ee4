"""GRPO log-prob passes with each distinct prompt run once (``fast.grpo.shared_prompt``).

TRL scores every ``[prompt + completion]`` row in full, so at G samples per prompt the ~316-token
prompt (64 text tokens + 250 audio placeholders for a 10 s clip) runs G times beside a ~128-token
completion. Here rows are grouped by prompt and clip (``prefix_share.group_rows``), each group's
prompt runs once, and only the completions run on its copied KV cache
(``prefix_share.shared_prompt_hidden``). The head is TRL's own chunked log-prob kernel
(``trl.kernels.ChunkedLogProbFunction``), called as TRL's fused LM head calls it, so log-probs
and entropies carry TRL's numerics and its no-``[tokens, vocab]``-logits memory bound.

Chunks hold whole groups: TRL's ``batch_size`` (the per-device batch) bounds the rows of a chunk
unless one group is larger, in which case a chunk is that one group. Rows of a group need not be
adjacent; results return to the caller's row order.

The policy pass sees TRL's micro-batches, cut from a generation batch that TRL shuffles row by
row, so a micro-batch rarely holds two rows of one prompt. :func:`group_shuffle` shuffles whole
prompt groups instead (``fast.grpo.group_batches``): each micro-batch then holds as few prompts
as possible, and its policy forward runs each of them once.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

from audsemthinker.fast.prefix_share import group_rows, shared_prompt_hidden
from audsemthinker.fast.rollout import group_equal_rows
from audsemthinker.model.features import trim_features
from audsemthinker.model.unwrap import unwrap_thinker


def group_chunks(inverse: torch.Tensor, max_rows: int) -> list[torch.Tensor]:
    """Row indices of each chunk: whole groups in first-appearance order, ``<= max_rows`` rows.

    A group larger than ``max_rows`` is a chunk of its own (a prompt's rows must run together to
    share its forward).
    """
    groups = [torch.nonzero(inverse == g).flatten() for g in range(int(inverse.max()) + 1)]
    chunks, current, size = [], [], 0
    for rows in groups:
        if current and size + len(rows) > max_rows:
            chunks.append(torch.cat(current))
            current, size = [], 0
        current.append(rows)
        size += len(rows)
    if current:
        chunks.append(torch.cat(current))
    return chunks


def head_unsupported(model: nn.Module) -> str | None:
    """Why TRL's kernel, called with no softcap and unit logit scale, is not this model's head."""
    text_cfg = unwrap_thinker(model).config.get_text_config()
    for name in ("final_logit_softcapping", "logit_scale", "output_multiplier",
                 "lm_head_multiplier", "logits_scaling"):
        if getattr(text_cfg, name, None) is not None:
            return f"the text config sets {name}; the shared head assumes plain logits"
    return None


# Over 60 lines: one chunk loop over prompt groups; its arguments mirror TRL's pass.
def shared_logps_and_entropies(model: nn.Module, input_ids: torch.Tensor,
                               attention_mask: torch.Tensor, logits_to_keep: int, *,
                               temperature: float, max_rows: int, compute_entropy: bool,
                               cast_lm_head_to_fp32: bool = False,
                               input_features: torch.Tensor | None = None,
                               feature_attention_mask: torch.Tensor | None = None,
                               feature_dtype: torch.dtype | None = None,
                               ) -> tuple[torch.Tensor, torch.Tensor | None, dict] | None:
    """TRL's ``(log_probs, entropy)`` of the completion columns, each prompt forward run once.

    Args:
        model: the thinker or a PEFT model around it (not DDP/FSDP/DeepSpeed-wrapped; the caller
            checks ``prefix_share.shared_prompt_blocker`` first).
        input_ids: ``[B, L]`` TRL's ``prompt_completion_ids``.
        attention_mask: ``[B, L]``.
        logits_to_keep: completion width ``C``.
        temperature: TRL's sampling temperature (its fused head divides by it).
        max_rows: TRL's ``batch_size`` for the pass: the most rows one chunk runs at once.
        compute_entropy: also return the per-token entropy.
        cast_lm_head_to_fp32: as ``GRPOConfig.cast_lm_head_to_fp32``.
        input_features: ``[B, mels, T]`` one clip per row, or None (text only).
        feature_attention_mask: ``[B, T]``, or None.
        feature_dtype: cast the features to this dtype (the model's), as the stock path does.

    Returns:
        None when no two rows share a prompt (the stock pass costs the same); else
        ``(log_probs [B, C], entropy [B, C] or None, stats)``, zero on padding columns as TRL's
        fused head returns them; ``stats`` counts ``rows`` and ``prompt_forwards``.
    """
    prompt_len = input_ids.shape[1] - int(logits_to_keep)
    _, inverse = group_rows(input_ids[:, :prompt_len], attention_mask[:, :prompt_len],
                            input_features, feature_attention_mask)
    n_groups = int(inverse.max()) + 1
    if n_groups == input_ids.shape[0]:
        return None
    thinker = unwrap_thinker(model)
    lm_head = thinker.get_output_embeddings()
    outputs = ("log_probs", "entropy") if compute_entropy else ("log_probs",)
    labels_all = input_ids[:, prompt_len:]
    valid_all = attention_mask[:, prompt_len:].bool()
    logps = entropies = None
    for rows in group_chunks(inverse, max_rows):
        rows = rows.to(input_ids.device)
        audio = {}
        if input_features is not None:
            audio = trim_features(input_features[rows], feature_attention_mask[rows],
                                  feature_dtype)
        hidden = shared_prompt_hidden(model, input_ids[rows], attention_mask[rows],
                                      logits_to_keep, **audio)
        valid, labels = valid_all[rows], labels_all[rows]
        hidden = hidden[valid].to(lm_head.weight.device)
        autocast = nullcontext()
        if cast_lm_head_to_fp32:
            hidden = hidden.float()
            autocast = torch.autocast(hidden.device.type, enabled=False)
        with autocast:
            lp, ent, *_ = ChunkedLogProbFunction.apply(
                hidden, lm_head.weight, lm_head.bias, labels[valid], temperature,
                _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, outputs)
        if logps is None:  # TRL's output dtype, zero on padding columns
            logps = lp.new_zeros(valid_all.shape)
            entropies = lp.new_zeros(valid_all.shape) if compute_entropy else None
        logps = logps.index_put((rows,), lp.new_zeros(valid.shape).masked_scatter(valid, lp))
        if compute_entropy:
            entropies = entropies.index_put(
                (rows,), ent.new_zeros(valid.shape).masked_scatter(valid, ent))
    return logps, entropies, {"rows": input_ids.shape[0], "prompt_forwards": n_groups}


def group_shuffle(seq_dict: dict, group_keys: tuple[str, ...]) -> dict:
    """TRL's ``shuffle_sequence_dict`` with each prompt group's rows kept together.

    Groups (rows equal in every ``group_keys`` tensor, e.g. prompt ids, mask and clip) come in a
    random order (``torch.randperm``, as TRL's shuffle), each group's rows in their own order,
    and every sequence value of the dict is permuted in unison; ``None`` and 0-dim tensors pass.

    Raises:
        KeyError: a ``group_keys`` entry missing from the dict.
    """
    _, inverse = group_equal_rows(*[seq_dict[k] for k in group_keys if seq_dict[k] is not None])
    order = torch.randperm(int(inverse.max()) + 1)
    inverse = inverse.cpu()
    perm = torch.cat([torch.nonzero(inverse == g).flatten() for g in order.tolist()])

    def permute(v):
        if v is None or (isinstance(v, torch.Tensor) and v.ndim == 0):
            return v
        if isinstance(v, torch.Tensor):
            return v[perm.to(v.device)]
        return [v[i] for i in perm.tolist()]

    return {key: permute(val) for key, val in seq_dict.items()}
