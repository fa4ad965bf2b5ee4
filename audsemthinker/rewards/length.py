"""Length reward on the number of words in ``<think>`` (SPEC section 6).

Three shapes around a word budget B, all in [0, 1]:

- ``linear`` (released code, from L1/LCPO, arXiv 2503.04697): ``clip(a*(B - n) + d, 0, 1)``;
  with B=25, a=0.1, d=0.5: n <= 20 -> 1, n = 25 -> 0.5, n >= 30 -> 0. Short thinking is never
  penalised.
- ``linear_encourage``: for n <= B, ``clip(1 - a*(B - n) + d, 0, 1)`` (with the defaults: 1 for
  20 <= n <= 25, 0.5 at n = 15, 0 at n <= 10), so thinking far below the budget is penalised
  too; for n > B the ``linear`` formula applies (0.4 at n = 26, 0 at n >= 30). The SPEC only
  defines the n <= B branch; reusing ``linear`` above the budget keeps "too long" penalised the
  same way in both shapes. Note the step at B (1 -> 0.4 with the defaults) when d > 0.
- ``cosine`` (the paper's description): ``0.5*(1 + cos(pi*min(|n - B|, W)/W))``, W defaulting to
  B: 1 at the budget, falling smoothly to 0 at n = B - W and n >= B + W.

A completion without a ``<think>`` block has n = 0 (:func:`format.think_words`): it scores 1
under ``linear`` (the format reward is what punishes the missing block) and 0 under ``cosine``
and ``linear_encourage`` with the default window and budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from audsemthinker import format as fmt
from audsemthinker.rewards.registry import completion_text, register

SHAPES = ("linear", "linear_encourage", "cosine")


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
                      delta: float = 0.5, window: float | None = None
                      ) -> Callable[..., list[float]]:
    """Build the length reward on :func:`format.think_words` of each completion.

    Args:
        shape: ``linear`` (released code), ``linear_encourage`` or ``cosine`` (paper text).
        budget: target word count B (paper: 25; ablation 100-150).
        alpha: slope of the linear shapes (0.1).
        delta: offset of the linear shapes (0.5).
        window: cosine half-width in words; None means ``budget``.

    Returns:
        ``length(completions, **columns) -> list[float]`` in [0, 1].

    Raises:
        ValueError: unknown shape, a negative budget, non-finite parameters, or a cosine window
            that is not positive (a zero budget with no window gives one).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown length shape {shape!r}; expected one of {SHAPES}")
    budget, alpha, delta = float(budget), float(alpha), float(delta)
    if not all(math.isfinite(x) for x in (budget, alpha, delta)) or budget < 0:
        raise ValueError(f"length reward needs finite alpha/delta and budget >= 0, got "
                         f"budget={budget}, alpha={alpha}, delta={delta}")
    if shape == "cosine":
        w = budget if window is None else float(window)
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"cosine length reward needs a positive window, got {w}")
        window = w

    def length(completions: list[Any], **kwargs: Any) -> list[float]:
        return [length_score(fmt.think_words(completion_text(c)), shape, budget, alpha, delta,
                             window) for c in completions]

    return length
