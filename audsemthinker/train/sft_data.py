"""SFT rows from the built splits, looked up by index so the collator sees whole rows."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from audsemthinker.train.trace import TRACE_ENV, trace_path

log = logging.getLogger(__name__)


SKIP_LOG = "skipped_rows.jsonl"
"""Rows the training collator skipped (bad audio, over max_length), one JSON line each, from
every DataLoader worker and rank; the report's ``skipped_rows`` totals it."""


def split_file(cfg: DictConfig, split: str) -> Path:
    """``<data.out_dir>/<split>.jsonl``."""
    return Path(str(cfg.data.out_dir)) / f"{split}.jsonl"


def load_split(cfg: DictConfig, split: str) -> list[dict]:
    """Rows of one split (empty list when the split file does not exist)."""
    from audsemthinker.data.examples import load_examples

    path = split_file(cfg, split)
    return load_examples(path) if path.exists() else []


class RowLookup:
    """Data collator over index datasets: ``[{"row": i}, ...]`` -> ``collator([rows[i], ...])``.

    A batch whose every row is skipped does not stop the run: it is replaced by a stand-in
    (the last batch that collated here, or the first row that collates) with every label
    ignored, which the trainer turns into a zero loss that still runs the forward and backward
    (``train.skipped_batch.guard_skipped_batches``), so a data-parallel rank never leaves the
    others waiting in the gradient all-reduce. The stand-in is counted in the skip log as
    ``batch:all_rows_skipped``.
    """

    def __init__(self, rows: Sequence[Mapping], collator):
        self.rows, self.collator = rows, collator
        self._last_good: list[int] | None = None

    def __call__(self, items):
        from audsemthinker.data.collate import AllRowsSkipped

        ids = [int(it["row"]) for it in items]
        if os.environ.get(TRACE_ENV):
            with trace_path().open("a") as f:
                f.write(" ".join(map(str, ids)) + "\n")
        try:
            batch = self.collator([self.rows[i] for i in ids])
        except AllRowsSkipped as e:
            return self._stand_in(e)
        self._last_good = ids
        return batch

    def _stand_in(self, error: Exception) -> dict:
        from audsemthinker.data.collate import IGNORE_INDEX, AllRowsSkipped

        candidates = [self._last_good] if self._last_good else [[i] for i in range(len(self.rows))]
        for ids in candidates:
            try:
                batch = self.collator([self.rows[i] for i in ids])
            except AllRowsSkipped:
                continue
            batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
            log.warning("%s: a zero-loss stand-in batch keeps this step (and the other ranks) "
                        "going", error)
            log_file = getattr(self.collator, "skip_log", None)
            if log_file is not None:
                with Path(log_file).open("a") as f:
                    f.write(json.dumps({"id": None, "reason": "batch:all_rows_skipped"}) + "\n")
            return batch
        raise error


def index_dataset(start: int, stop: int):
    from datasets import Dataset

    return Dataset.from_dict({"row": list(range(start, stop))})
