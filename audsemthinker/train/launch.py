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
    """Build the configured dataset when its training split is missing (rank 0 builds)."""
    from contextlib import nullcontext

    from audsemthinker.data.registry import build_from_config
    from audsemthinker.train.sft import split_file

    if multi_process():
        from accelerate import PartialState

        first = PartialState().main_process_first()
    else:
        first = nullcontext()
    with first:
        if not split_file(cfg, "train").exists():
            log.info("no %s: building data '%s'", split_file(cfg, "train"), cfg.data.builder)
            build_from_config(cfg.data)
