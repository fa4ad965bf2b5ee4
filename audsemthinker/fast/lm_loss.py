"""Next-token loss of a causal LM batch, two ways: the model's own (full logits) and chunked.

The model's own loss projects every position through the LM head and upcasts the
``[batch, tokens, vocab]`` logits to float (2.5 GB for 8 x 508 tokens x 152k vocabulary), even
where the label is ``-100`` (prompt, audio placeholders, padding). :func:`chunked_lm_loss` takes
the final hidden states instead (the LM head's input, captured by a hook that hands the head an
empty slice, so the forward builds no logits at all), keeps only positions whose next-token label
is set, and projects them in chunks of ``chunk_tokens``; each chunk runs under activation
checkpointing, so the backward keeps one chunk's float logits at a time.

Both return the same number (up to float rounding) with the same normalisation as transformers'
``ForCausalLMLoss``: the sum over labelled tokens divided by ``num_items_in_batch`` when given
(the Trainer's count across gradient accumulation), else by the count in this batch.

Needs neither TRL nor a Trainer (the benchmarks call it on a bare model). Works on the thinker,
a PeftModel around it, and either wrapped in DistributedDataParallel (the forward still goes
through the wrapper, so DDP's gradient synchronisation is untouched).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from audsemthinker.model.unwrap import unwrap

IGNORE_INDEX = -100


def lm_head_of(model) -> torch.nn.Module:
    """The output projection (LM head) of ``model`` (the thinker, PEFT- or DDP-wrapped).

    Raises:
        ValueError: the model has no output embeddings to project hidden states with.
    """
    head = unwrap(model).get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(unwrap(model)).__name__} has no output embeddings (LM head)")
    return head


@contextmanager
def capture_final_hidden(model):
    """Within the block, a forward of ``model`` hands its LM head zero positions and records the
    head's input (the final hidden states, still attached to the graph) in the yielded dict
    under ``"hidden"``. The model's ``logits`` come back with 0 positions."""
    store: dict = {}

    def pre_hook(module, args):
        store["hidden"] = args[0]
        return (args[0][..., :0, :],)

    handle = lm_head_of(model).register_forward_pre_hook(pre_hook)
    try:
        yield store
    finally:
        handle.remove()


def _chunk_nll(head, hidden, targets, index, stats):
    """Summed cross-entropy of one chunk (float logits, as ``ForCausalLMLoss``); the first call
    per chunk also records detached accuracy/entropy sums (the checkpoint recompute skips it)."""
    logits = head(hidden).float()
    if stats is not None and index not in stats:
        with torch.no_grad():
            logp = logits.log_softmax(-1)
            stats[index] = ((logits.argmax(-1) == targets).sum(),
                            -(logp.exp() * logp).sum())
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_nll_sum(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                    chunk_tokens: int = 2048, stats: dict | None = None) -> torch.Tensor:
    """Summed next-token NLL of ``hidden`` [N, H] against ``targets`` [N], in chunks.

    Args:
        head: the LM head (called, so a LoRA or ``modules_to_save`` wrapper on it still acts).
        hidden: final hidden states of labelled positions only.
        targets: their labels (no ``-100``).
        chunk_tokens: rows per chunk; peak extra memory ~ chunk x vocab x 4 bytes (x3 in
            the backward).
        stats: when a dict, filled with ``{chunk: (n_correct, entropy_sum)}`` (no gradient).

    Raises:
        ValueError: ``chunk_tokens < 1``.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    total = hidden.new_zeros((), dtype=torch.float32)
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or any(
        p.requires_grad for p in head.parameters()))
    for i, start in enumerate(range(0, hidden.shape[0], chunk_tokens)):
        h, t = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        if needs_grad:
            total = total + checkpoint(_chunk_nll, head, h, t, i, stats, use_reentrant=False)
        else:
            total = total + _chunk_nll(head, h, t, i, stats)
    return total


def shifted_targets(hidden: torch.Tensor, labels: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states [N, H] of the positions whose next token is labelled, and those labels.

    Raises:
        ValueError: ``hidden`` and ``labels`` disagree in batch or length.
    """
    if hidden.shape[:2] != labels.shape:
        raise ValueError(f"hidden states {tuple(hidden.shape[:2])} and labels "
                         f"{tuple(labels.shape)} differ in shape")
    targets = labels[:, 1:].to(hidden.device)
    mask = targets != IGNORE_INDEX
    return hidden[:, :-1][mask], targets[mask]


def normalise(nll_sum: torch.Tensor, n_labels: int, num_items_in_batch=None) -> torch.Tensor:
    """``nll_sum / num_items_in_batch`` (the Trainer's count over accumulation), else over this
    batch's label count (a batch without labels gives 0, not NaN)."""
    if num_items_in_batch is None:
        return nll_sum / max(n_labels, 1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(nll_sum.device)
    return nll_sum / num_items_in_batch


def stock_lm_loss(model, batch: Mapping, labels: torch.Tensor,
                  num_items_in_batch=None) -> torch.Tensor:
    """The model's own loss: full ``[B, T, vocab]`` logits, upcast to float (the reference).

    Args:
        model: the thinker (PEFT/DDP-wrapped or not).
        batch: forward inputs (``input_ids``, ``attention_mask``, audio features...), no labels.
        labels: ``[B, T]`` with ``-100`` where no loss is taken (unshifted, like the model's).
        num_items_in_batch: the Trainer's label count over gradient accumulation, or None.
    """
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    return model(**{**batch, "use_cache": False}, labels=labels, **extra).loss


def chunked_lm_loss(model, batch: Mapping, labels: torch.Tensor, chunk_tokens: int = 2048,
                    num_items_in_batch=None, stats: dict | None = None) -> torch.Tensor:
    """The same loss as :func:`stock_lm_loss` without full-vocabulary logits of the batch.

    Args:
        model: the thinker (PEFT/DDP-wrapped or not); the forward goes through ``model``.
        batch: forward inputs, no ``labels`` key.
        labels: ``[B, T]`` with ``-100`` where no loss is taken (unshifted).
        chunk_tokens: labelled positions per LM-head chunk.
        num_items_in_batch: the Trainer's label count over gradient accumulation, or None.
        stats: optional dict; gets ``n_labels``, ``n_correct`` (label is the argmax) and
            ``entropy_sum`` (next-token entropy summed over labelled positions), detached.

    Returns:
        Scalar float32 loss (zero, still attached to the graph, when nothing is labelled).

    Raises:
        ValueError: ``labels`` in ``batch``, or labels not shaped like the sequence.
    """
    if "labels" in batch:
        raise ValueError("pass labels separately: the forward must not compute the full loss")
    with capture_final_hidden(model) as store:
        model(**{**batch, "use_cache": False})
    if "hidden" not in store:
        raise ValueError("the forward never called the LM head; is this a causal LM?")
    hidden, targets = shifted_targets(store["hidden"], labels)
    chunks: dict | None = {} if stats is not None else None
    nll = chunked_nll_sum(lm_head_of(model), hidden, targets, chunk_tokens, chunks)
    if hidden.shape[0] == 0:  # keep the graph connected: DDP expects every parameter's grad
        nll = nll + store["hidden"].sum().float() * 0.0
    if stats is not None:
        stats["n_labels"] = targets.numel()
        stats["n_correct"] = sum((int(c) for c, _ in chunks.values()), 0)
        stats["entropy_sum"] = sum((float(e) for _, e in chunks.values()), 0.0)
    return normalise(nll, targets.numel(), num_items_in_batch)
