"""Two CPU processes (``torchrun --nproc_per_node 2``) train one SFT run as data-parallel
ranks: each rank sees its own rows (none twice), both end with the same weights, and rank 0's
saved adapter loads in a single process to exactly those weights.

``accelerate launch --cpu --num_processes 2`` starts only one process (accelerate leaves
multi-CPU runs to mpirun), so the launcher here is torch's own ``torch.distributed.run``.
The ranks' row ids and weight hashes come from the ``AUDSEM_LOG_BATCH_IDS`` debug hook in
``audsemthinker/train/sft.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_sft import ROOT, build_synthetic

N_TRAIN, BATCH, STEPS, RANKS = 16, 4, 2, 2  # exactly one epoch over both ranks


def _run(run_dir: Path, model_dir, data_dir, trace: Path, log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "AUDSEM_LOG_BATCH_IDS": str(trace),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(RANKS), str(ROOT / "scripts" / "sft.py"),
           f"hydra.run.dir={run_dir}", f"model.name_or_path={model_dir}", "model.tiny=false",
           f"data.out_dir={data_dir}", "lora=tiny", "logging.wandb=off",
           f"train.sft.max_steps={STEPS}", "train.sft.logging_steps=1",
           f"train.sft.per_device_train_batch_size={BATCH}", "train.sft.use_cpu=true",
           "eval.decoding.max_new_tokens=4", "eval.batch_size=2"]
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            timeout=300).returncode
    assert rc == 0, f"torchrun sft.py exited with {rc}:\n{log.read_text()[-3000:]}"


def _rows_seen(trace: Path, rank: int) -> list[int]:
    text = Path(f"{trace}.rank{rank}").read_text()
    return [int(x) for line in text.splitlines() for x in line.split()]


@pytest.mark.slow
def test_two_cpu_ranks_split_the_data_and_agree_on_weights(tmp_path, tiny_full_dir):
    import torch
    from peft import PeftModel

    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.train.sft import trainable_digest

    data = build_synthetic(tmp_path / "data", n_train=N_TRAIN, n_test=2)
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    _run(run_dir, tiny_full_dir, data, trace, tmp_path / "torchrun.log")

    # (a) each rank collated STEPS batches of its own rows; together they cover the epoch once.
    seen = [_rows_seen(trace, r) for r in range(RANKS)]
    assert [len(s) for s in seen] == [STEPS * BATCH] * RANKS
    assert not set(seen[0]) & set(seen[1]), f"rows trained on both ranks: {seen}"
    assert sorted(seen[0] + seen[1]) == list(range(N_TRAIN))
    report = json.loads((run_dir / "sft_report.json").read_text())
    assert report["global_step"] == STEPS
    epochs = [r["epoch"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text()
                                      .splitlines()) if "loss" in r]
    assert epochs == [0.5, 1.0]  # a global batch is RANKS * BATCH rows

    # (c) DDP kept the trainable weights identical on both ranks.
    digests = [Path(f"{trace}.rank{r}.weights").read_text().strip() for r in range(RANKS)]
    assert digests[0] == digests[1]

    # (b) rank 0's saved adapter, loaded in this one process, holds exactly those weights.
    torch.manual_seed(0)
    base = load_thinker(ModelConfig(name_or_path=str(tiny_full_dir), dtype="float32"))
    loaded = PeftModel.from_pretrained(base, str(run_dir / "final"), is_trainable=True)
    assert trainable_digest(loaded) == digests[0]
    lora_b = [p for n, p in loaded.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "adapter never trained"
