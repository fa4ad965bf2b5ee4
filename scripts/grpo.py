"""GRPO of the Qwen2.5-Omni thinker with verifiable rewards (accuracy, format, length).

    python scripts/grpo.py grpo_init=<merged SFT export>    # tiny model, synthetic task, CPU
    accelerate launch --config_file configs/accelerate/single_gpu.yaml scripts/grpo.py \
        model=qwen2_5_omni_7b lora=released train/grpo=paper reward=paper \
        data=audsem_semantic data.kwargs.kind=grpo grpo_init=<merged SFT export>
    python scripts/grpo.py ... length_budget=100             # the budget of reward and prompt
    python scripts/grpo.py hydra.run.dir=outputs/run/<time>  # resume=auto: continue that run

Writes under the run folder: checkpoint-N/, final/ (adapter or model + processor files),
merged/ (standalone thinker folder for scripts/eval.py), metrics.jsonl, loss.png, rewards.png
(one panel per reward), config.yaml and grpo_report.json (reward curves, held-out accuracy
before and after).
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
    from audsemthinker.train.grpo import check_grpo_section, run_grpo

    validate(cfg)
    if relaunch(cfg, __file__):  # launch.accelerate_config: this job starts its ranks
        return
    check_grpo_section(cfg)
    agree_on_run_dir(cfg, "grpo")
    # -- data --------------------------------------------------------------------------------
    ensure_data(cfg)
    # -- train, save, held-out accuracy, reward curves ----------------------------------------
    report = run_grpo(cfg)
    if report:
        held = report["heldout"]
        log.info("held-out %s accuracy: %s%% -> %s%% (%d rows); rewards %s; report %s",
                 held["split"], held["accuracy_before"], held["accuracy_after"], held["n"],
                 {k: round(v["last"], 3) for k, v in report["rewards"].items()},
                 f"{report['run_dir']}/grpo_report.json")


if __name__ == "__main__":
    main()
