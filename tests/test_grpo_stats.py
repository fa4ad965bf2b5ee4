"""The per-step GRPO statistics: think words against the budget, and the figure of a run."""

from __future__ import annotations

import json

from audsemthinker.train.grpo_stats import plot_grpo_stats, stat_panels, think_word_metrics


def test_think_words_are_counted_inside_a_closed_think_block_only():
    completions = ["<think>one two three</think><answer>A</answer>",
                   [{"role": "assistant", "content": "<think>" + "w " * 30 + "</think>"}],
                   "<think>never closed, many words here"]
    got = think_word_metrics(completions, budget=25)
    assert got == {"completions/no_think": [0.0, 0.0, 1.0],
                   "completions/think_words/mean": [3.0, 30.0],
                   "completions/think_words/over_budget": [0.0, 1.0]}
    assert "completions/think_words/mean" not in think_word_metrics(["no tags"], 25)
    assert "completions/think_words/over_budget" not in think_word_metrics(completions, None)


def test_the_run_figure_has_a_panel_per_logged_statistic(tmp_path):
    records = [{"step": s, "loss": 0.1, "reward": 0.5 + s / 10, "rewards/accuracy/mean": 0.5,
                "frac_reward_zero_std": 0.5, "completions/mean_length": 30.0,
                "completions/max_length": 40.0, "completions/clipped_ratio": 0.1,
                "completions/think_words/mean": 20.0, "clip_ratio/region_mean": 0.0}
               for s in (1, 2, 3)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    titles = dict(stat_panels(records))
    assert titles["rewards (mean)"] == ["reward", "rewards/accuracy/mean"]
    assert "KL" not in titles  # beta = 0: nothing logged, no empty panel
    assert set(titles) == {"zero-variance groups", "rewards (mean)", "completion tokens",
                           "truncated share", "think words", "clip ratio"}
    png = plot_grpo_stats(path, tmp_path / "grpo_stats.png", think_budget=25)
    assert png and png.stat().st_size > 1000
    (tmp_path / "empty.jsonl").write_text(json.dumps({"step": 1, "loss": 0.1}) + "\n")
    assert plot_grpo_stats(tmp_path / "empty.jsonl", tmp_path / "none.png") is None
