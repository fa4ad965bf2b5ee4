"""Build a registered dataset to disk: ``<out_dir>/<split>.jsonl``, its audio, a build report.

    python scripts/build_data.py                              # tiny synthetic set (default)
    python scripts/build_data.py data=synthetic_mc            # all synthetic tasks, larger
    python scripts/build_data.py data=audsem_semantic data.kwargs.audio_dir=/data/audsem_clips
    python scripts/build_data.py data=mmau_test_mini          # benchmark rows for eval
    python scripts/build_data.py data.strict=true             # stop at the first bad item

The report (kept, skipped by reason with example ids, durations, tokens per example when
``data.tokenizer`` names a tokenizer folder) is written beside the rows; its path is printed.
Builders: ``audsemthinker.data.registry.available_builders()``.

A build that cannot give what the source holds (0 rows kept, a source split lost, a text-only
source without its audio folder, missing columns) prints ``build failed: <cause>`` and exits 2.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from audsemthinker.data.registry import IncompleteBuild, build_from_config

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../configs", config_name="build_data")
def main(cfg: DictConfig) -> None:
    try:
        report = build_from_config(cfg.data, progress=bool(cfg.get("progress", True)))
    except IncompleteBuild as e:
        print(f"build failed: {e}", file=sys.stderr)
        sys.exit(2)
    skips = ", ".join(f"{r} {n}" for r, n in report.skip_counts().items()) or "none"
    log.info("kept %d (%s), skipped %d (%s)", report.total_kept,
             ", ".join(f"{k} {v}" for k, v in report.kept.items()), report.total_skipped, skips)
    print(f"build report: {report.report_path}")


if __name__ == "__main__":
    main()
