"""The multi-process debug trace: per-rank batch ids, weight digests and shard shares."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

TRACE_ENV = "AUDSEM_LOG_BATCH_IDS"
"""Debug hook for multi-process checks: when set to a path, each rank appends the row indices
it collates to ``<path>.rank<N>`` and a hash of its trainable weights to
``<path>.rank<N>.weights_begin`` at train start (after a resumed checkpoint is loaded) and to
``<path>.rank<N>.weights`` at train end (and the share of trainable elements the rank holds to
``<path>.rank<N>.share``); GRPO also appends each reward call to
``<path>.rank<N>.rewards`` (``audsemthinker.train.grpo.traced_reward``)."""

def trace_path(suffix: str = "") -> Path:
    """This rank's file of the ``TRACE_ENV`` debug hook: ``<path>.rank<N>[.<suffix>]``."""
    return Path(f"{os.environ[TRACE_ENV]}.rank{os.environ.get('RANK', '0')}"
                + (f".{suffix}" if suffix else ""))


def trainable_digest(model) -> str:
    """sha256 over the trainable parameters (name, then bytes), in name order: equal on every
    rank of a data-parallel run after each optimizer step. FSDP shards (DTensors) are gathered
    first, a collective: every rank must call this at the same point."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            full = p.full_tensor() if hasattr(p, "full_tensor") else p
            h.update(name.encode())
            h.update(full.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def local_share(model) -> float:
    """The fraction of the trainable elements this rank holds: 1.0 unsharded, about
    1/world_size under FSDP."""
    local = total = 0
    for p in model.parameters():
        if p.requires_grad:
            local += p.to_local().numel() if hasattr(p, "to_local") else p.numel()
            total += p.numel()
    return local / max(total, 1)


def trace_callback():
    """A callback writing :func:`trainable_digest` at train start and end (see ``TRACE_ENV``)."""
    from transformers import TrainerCallback

    class WeightTrace(TrainerCallback):
        @staticmethod
        def _write(suffix: str, model) -> None:
            trace_path(suffix).write_text(trainable_digest(model) + "\n")

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._write("weights_begin", model)  # Trainer loads a resumed checkpoint before this
            trace_path("share").write_text(f"{local_share(model)}\n")

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self._write("weights", model)

    return WeightTrace()
