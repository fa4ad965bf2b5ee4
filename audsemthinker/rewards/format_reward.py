"""Format reward: does the whole completion follow the tag layout (docs/recipe.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from audsemthinker import format as fmt
from audsemthinker.rewards.registry import completion_text, register


@register("format")
def get_format_reward(variant: str = "semantic", value: float = 0.5) -> Callable[..., list[float]]:
    """Build the format reward: ``value`` if the completion fullmatches the variant's pattern.

    The patterns are :data:`format.FORMAT_PATTERNS` (DOTALL fullmatch after stripping outer
    whitespace): ``semantic`` needs think, semantic_elements and answer blocks in that order,
    ``simple`` needs think then answer; any text before, between (other than whitespace) or after
    the blocks fails.

    Args:
        variant: ``semantic`` or ``simple``; must match the data the policy was trained on.
        value: reward for a well-formed completion (the paper: 0.5).

    Returns:
        ``format(completions, **columns) -> list[float]``, each 0.0 or ``value``.

    Raises:
        ValueError: unknown variant.
    """
    fmt.check_variant(variant)
    value = float(value)

    def format(completions: list[Any], **kwargs: Any) -> list[float]:  # noqa: A001 - log name
        return [value if fmt.is_well_formed(completion_text(c), variant) else 0.0
                for c in completions]

    return format
