"""A run killed with SIGKILL after a checkpoint and resumed with resume=auto ends where an
uninterrupted run ends: the same adapter weights and the same logged losses, step by step.
The uninterrupted run goes through ``accelerate launch``, the others through ``python``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_sft import ROOT, build_synthetic

STEPS, SAVE = 30, 5


def _launch(run_dir: Path, model_dir, data_dir, log: Path, *extra,
            launcher: tuple[str, ...] = (sys.executable,), script: str = "sft.py",
            stage: tuple[str, ...] | None = None) -> subprocess.Popen:
    """Start ``scripts/<script>`` on the tiny model; ``stage`` replaces the SFT step overrides."""
    if stage is None:
        stage = (f"train.sft.max_steps={STEPS}", f"train.sft.save_steps={SAVE}",
                 "train.sft.logging_steps=1", "train.sft.per_device_train_batch_size=4")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [*launcher, str(ROOT / "scripts" / script), f"hydra.run.dir={run_dir}",
           f"model.name_or_path={model_dir}", "model.tiny=false", f"data.out_dir={data_dir}",
           "lora=tiny", "logging.wandb=off", *stage,
           "eval.decoding.max_new_tokens=4", "eval.batch_size=2", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    rc = proc.wait(timeout=timeout)
    assert rc == 0, f"the script exited with {rc}:\n{log.read_text()[-3000:]}"


def kill_after_first_checkpoint(victim: subprocess.Popen, checkpoint: Path, log: Path) -> None:
    """SIGKILL ``victim`` as soon as ``checkpoint`` is complete, before the run finishes."""
    first = checkpoint / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not first.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert first.exists() and not (checkpoint.parent / "final").exists(), "killed too late"


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights_and_losses(tmp_path, tiny_full_dir):
    data = build_synthetic(tmp_path / "data", n_train=64, n_test=2)
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    # The reference runs under `accelerate launch`, the killed and resumed runs under python.
    accelerate = (sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                  "--cpu", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no")
    ref = _launch(ref_dir, tiny_full_dir, data, tmp_path / "ref.log", launcher=accelerate)
    victim = _launch(run_dir, tiny_full_dir, data, tmp_path / "victim.log")
    kill_after_first_checkpoint(victim, run_dir / f"checkpoint-{SAVE}", tmp_path / "victim.log")

    resumed = _launch(run_dir, tiny_full_dir, data, tmp_path / "resumed.log", "resume=auto")
    _wait(resumed, tmp_path / "resumed.log")
    _wait(ref, tmp_path / "ref.log")

    report = json.loads((run_dir / "sft_report.json").read_text())
    assert Path(report["resumed_from"]).name.startswith("checkpoint-")
    assert int(Path(report["resumed_from"]).name.split("-")[1]) >= SAVE
    assert report["global_step"] == STEPS
    want = load_file(str(ref_dir / "final" / "adapter_model.safetensors"))
    got = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    assert sorted(got) == sorted(want) and len(want) > 0
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key)
    ref_losses, run_losses = _losses(ref_dir), _losses(run_dir)
    assert sorted(run_losses) == sorted(ref_losses) == list(range(1, STEPS + 1))
    torch.testing.assert_close(torch.tensor([run_losses[s] for s in range(1, STEPS + 1)]),
                               torch.tensor([ref_losses[s] for s in range(1, STEPS + 1)]))
    assert (run_dir / "loss.png").exists()
