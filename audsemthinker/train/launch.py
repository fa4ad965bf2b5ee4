"""Launch helpers shared by the training entry points (one process or ``accelerate launch``)."""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def multi_process() -> bool:
    """True under a multi-process launcher (``accelerate launch``, ``torchrun``).

    The process group is only set up then: a single process leaves device selection to the
    Trainer (``use_cpu`` and friends), which an early ``PartialState()`` would pre-empt.
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def agree_on_run_dir(cfg: DictConfig) -> None:
    """Fix ``cfg.run_dir`` to rank 0's value: each process of a multi-process launch composes
    its own config, and a timestamped folder can differ by a second between them."""
    cfg.run_dir = str(cfg.run_dir)
    if multi_process():
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        PartialState()
        run_dir = [cfg.run_dir]
        broadcast_object_list(run_dir, from_process=0)
        cfg.run_dir = run_dir[0]


def ensure_data(cfg: DictConfig) -> None:
    """Make sure the configured dataset is built with this config's settings (rank 0 builds).

    ``cfg.data.out_dir`` is set to the folder actually used: a folder built with other settings
    (another length budget, say) is never read; this run gets its own keyed folder instead
    (:func:`audsemthinker.data.registry.ensure_built`).
    """
    from contextlib import nullcontext

    from audsemthinker.data.registry import ensure_built

    if multi_process():
        from accelerate import PartialState

        first = PartialState().main_process_first()
    else:
        first = nullcontext()
    with first:
        folder = ensure_built(cfg.data)
    if str(folder) != str(cfg.data.out_dir):
        cfg.data.out_dir = str(folder)
