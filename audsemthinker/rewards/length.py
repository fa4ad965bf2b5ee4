"""Length reward on the number of words in ``<think>``.

Three shapes around a word budget B, all in [0, 1]:

- ``linear`` (released code, from L1/LCPO, arXiv 2503.04697): ``clip(a*(B - n) + d, 0, 1)``;
  with B=25, a=0.1, d=0.5: n <= 20 -> 1, n = 25 -> 0.5, n >= 30 -> 0. Short thinking is never
  penalised.
- ``linear_encourage``: for n <= B, ``clip(1 - a*(B - n) + d, 0, 1)`` (with the defaults: 1 for
  20 <= n <= 25, 0.5 at n = 15, 0 at n <= 10), so thinking far below the budget is penalised
  too; for n > B the ``linear`` formula applies (0.4 at n = 26, 0 at n >= 30). The release only
  defines the n <= B branch; reusing ``linear`` above the budget keeps "too long" penalised the
  same way in both shapes. Note the step at B (1 -> 0.4 with the defaults) when d > 0.
- ``cosine`` (the paper's description): ``0.5*(1 + cos(pi*min(|n - B|, W)/W))``, W defaulting to
  B: 1 at the budget, falling smoothly to 0 at n = B - W and n >= B + W.

A completion without a closed ``<think>`` block must not count as zero words: under ``linear``
that pays the full length reward, so deleting ``</think>`` from a well-formed answer with 40
thinking words raises its total from 1.0 + 0.5 + 0 to 1.0 + 0 + 1.0, and a runaway completion
cut at the token limit out-earns a well-formed wrong one. ``no_think`` picks what it gets:

- ``zero`` (default): no length reward. Deleting or unclosing a tag, or truncating a completion,
  then never raises the total of accuracy + format + length, for every shape (property-tested).
- ``whole``: n is the word count of the whole completion, as the public release does. Safe
  against deleted tags only for ``linear`` (more words never pay more); a short completion with
  no tags at all, or one cut short inside ``<think>``, still earns it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from audsemthinker import format as fmt
from audsemthinker.rewards.registry import completion_text, register

SHAPES = ("linear", "linear_encourage", "cosine")
NO_THINK = ("zero", "whole")


def thinking_words(completion: str, no_think: str = "zero") -> int | None:
    """Words the length reward counts: those of the first closed ``<think>`` block.

    Without one, ``None`` (no reward) under ``no_think="zero"``, or the whitespace-separated
    words of the whole completion under ``"whole"`` (the release's rule).
    """
    block = fmt.first_block(completion, fmt.THINK)
    if block is not None:
        return len(block.split())
    return None if no_think == "zero" else len(str(completion).split())


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def length_score(n: int, shape: str = "linear", budget: float = 25, alpha: float = 0.1,
                 delta: float = 0.5, window: float | None = None) -> float:
    """The reward for ``n`` thinking words (see the module docstring for each shape).

    Args:
        n: words in the think block.
        shape: ``linear``, ``linear_encourage`` or ``cosine``.
        budget: target word count B.
        alpha: slope a of the linear shapes.
        delta: offset d of the linear shapes.
        window: cosine half-width W; None means B.

    Returns:
        A float in [0, 1].
    """
    if shape == "cosine":
        w = float(budget if window is None else window)
        return _clip01(0.5 * (1.0 + math.cos(math.pi * min(abs(n - budget), w) / w)))
    if shape == "linear_encourage" and n <= budget:
        return _clip01(1.0 - alpha * (budget - n) + delta)
    return _clip01(alpha * (budget - n) + delta)


@register("length")
def get_length_reward(shape: str = "linear", budget: float = 25, alpha: float = 0.1,
                      delta: float = 0.5, window: float | None = None, no_think: str = "zero"
                      ) -> Callable[..., list[float]]:
    """Build the length reward on :func:`thinking_words` of each completion.

    Args:
        shape: ``linear`` (released code), ``linear_encourage`` or ``cosine`` (paper text).
        budget: target word count B (paper: 25; ablation 100-150).
        alpha: slope of the linear shapes (0.1).
        delta: offset of the linear shapes (0.5).
        window: cosine half-width in words; None means ``budget``.
        no_think: ``zero`` (no reward without a closed ``<think>`` block) or ``whole`` (count
            the whole completion, as the release does); see the module docstring.

    Returns:
        ``length(completions, **columns) -> list[float]`` in [0, 1].

    Raises:
        ValueError: unknown shape or ``no_think``, a negative budget, non-finite parameters,
            or a cosine window that is not positive (a zero budget with no window gives one).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown length shape {shape!r}; expected one of {SHAPES}")
    if no_think not in NO_THINK:
        raise ValueError(f"unknown length no_think {no_think!r}; expected one of {NO_THINK}")
    budget, alpha, delta = float(budget), float(alpha), float(delta)
    if not all(math.isfinite(x) for x in (budget, alpha, delta)) or budget < 0:
        raise ValueError(f"length reward needs finite alpha/delta and budget >= 0, got "
                         f"budget={budget}, alpha={alpha}, delta={delta}")
    if shape == "cosine":
        w = budget if window is None else float(window)
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"cosine length reward needs a positive window, got {w}")
        window = w

    def score(completion: Any) -> float:
        n = thinking_words(completion_text(completion), no_think)
        return 0.0 if n is None else length_score(n, shape, budget, alpha, delta, window)

    def length(completions: list[Any], **kwargs: Any) -> list[float]:
        return [score(c) for c in completions]

    return length
