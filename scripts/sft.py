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

import hydra
from omegaconf import DictConfig

from audsemthinker.config import validate
from audsemthinker.distributed.cluster import relaunch
from audsemthinker.distributed.launch import agree_on_run_dir, ensure_data

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    # -- compose + validate ------------------------------------------------------------------
    from audsemthinker.train.sft import check_sft_section, run_sft

    validate(cfg)
    if relaunch(cfg, __file__):  # launch.accelerate_config: this job starts its ranks
        return
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
