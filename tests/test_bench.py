"""``bench/train_speed.py`` keeps running, and its stock and fast paths compute the same things.

The bench is what a researcher runs on a GPU node (``--size 7b``); this runs its smallest size on
CPU in seconds so that a refactor cannot break it unnoticed. Speed itself is not asserted.
"""

from __future__ import annotations

import json
import sys

import pytest
from test_sft import ROOT


def test_train_speed_bench_runs_and_its_loss_paths_agree(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("train_speed", None)
    import train_speed

    threads = torch.get_num_threads()
    try:
        result = train_speed.main(["--size", "smoke", "--reps", "1"])
    finally:
        torch.set_num_threads(threads)
    rows = result["rows"]
    # The SFT loss paths (full logits, TRL's fused head, our chunks) compute one number.
    losses = [r["loss"] for r in rows if r["phase"] == "SFT step"]
    assert len(losses) == 3 and max(losses) - min(losses) < 1e-5 * abs(losses[0])
    # Packing a batch of mixed lengths into one row changes no loss.
    packed = [r for r in rows if r["phase"].startswith("SFT step, mixed lengths")]
    assert len(packed) == 2 and packed[0]["loss"] == pytest.approx(packed[1]["loss"], rel=1e-5)
    # The rollout: stock, and ours with generate and with the decode loop (two cache kinds).
    paths = sorted(r["path"] for r in rows if r["phase"] == "rollout 2x2x4")
    assert paths == ["ours: + decode loop, static cache",
                     "ours: + shared-prefill decode loop (fast default)",
                     "ours: merged LoRA + audio dedup, HF generate", "stock"]
    for phase in ("GRPO step: generate", "GRPO step: reward", "GRPO step: reference log-probs",
                  "GRPO step: policy fwd+bwd", "GRPO step: whole"):
        assert sorted(r["path"] for r in rows if r["phase"] == phase) == ["ours", "stock"]
    # Every forward of ours encoded each of the 2 clips once, however many rows carried it
    # (generate's G copies, or the loop / shared scoring passing one row per prompt).
    ours = next(r for r in rows if r["phase"] == "GRPO step: whole" and r["path"] == "ours")
    assert ours["audio_rows_encoded"] == 2 * ours["audio_calls"] > 0
    assert ours["audio_rows_in"] > ours["audio_rows_encoded"]  # generate's copies were merged
    assert ours["audio_cache_hits"] == 0  # the tower trains (audio_tower.proj): no cache
    assert ours["max_logp_diff"] < 1e-4  # scoring each prompt once changes no log-prob
    saved = json.loads((tmp_path / "train_speed.json").read_text())
    assert saved["table"] == result["table"] and "| GRPO step: whole | seconds |" in saved["table"]


def test_grpo_trainer_bench_runs_both_arms(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    for name in ("train_speed", "grpo_step"):
        sys.modules.pop(name, None)
    import grpo_step

    threads = torch.get_num_threads()
    try:
        result = grpo_step.main(["--size", "smoke", "--steps", "1"])
    finally:
        torch.set_num_threads(threads)
    stock, ours = result["arms"]["stock"], result["arms"]["ours"]
    assert len(stock["times"]) == len(ours["times"]) == 2  # warm-up + 1 timed step
    # stock is TRL's path; ours ran every fast path (nothing switched itself off)
    assert stock["shared"]["passes"] == 0 and stock["loop_calls"] == 0
    assert ours["fast_off"] == {} and ours["loop_calls"] == 2
    assert ours["shared"]["prompt_forwards"] < ours["shared"]["rows"]
    assert 0 < stock["mean_length"] <= 4 and 0 < ours["mean_length"] <= 4
    saved = json.loads((tmp_path / "grpo_step.json").read_text())
    assert saved["table"] == result["table"] and "| GRPO trainer step 2x2x4 |" in saved["table"]
