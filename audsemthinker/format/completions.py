"""Training targets and the parsers of a completion's blocks."""

from __future__ import annotations

from dataclasses import dataclass

from audsemthinker.format.tags import (
    ANSWER,
    FORMAT_PATTERNS,
    SEMANTIC,
    THINK,
    check_variant,
    first_block,
)


# --------------------------------------------------------------------------------------------
# Targets and parsing
# --------------------------------------------------------------------------------------------
def render_target(think: str, answer: str, semantic_elements: str | None = None,
                  variant: str = "semantic") -> str:
    """The assistant target: think, semantic elements (semantic variant), answer; one per line."""
    check_variant(variant)
    parts = [f"<think>{think}</think>"]
    if variant == "semantic":
        if semantic_elements is None:
            raise ValueError("the semantic variant needs semantic_elements")
        parts.append(f"<semantic_elements>{semantic_elements}</semantic_elements>")
    parts.append(f"<answer>{answer}</answer>")
    return "\n".join(parts)


@dataclass(frozen=True)
class Parts:
    """What :func:`parse` finds in a completion; a missing block is ``None``."""

    think: str | None
    semantic_elements: str | None
    answer: str | None
    well_formed: bool


def parse(completion: str, variant: str = "semantic") -> Parts:
    """Split a completion into its blocks (first occurrence of each); never raises."""
    text = str(completion)
    found = {t: first_block(text, t) for t in (THINK, SEMANTIC, ANSWER)}
    return Parts(found[THINK], found[SEMANTIC], found[ANSWER], is_well_formed(text, variant))


def is_well_formed(completion: str, variant: str = "semantic") -> bool:
    return FORMAT_PATTERNS[check_variant(variant)].fullmatch(str(completion).strip()) is not None


def extract_answer(completion: str) -> str:
    """The first ``<answer>...</answer>`` content (DOTALL), or the whole text if absent."""
    block = first_block(completion, ANSWER)
    return (str(completion) if block is None else block).strip()


def think_words(completion: str) -> int:
    """Whitespace-separated words inside the first ``<think>`` block (0 if absent)."""
    block = first_block(completion, THINK)
    return len(block.split()) if block is not None else 0
