"""A training batch without one labelled token (every row skipped) costs a zero loss, not a
crash and not a NaN.

When every row of a batch is skipped (broken clips, over ``max_length``), the training lookup
(``train.sft.RowLookup``) hands the trainer a stand-in batch with every label ignored. The
stock loss would divide a zero sum by zero labelled tokens; raising instead would leave the
other ranks of a data-parallel run waiting in the gradient all-reduce until the timeout. The
guard runs the forward and backward as usual (so every rank joins the all-reduce) with the
loss multiplied by zero: this rank adds nothing to the step's gradient.
"""

from __future__ import annotations

from audsemthinker.data.collate import IGNORE_INDEX


def guard_skipped_batches(trainer):
    """Wrap ``trainer.compute_loss`` (on the instance, so the trainer keeps its class): a batch
    with no labelled token gets ``0 * logits.sum()`` after a full forward; any other batch
    goes to the trainer's own loss. Returns ``trainer``."""
    inner = trainer.compute_loss

    def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        if labels is None or bool((labels != IGNORE_INDEX).any()):
            return inner(model, inputs, return_outputs=return_outputs,
                         num_items_in_batch=num_items_in_batch)
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        loss = outputs.logits.float().sum() * 0.0
        return (loss, outputs) if return_outputs else loss

    trainer.compute_loss = compute_loss
    return trainer
