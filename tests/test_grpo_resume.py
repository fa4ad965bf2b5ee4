"""GRPO resume is exact: a run killed with SIGKILL after a checkpoint and resumed with
``resume=auto`` ends with the same adapter weights and the same logged losses and rewards, step
by step, as an uninterrupted run. Sampling is seeded, so the rollouts after the checkpoint must
be the ones the uninterrupted run drew: the checkpoint carries the RNG state and the sampler's
place in the data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_sft import build_synthetic
from test_sft_resume import _launch, _wait, kill_after_first_checkpoint

STEPS, SAVE = 6, 2
TESTS = Path(__file__).resolve().parent


def spread_reward(completions, **kwargs) -> list[float]:
    """Share of letters among a completion's characters: graded even for the random tiny
    model's text (the task rewards are all zero there), so every group has an advantage and
    every step changes the weights."""
    from audsemthinker.rewards.registry import completion_text

    texts = [completion_text(c) for c in completions]
    return [sum(ch.isalpha() for ch in t) / max(len(t), 1) for t in texts]


STAGE = (f"train.grpo.max_steps={STEPS}", f"train.grpo.save_steps={SAVE}",
         "train.grpo.logging_steps=1", "train.grpo.per_device_train_batch_size=4",
         "train.grpo.num_generations=4", "train.grpo.max_completion_length=8",
         "train.grpo.beta=0.04", "train.grpo.learning_rate=1e-2",
         "reward.rewards=[{_target_:test_grpo_resume.spread_reward}]")


def _logged(run_dir: Path) -> dict[int, tuple[float, float]]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: (r["loss"], r["reward"]) for r in records if "loss" in r}


@pytest.mark.slow
def test_sigkilled_grpo_run_resumes_to_the_same_weights_losses_and_rewards(tmp_path,
                                                                          tiny_full_dir,
                                                                          monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the scripts import spread_reward from here
    # More prompts than steps: one pass over the data, so the sampler order is one permutation.
    data = build_synthetic(tmp_path / "data", n_train=STEPS + 2, n_test=2)
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    ref = _launch(ref_dir, tiny_full_dir, data, tmp_path / "ref.log", script="grpo.py",
                  stage=STAGE)
    victim = _launch(run_dir, tiny_full_dir, data, tmp_path / "victim.log", script="grpo.py",
                     stage=STAGE)
    kill_after_first_checkpoint(victim, run_dir / f"checkpoint-{SAVE}", tmp_path / "victim.log")

    resumed = _launch(run_dir, tiny_full_dir, data, tmp_path / "resumed.log", "resume=auto",
                      script="grpo.py", stage=STAGE)
    _wait(resumed, tmp_path / "resumed.log")
    _wait(ref, tmp_path / "ref.log")

    report = json.loads((run_dir / "grpo_report.json").read_text())
    assert Path(report["resumed_from"]).name.startswith("checkpoint-")
    assert SAVE <= int(Path(report["resumed_from"]).name.split("-")[1]) < STEPS
    assert report["global_step"] == STEPS and report["beta"] > 0
    want = load_file(str(ref_dir / "final" / "adapter_model.safetensors"))
    got = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    assert sorted(got) == sorted(want) and len(want) > 0
    start = load_file(str(run_dir / f"checkpoint-{SAVE}" / "adapter_model.safetensors"))
    assert any(not torch.equal(start[k], want[k]) for k in want), "no step after the checkpoint"
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key)
    ref_log, run_log = _logged(ref_dir), _logged(run_dir)
    assert sorted(run_log) == sorted(ref_log) == list(range(1, STEPS + 1))
    # after the first update the KL term (beta > 0) makes every logged loss non-zero
    assert all(ref_log[s][0] != 0.0 for s in range(2, STEPS + 1)), ref_log
    torch.testing.assert_close(torch.tensor([run_log[s] for s in range(1, STEPS + 1)]),
                               torch.tensor([ref_log[s] for s in range(1, STEPS + 1)]))
