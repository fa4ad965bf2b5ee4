"""The per-step GRPO statistics researchers watch, and one figure of them per run.

TRL 1.16 already logs most of them every step: ``frac_reward_zero_std`` (share of groups whose
rewards do not vary), ``rewards/<name>/mean``, ``completions/mean_length`` / ``max_length``,
``completions/clipped_ratio`` (completions cut at ``max_completion_length``), ``kl`` (with
beta > 0) and ``clip_ratio/*`` (tokens whose ratio the PPO clip cut). What it cannot know is the
length budget of our ``<think>`` block, so :class:`RoundRecorder` adds, per scored round:

- ``completions/think_words/mean``: words in the first closed ``<think>`` block (the length
  reward's count, ``rewards.length.thinking_words``), over completions that have one;
- ``completions/think_words/over_budget``: the share of those above the budget;
- ``completions/no_think``: the share without a closed ``<think>`` block (the length reward
  pays them nothing).

The recorder also keeps the last round's gathered rewards (dynamic sampling reads them) and
counts generated completion tokens. :func:`plot_grpo_stats` draws every series found in
``metrics.jsonl`` into ``grpo_stats.png`` at the end of a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from audsemthinker.rewards.length import thinking_words
from audsemthinker.rewards.registry import completion_text
from audsemthinker.train.common import read_metrics


def think_word_metrics(completions: Sequence, budget: float | None) -> dict[str, list[float]]:
    """Per-completion values of the think-word metrics (averaged by TRL over completions)."""
    counts = [thinking_words(completion_text(c), "zero") for c in completions]
    words = [float(n) for n in counts if n is not None]
    out = {"completions/no_think": [float(n is None) for n in counts]}
    if words:
        out["completions/think_words/mean"] = words
        if budget is not None:
            out["completions/think_words/over_budget"] = [float(w > budget) for w in words]
    return out


class RoundRecorder:
    """Wraps a trainer's ``_calculate_rewards`` (on the instance) to watch each scored round.

    It only reads: the rewards TRL computes pass through unchanged, and the metrics go through
    TRL's own ``_log_metric`` queue, which TRL averages over ranks in the same call.
    """

    def __init__(self, trainer, think_budget: float | None = None):
        self.think_budget = think_budget
        self.last_rewards = None
        self.completion_tokens = 0  # this rank's generated completion tokens, every round
        self._trainer = trainer
        self._inner = trainer._calculate_rewards
        trainer._calculate_rewards = self

    def __call__(self, inputs, prompts, completions, completion_ids_list):
        rewards = self._inner(inputs, prompts, completions, completion_ids_list)
        self.last_rewards = rewards
        self.completion_tokens += sum(len(ids) for ids in completion_ids_list)
        for name, values in think_word_metrics(completions, self.think_budget).items():
            for v in values:
                self._trainer._log_metric(name, v)
        return rewards


PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("zero-variance groups", ("frac_reward_zero_std", "dynamic_sampling/flat_share",
                              "dynamic_sampling/masked_groups")),
    ("rewards (mean)", ("reward",)),  # plus every rewards/<name>/mean
    ("completion tokens", ("completions/mean_length", "completions/max_length")),
    ("truncated share", ("completions/clipped_ratio",)),
    ("think words", ("completions/think_words/mean",)),
    ("KL", ("kl",)),
    ("clip ratio", ("clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean")),
    ("sampler/trainer mismatch", ("sampling/mismatch/mean_abs_diff", "sampling/mismatch/kl",
                                  "sampling/mismatch/share_above_threshold")),
)


def stat_panels(records: Sequence[dict]) -> list[tuple[str, list[str]]]:
    """The panels with at least one logged series, each with its logged keys."""
    present = {k for r in records for k, v in r.items() if v is not None}
    out = []
    for title, keys in PANELS:
        if title.startswith("rewards"):
            keys = keys + tuple(sorted(k for k in present if k.startswith("rewards/")
                                       and k.endswith("/mean")))
        found = [k for k in keys if k in present]
        if found:
            out.append((title, found))
    return out


def plot_grpo_stats(metrics_path: str | Path, png_path: str | Path,
                    think_budget: float | None = None) -> Path | None:
    """One panel per statistic against the step; None when none was logged."""
    records = read_metrics(metrics_path)
    panels = stat_panels(records)
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            ax.plot(*zip(*pts), marker=".", label=key.removeprefix("rewards/"))
        if title == "think words" and think_budget is not None:
            ax.axhline(think_budget, color="gray", linestyle="--", label="budget")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1 or title == "think words":
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
