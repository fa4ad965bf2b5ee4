"""The output tags and variants, and the one reader of a tagged block."""

from __future__ import annotations

import re

# --------------------------------------------------------------------------------------------
# Tags and variants
# --------------------------------------------------------------------------------------------
THINK, SEMANTIC, ANSWER = "think", "semantic_elements", "answer"
VARIANTS = ("semantic", "simple")
"""`semantic`: think + semantic_elements + answer (the paper); `simple`: think + answer."""

FORMAT_PATTERNS = {
    "semantic": re.compile(
        r"<think>.*?</think>\s*<semantic_elements>.*?</semantic_elements>\s*<answer>.*?</answer>",
        re.DOTALL,
    ),
    "simple": re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL),
}
"""Exact fullmatch patterns of the paper's format reward (docs/recipe.md)."""


def first_block(text: str, tag: str) -> str | None:
    """The content of the first ``<tag>...</tag>`` (what ``re.search(r"<tag>(.*?)</tag>",
    DOTALL)`` returns), or None.

    Two ``str.find`` calls instead of the regex: the regex retries at every later ``<tag>``
    once the first one has no closing tag, which is quadratic (seconds on a 100k-character
    completion of repeated ``<think>``). If the first opening tag has no closing tag after it,
    no later one has either, so the first opening tag decides.
    """
    text = str(text)
    start = text.find(f"<{tag}>")
    if start < 0:
        return None
    start += len(tag) + 2
    end = text.find(f"</{tag}>", start)
    return text[start:end] if end >= 0 else None


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown format variant {variant!r}; expected one of {VARIANTS}")
    return variant
