"""The multi-node template (``configs/accelerate/multinode.yaml``) on one machine: two "nodes" of
one rank each, two ``accelerate launch`` commands with machine ranks 0 and 1 meeting at
127.0.0.1. The template's DeepSpeed is swapped for DDP on the command line (``--multi_gpu``,
full precision: no DeepSpeed and no GPU here); the rendezvous, machine ranks and the one run
folder are the template's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_multiprocess import _digest, _rows_seen
from test_sft import ROOT, build_synthetic


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.scale
def test_two_single_rank_nodes_train_one_run(tmp_path, tiny_full_dir):
    data = build_synthetic(tmp_path / "data", n_train=8, n_test=2)
    run_dir, trace, port = tmp_path / "run", tmp_path / "trace", _port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "AUDSEM_LOG_BATCH_IDS": str(trace),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs, logs = [], []
    for node in (0, 1):
        cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
               str(ROOT / "configs" / "accelerate" / "multinode.yaml"), "--multi_gpu",
               "--mixed_precision", "no", "--num_machines", "2", "--num_processes", "2",
               "--machine_rank", str(node), "--main_process_ip", "127.0.0.1",
               "--main_process_port", str(port), str(ROOT / "scripts" / "sft.py"),
               f"hydra.run.dir={run_dir}", f"model.name_or_path={tiny_full_dir}",
               "model.tiny=false", f"data.out_dir={data}", "lora=tiny", "logging.wandb=off",
               "train.sft.use_cpu=true", "train.sft.max_steps=2", "train.sft.save_steps=2",
               "train.sft.per_device_train_batch_size=2", "eval.decoding.max_new_tokens=2",
               "eval.batch_size=2"]
        logs.append(tmp_path / f"node{node}.log")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logs[-1].open("w"),
                                      stderr=subprocess.STDOUT))
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]

    # Global ranks 0 and 1, one per node: disjoint rows, one epoch, the same weights.
    seen = [_rows_seen(trace, r) for r in (0, 1)]
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(8))
    assert _digest(trace, 0) == _digest(trace, 1) != _digest(trace, 0, "weights_begin")
    report = json.loads((run_dir / "sft_report.json").read_text())
    assert report["global_step"] == 2 and (run_dir / "checkpoint-2").is_dir()
