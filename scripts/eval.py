"""Evaluate a model on MMAU / MuchoMusic / our own rows, resumably, and write the reports.

    python scripts/eval.py                                      # tiny model, synthetic test split
    python scripts/eval.py model=qwen2_5_omni_7b eval=paper eval.adapter=<adapter folder> \
        run_dir=outputs/eval/sft                                # the paper's three benchmarks
    python scripts/eval.py ... run_dir=outputs/eval/sft         # again: resumes where it stopped

Writes under run_dir: predictions/<benchmark>.jsonl (one line per item, raw completion and
extracted prediction), results/<benchmark>.json, reports/*.md|json|png and, for MMAU test,
submissions/mmau_test.json. Then build the paper tables with scripts/reproduce.py.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from audsemthinker.config import validate
from audsemthinker.eval.harness import run_eval

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    validate(cfg)
    results = run_eval(cfg)
    for name, r in results.items():
        acc = "server-scored" if r["accuracy"] is None else f"{r['accuracy']:.2f}%"
        log.info("%s: %s (%d predicted, %d excluded); report %s", name, acc, r["n_predicted"],
                 r["excluded"]["count"], r["reports"]["markdown"])


if __name__ == "__main__":
    main()
