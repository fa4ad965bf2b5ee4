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


def ddp_timeout(cfg: DictConfig, trainer: str) -> int:
    """Seconds a collective may wait: ``train.<trainer>.ddp_timeout``, else TrainingArguments'
    own default."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, f"train.{trainer}.ddp_timeout", default=None)
    if value is None:
        from transformers import TrainingArguments

        value = TrainingArguments.__dataclass_fields__["ddp_timeout"].default
    return int(value)


def process_state(cfg: DictConfig, trainer: str):
    """The process group of a multi-process launch, created with the configured
    ``ddp_timeout``.

    ``PartialState`` is a singleton: whoever creates it first fixes the timeout of every
    collective of the run. The Trainer would pass ``ddp_timeout``, but the launch creates it
    earlier (run folder, data build), and a bare ``PartialState()`` falls back to torch's
    default, so rank-0-only work that outlives that default (a data build, the held-out
    generation, the export) would kill the run while the other ranks wait.
    """
    from datetime import timedelta

    from accelerate import PartialState

    return PartialState(timeout=timedelta(seconds=ddp_timeout(cfg, trainer)))


def agree_on_run_dir(cfg: DictConfig, trainer: str = "sft") -> None:
    """Fix ``cfg.run_dir`` to rank 0's value: each process of a multi-process launch composes
    its own config, and a timestamped folder can differ by a second between them.

    Creates the process group first (:func:`process_state`, ``train.<trainer>.ddp_timeout``).
    """
    cfg.run_dir = str(cfg.run_dir)
    if multi_process():
        from accelerate.utils import broadcast_object_list

        process_state(cfg, trainer)
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
