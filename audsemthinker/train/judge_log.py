"""Per-step judge counters in the training logs.

A judge-scored reward (``open_answer`` with ``mode: judge``) can go wrong quietly: a judge that
returns garbage scores 0.0, a judge that is down scores the fallback. The counts of both are
what tells a flat reward curve from a broken judge, so they are logged beside the loss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from transformers import TrainerCallback

from audsemthinker.judge import COUNTERS

log = logging.getLogger(__name__)


def judged_rewards(funcs: Iterable) -> dict[str, dict]:
    """``{reward name: judge stats}`` of the rewards that score through an LLM judge."""
    return {f.__name__: f.judge.stats for f in funcs
            if getattr(f, "judge", None) is not None and hasattr(f.judge, "stats")}


class JudgeStatsCallback(TrainerCallback):
    """Adds ``judge/<reward>/<counter>`` (counts since the previous log event) to every log.

    Placed before the metrics writer in the callback list, so ``metrics.jsonl`` gets them; also
    written into the trainer state's log history. A step with malformed replies or judge
    failures is logged as a warning.

    Args:
        funcs: the reward functions; those without a ``.judge`` are ignored.
    """

    def __init__(self, funcs: Iterable):
        self.stats = judged_rewards(funcs)
        self.seen = {name: dict.fromkeys(COUNTERS, 0) for name in self.stats}

    def deltas(self) -> dict[str, int]:
        """Counts since the last call, keyed ``judge/<reward>/<counter>``."""
        out = {}
        for name, stats in self.stats.items():
            for key in COUNTERS:
                now = int(stats.get(key, 0))
                out[f"judge/{name}/{key}"] = now - self.seen[name][key]
                self.seen[name][key] = now
        return out

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or not self.stats:
            return
        new = self.deltas()
        logs.update(new)
        if state.log_history:
            state.log_history[-1].update(new)
        bad = {k: v for k, v in new.items() if v and k.endswith(("/malformed", "/failed"))}
        if bad:
            log.warning("step %s: judge problems %s", state.global_step, bad)
