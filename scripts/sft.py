"""Supervised fine-tuning of the Qwen2.5-Omni thinker (LoRA or full) on audio QA.

    python scripts/sft.py                                   # tiny model, synthetic task, CPU
    accelerate launch --config_file configs/accelerate/single_gpu.yaml scripts/sft.py \
        model=qwen2_5_omni_7b lora=released train/sft=paper data=<audsem data config>
    python scripts/sft.py lora=none                         # full fine-tuning (paper ablation)
    python scripts/sft.py hydra.run.dir=outputs/run/<time>  # resume=auto: continue that run

Writes under the run folder: checkpoint-N/ (every train.sft.save_steps), final/ (adapter or
model + processor files), metrics.jsonl, loss.png, config.yaml and sft_report.json (held-out
accuracy from generated answers). Merge a LoRA run into a standalone thinker folder with
scripts/export.py.
"""

from __future__ import annotations

import logging
import os

import hydra
from omegaconf import DictConfig

from audsemthinker.config import validate

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


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    # -- compose + validate ------------------------------------------------------------------
    from audsemthinker.train.sft import check_sft_section, run_sft

    validate(cfg)
    check_sft_section(cfg)
    agree_on_run_dir(cfg)
    # -- data --------------------------------------------------------------------------------
    ensure_data(cfg)
    # -- train, save, held-out accuracy -------------------------------------------------------
    report = run_sft(cfg)
    if report:
        held = report["heldout"]
        log.info("held-out %s accuracy: %s%% (%d rows); report %s/sft_report.json",
                 held["split"], held["accuracy"], held["n"], report["run_dir"])


if __name__ == "__main__":
    main()
