"""A 2x1 sweep through Hydra's submitit launcher on its local executor (``hydra/launcher=local``):
each job runs ``accelerate launch`` for its ranks in its own folder; one job trains, the other's
ranks fail; the sweep still writes its summary, with the failed row, and exits non-zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_sft import ROOT, build_synthetic


@pytest.mark.slow
@pytest.mark.scale
def test_local_submitit_sweep_runs_accelerate_jobs_and_summarises_a_failure(tmp_path,
                                                                             tiny_full_dir):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="pip install -e '.[cluster]' (part of the dev extra)")
    data = build_synthetic(tmp_path / "data", n_train=8, n_test=2)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "scripts" / "sft.py"), "-m", "hydra/launcher=local",
           f"hydra.sweep.dir={sweep}",
           "launch.accelerate_config=configs/accelerate/single_gpu.yaml",
           "launch.accelerate_args=[--cpu,--mixed_precision,'no']",
           f"model.name_or_path={tiny_full_dir},{tmp_path / 'no_model'}", "model.tiny=false",
           f"data.out_dir={data}", "lora=tiny", "logging.wandb=off", "train.sft.max_steps=1",
           "train.sft.per_device_train_batch_size=2", "train.sft.save_strategy=no",
           "eval.decoding.max_new_tokens=2", "eval.batch_size=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.returncode != 0, log  # a job failed: the sweep says so in its exit status

    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["swept"] == ["model.name_or_path"] and summary["n_jobs"] == 2, log
    ok, failed = summary["jobs"]
    # The job that trained: its ranks wrote into the job folder, the summary read its report.
    assert ok["status"] == "ok" and ok["global_step"] == 1, log
    report = json.loads((sweep / "0" / "sft_report.json").read_text())
    assert report["run_dir"] == str(sweep / "0")
    assert (sweep / "0" / "ranks.log").exists()  # the job's accelerate launch output
    # The job whose ranks failed: a row that says so, and the log it points at.
    assert failed["status"].startswith("failed: accelerate launch exited with"), failed
    assert failed["global_step"] is None
    assert (sweep / "1" / "ranks.log").read_text()
    assert "failed" in (sweep / "sweep_summary.md").read_text()


@pytest.mark.parametrize("name, target", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")])
def test_cluster_launcher_configs_compose(name, target):
    """The SLURM config cannot run here; it composes onto the plugin's launcher with one task
    per node (the task runs accelerate launch for the node's ranks)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="pip install -e '.[cluster]' (part of the dev extra)")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith(target) and launcher.tasks_per_node == 1
    assert cfg.launch.accelerate_config is None  # a plain sweep job trains in its own process
