"""An answer's text matched to one of the options (letter, text or words)."""

from __future__ import annotations

import re

from audsemthinker.format.choices import OPTION_LETTERS

_LETTER_RE = re.compile(r"^\s*[\(\[]?([A-Z])[\)\].:]?(?:\s+|$)")
_LOWER_LETTER_RE = re.compile(r"^\s*(?:\(([a-z])\)|\[([a-z])\]|([a-z])[.:)]|([a-z])$)(?:\s+|$)")


def normalize(text: str) -> str:
    """Lower-case, drop punctuation, fold whitespace: the comparison key for answers."""
    return " ".join(re.findall(r"\w+", str(text).lower()))


def word_set(text: str) -> set[str]:
    """MMAU's token set: every ``\\b\\w+\\b`` match in the lower-cased text.

    The official MMAU rule and the semantic-consistency reward both compare answers as sets of
    these tokens; one definition keeps them in step.
    """
    return set(re.findall(r"\b\w+\b", str(text).lower()))


def split_option(text: str, choices: list[str]) -> tuple[int | None, str]:
    """Split a leading option letter off an answer: ``"B. birds"`` -> ``(1, "birds")``.

    A letter counts only if it names an existing option and is followed by punctuation, space
    or the end (``"A dog barks"`` is ambiguous: it counts as letter A only if the rest is empty or
    matches option A).
    """
    text = str(text).strip()
    m = _LETTER_RE.match(text)
    if m and OPTION_LETTERS.index(m.group(1)) < len(choices):
        idx = OPTION_LETTERS.index(m.group(1))
        rest = text[m.end():].strip()
        bare_article = m.group(0).strip() == m.group(1)  # "A dog" vs "A. dog"
        if not bare_article or not rest or normalize(rest) == normalize(choices[idx]):
            return idx, rest
    # The release lower-cases answers before matching them, so "b" is option B to it. A
    # lower-case letter counts alone or marked ("b.", "(b)", "b)"), never as a word ("a dog").
    low = _LOWER_LETTER_RE.match(text)
    if low:
        letter = next(g for g in low.groups() if g).upper()
        if OPTION_LETTERS.index(letter) < len(choices):
            return OPTION_LETTERS.index(letter), text[low.end():].strip()
    return None, text


def match_option(text: str, choices: list[str]) -> int | None:
    """Which option an answer names: by letter, by text, or by both (consistent); else None.

    ``"B"``, ``"B. birds"``, ``"(B) birds"``, ``"birds"`` all give 1 for choices
    ``["dogs", "birds"]``; ``"B. dogs"`` (letter and text disagree) gives None.
    """
    choices = list(choices or [])
    idx, rest = split_option(text, choices)
    by_text = None
    key = normalize(rest)
    if key:
        hits = [i for i, c in enumerate(choices) if normalize(c) == key]
        by_text = hits[0] if len(hits) == 1 else None
    if idx is not None:
        return idx if (not key or by_text == idx or key == normalize(choices[idx])) else None
    return by_text


def answer_to_text(text: str, choices: list[str]) -> str:
    """Map a leading option letter to its choice text (for MMAU scoring); else the text as is."""
    idx, rest = split_option(text, choices)
    if idx is None:
        return str(text).strip()
    return choices[idx] if not rest else rest
