"""Reward curves of a finished GRPO run, read back from its metrics file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from audsemthinker.train.common import (
    read_metrics,
)


# --------------------------------------------------------------------------------------------
# Reward curves
# --------------------------------------------------------------------------------------------
def reward_keys(records: Sequence[Mapping]) -> list[str]:
    """``reward`` (the weighted total) then every ``rewards/<name>/mean`` in the log."""
    keys = sorted({k for r in records for k in r if k.startswith("rewards/") and
                   k.endswith("/mean")})
    return (["reward"] if any("reward" in r for r in records) else []) + keys


def reward_summary(metrics_path: str | Path) -> dict:
    """Per reward: points logged, first/last value, and the mean of the first and last quarter."""
    records = read_metrics(metrics_path)
    out = {}
    for key in reward_keys(records):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if not pts:
            continue
        vals = [v for _, v in pts]
        q = max(1, len(vals) // 4)
        name = "total" if key == "reward" else key.split("/")[1]
        out[name] = {"points": len(vals), "first": vals[0], "last": vals[-1],
                     "first_quarter_mean": sum(vals[:q]) / q,
                     "last_quarter_mean": sum(vals[-q:]) / q, "steps": [s for s, _ in pts],
                     "values": vals}
    return out


def plot_rewards(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """One panel per reward (total first) against the step; None when nothing was logged."""
    records = read_metrics(metrics_path)
    keys = [k for k in reward_keys(records) if any(r.get(k) is not None for r in records)]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        ax.plot(*zip(*pts), marker=".")
        ax.set_title("total reward" if key == "reward" else key.split("/")[1])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
