"""The official scoring rules of MMAU and MuchoMusic, as pure functions.

Every number we compare with a paper comes from here, so the rules follow the benchmarks' own
scripts literally: MMAU's token-set match with no fallback, where only items never generated are
left out of the denominator (an empty answer is scored, and wrong); MuchoMusic's character-level
letter-then-text pick with unanswered items counted wrong (docs/scoring.md). All accuracies
are percentages. Imports nothing heavy: the GRPO accuracy reward reuses :func:`mmau_match`.
"""

from __future__ import annotations

from audsemthinker.eval.mmau_scoring import (
    MMAU_GROUPS,
    mmau_match,
    mmau_prediction,
    mmau_tokens,
    score_mmau,
)
from audsemthinker.eval.muchomusic_scoring import (
    MUCHOMUSIC_PICKS,
    muchomusic_options,
    muchomusic_pick,
    muchomusic_pick_word,
    score_muchomusic,
    score_muchomusic_judged,
)

__all__ = [
    "MMAU_GROUPS",
    "MUCHOMUSIC_PICKS",
    "mmau_match",
    "mmau_prediction",
    "mmau_tokens",
    "muchomusic_options",
    "muchomusic_pick",
    "muchomusic_pick_word",
    "score_mmau",
    "score_muchomusic",
    "score_muchomusic_judged",
]
