"""``grpo.overlong``: completions cut at ``max_completion_length`` are masked from the loss, or
pay DAPO's soft overlong penalty, and the per-step statistics are logged and plotted."""

from __future__ import annotations

import pytest
from test_sft import build_synthetic, compose_sft

from audsemthinker.rewards import build_rewards
from audsemthinker.rewards.overlong import overlong_setup, soft_overlong_penalty
from audsemthinker.schemas import Overlong


def test_soft_penalty_is_zero_then_falls_linearly_to_minus_one_at_the_limit():
    # DAPO's eq. 13 with L_max = 512 and L_cache = 64: the last 64 tokens cost up to -1.
    assert soft_overlong_penalty(448, 512, 64) == 0.0
    assert soft_overlong_penalty(449, 512, 64) == pytest.approx(-1 / 64)
    assert soft_overlong_penalty(480, 512, 64) == pytest.approx(-0.5)
    assert soft_overlong_penalty(512, 512, 64) == -1.0
    assert soft_overlong_penalty(600, 512, 64) == -1.0
    funcs, _ = build_rewards([{"name": "overlong", "max_length": 10, "buffer": 4}])
    got = funcs[0](completions=["a"] * 4, completion_ids=[[1] * 6, [1] * 7, [1] * 8, [1] * 10])
    assert got == [0.0, -0.25, -0.5, -1.0]
    with pytest.raises(ValueError, match="completion_ids"):
        funcs[0](completions=["a"])


def test_overlong_setting_adds_the_penalty_or_masks_or_changes_nothing():
    base = [lambda completions, **kw: [0.0] * len(completions)]
    funcs, weights, mask = overlong_setup(Overlong("soft_penalty", 16, 0.5), 64, base, [1.0])
    assert [f.__name__ for f in funcs[1:]] == ["overlong"] and weights == [1.0, 0.5] and not mask
    assert overlong_setup(Overlong("mask"), 64, base, [1.0]) == (base, [1.0], True)
    assert overlong_setup(Overlong(), 64, base, [1.0]) == (base, [1.0], False)
    with pytest.raises(ValueError, match="mode"):
        overlong_setup(Overlong("clip"), 64, base, [1.0])
    with pytest.raises(ValueError, match="buffer"):
        overlong_setup(Overlong("soft_penalty", 100), 64, base, [1.0])
    with pytest.raises(ValueError, match="already has"):
        overlong_setup(Overlong("soft_penalty"), 64, funcs, weights)


def _one_step(tmp_path, tiny_full_dir, mode: str):
    """One GRPO step from the shipped config; every completion of 6 tokens, most cut."""
    import torch

    from audsemthinker.train import grpo

    torch.set_num_threads(1)
    data = build_synthetic(tmp_path / "data", n_train=4, n_test=0, kind="grpo")
    cfg = compose_sft(tmp_path / "run", tiny_full_dir, data, [
        "train.grpo.max_steps=1", "train.grpo.save_strategy=no", "train.grpo.logging_steps=1",
        "train.grpo.max_completion_length=6", "train.grpo.num_generations=4",
        "train.grpo.per_device_train_batch_size=8", f"grpo.overlong.mode={mode}",
        "grpo.overlong.buffer=2"])
    trainer, _ = grpo.build_grpo_trainer(cfg)
    eos = set(trainer.eos_token_ids) | {trainer._tokenizer.pad_token_id}
    seen = []
    real_loss = trainer._compute_loss

    def spy(model, inputs):
        for ids, m in zip(inputs["completion_ids"], inputs["completion_mask"]):
            n = int((ids != trainer._tokenizer.pad_token_id).sum())
            cut = n == 6 and int(ids[5]) not in eos
            seen.append((cut, int(m.sum())))
        return real_loss(model, inputs)

    trainer._compute_loss = spy
    trainer.train()
    log = next(r for r in trainer.state.log_history if "reward" in r)
    return trainer, seen, log


def test_mask_mode_keeps_truncated_completions_out_of_the_loss(tmp_path, tiny_full_dir):
    trainer, seen, log = _one_step(tmp_path, tiny_full_dir, "mask")
    assert trainer.mask_truncated_completions
    assert any(cut for cut, _ in seen), "nothing was truncated: the test proves nothing"
    assert all(tokens == 0 for cut, tokens in seen if cut)
    assert all(tokens > 0 for cut, tokens in seen if not cut)
    assert "rewards/overlong/mean" not in log


def test_soft_penalty_mode_scores_every_completion_by_its_length(tmp_path, tiny_full_dir):
    trainer, seen, log = _one_step(tmp_path, tiny_full_dir, "soft_penalty")
    assert trainer.reward_func_names[-1] == "overlong"
    assert not trainer.mask_truncated_completions
    assert all(tokens > 0 for _, tokens in seen)  # nothing masked: the penalty does the work
    # 6-token limit, 2-token buffer: 4 or fewer tokens cost 0, 5 cost -0.5, 6 cost -1.
    assert -1.0 <= log["rewards/overlong/mean"] <= -log["completions/clipped_ratio"] + 1e-6
    # The statistics ride along: think words (none closed in 6 tokens) and zero-variance share.
    assert log["completions/no_think"] == 1.0 and "frac_reward_zero_std" in log
