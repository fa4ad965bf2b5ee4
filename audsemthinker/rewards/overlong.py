"""What happens to completions cut at ``max_completion_length`` (``grpo.overlong``).

A completion that hits the token limit has no answer, or half of one, and the other rewards
score it as a normal wrong answer: the policy is taught "this reasoning was bad" when it was only
long. DAPO (arXiv 2503.14476, section 3.4) gives two remedies, both offered here:

- ``mask``: truncated completions are left out of the loss (TRL's own
  ``mask_truncated_completions``: their completion mask is zeroed). They still take part in their
  group's reward mean and std.
- ``soft_penalty``: DAPO's soft overlong punishment, added as a reward named ``overlong`` (so it
  is logged under ``rewards/overlong/mean``). With L = ``max_completion_length`` and a buffer of
  ``buffer`` tokens, a completion of n tokens gets 0 while n <= L - buffer, then a penalty
  falling linearly to -1 at n = L: ``(L - buffer - n) / buffer``.

``none`` (the default, the paper's recipe) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from audsemthinker.rewards.registry import register
from audsemthinker.schemas import Overlong


def soft_overlong_penalty(n: int, max_length: int, buffer: int) -> float:
    """DAPO's soft overlong punishment for a completion of ``n`` tokens, in [-1, 0]."""
    start = max_length - buffer
    if n <= start:
        return 0.0
    if n <= max_length:
        return (start - n) / buffer
    return -1.0


@register("overlong")
def get_overlong_reward(max_length: int = 512, buffer: int = 64) -> Callable[..., list[float]]:
    """Build the ``overlong`` reward on each completion's token count (``completion_ids``).

    Raises:
        ValueError: a buffer outside [1, max_length].
    """
    max_length, buffer = int(max_length), int(buffer)
    if not 1 <= buffer <= max_length:
        raise ValueError(f"overlong reward: buffer {buffer} must be in [1, {max_length}]")

    def overlong(completions: list[Any], completion_ids: list[list[int]] | None = None,
                 **kwargs: Any) -> list[float]:
        if completion_ids is None or len(completion_ids) != len(completions):
            raise ValueError("the overlong reward needs TRL's completion_ids, one per completion")
        return [soft_overlong_penalty(len(ids), max_length, buffer) for ids in completion_ids]

    return overlong


def overlong_setup(setting: Overlong, max_length: int, funcs: list, weights: list[float]
                   ) -> tuple[list, list[float], bool]:
    """Apply ``grpo.overlong`` to a reward set.

    Returns:
        ``(funcs, weights, mask_truncated)``: the rewards with the ``overlong`` penalty appended
        under ``soft_penalty``, and whether truncated completions leave the loss (``mask``).

    Raises:
        ValueError: a bad setting, or a reward set that already has an ``overlong`` reward
            while ``soft_penalty`` would add a second one.
    """
    setting.check(max_length)
    if setting.mode == "soft_penalty":
        if any(getattr(f, "__name__", "") == "overlong" for f in funcs):
            raise ValueError("grpo.overlong.mode=soft_penalty adds the 'overlong' reward, which "
                             "the reward set already has; drop one of them")
        return ([*funcs, get_overlong_reward(max_length, setting.buffer)],
                [*weights, float(setting.weight)], False)
    return list(funcs), list(weights), setting.mode == "mask"
