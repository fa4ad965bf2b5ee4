"""MuchoMusic's official rule: the character-level letter-then-text pick, judged or not."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from audsemthinker.eval.tally import check_ids, check_known, pct
from audsemthinker.format import (
    MUCHOMUSIC_ANSWER_CUE,
    OPTION_LETTERS,
)


# --------------------------------------------------------------------------------------------
# MuchoMusic
# --------------------------------------------------------------------------------------------
def _option_text_pick(tail: str, options: list[str]) -> int | None:
    low = tail.lower()
    for i, option in enumerate(options):
        text = str(option).strip().lower()
        if text and text in low:
            return i
    return None


def _pick_tail(output: str | None, options: list[str]) -> str | None:
    if not 0 < len(options) <= len(OPTION_LETTERS):
        raise ValueError(f"expected 1..{len(OPTION_LETTERS)} options, got {len(options)}")
    if output is None:
        return None
    return str(output).rsplit(MUCHOMUSIC_ANSWER_CUE, 1)[-1]


def muchomusic_pick(output: str | None, options: list[str]) -> int | None:
    """The official MuchoMusic pick, read literally: characters, then option text, else None.

    Only the text after the LAST ``"The correct answer is:"`` is read (the whole output when the
    cue is absent), so an echoed prompt, which lists every option, never decides the pick. The
    option letters (``A``-``D`` for four options) are intersected with the set of *characters*
    of that text: the ``B`` of ``"Blues"`` and the ``D`` of ``"Drums"`` count, lower-case
    letters do not. If exactly one letter is found it is the pick; otherwise the first option,
    in order, whose lower-cased text occurs in the lower-cased text; otherwise None.

    Args:
        output: the model's generated text, or None.
        options: the option texts in the order shown as (A), (B), ...

    Returns:
        The picked option's index, or None (unanswered).

    Raises:
        ValueError: no options, or more than there are letters.
    """
    tail = _pick_tail(output, options)
    if tail is None:
        return None
    letters = set(OPTION_LETTERS[:len(options)]) & set(tail)
    if len(letters) == 1:
        return OPTION_LETTERS.index(letters.pop())
    return _option_text_pick(tail, options)


def muchomusic_pick_word(output: str | None, options: list[str]) -> int | None:
    """A stricter reading of the pick: letters count only as standalone words.

    As :func:`muchomusic_pick`, but a letter is a capital option letter matched by regex
    ``\\b[A-D]\\b`` (for four options): ``"(B)"``, ``"B."`` and ``"B"`` count, the ``B`` inside
    ``"Blues"`` does not, the article ``"A"`` does. Reported beside the official pick as the
    ``word_boundary`` variant; the two differ on about one random output in five.
    """
    tail = _pick_tail(output, options)
    if tail is None:
        return None
    letters = set(re.findall(rf"\b[{OPTION_LETTERS[:len(options)]}]\b", tail))
    if len(letters) == 1:
        return OPTION_LETTERS.index(letters.pop())
    return _option_text_pick(tail, options)


MUCHOMUSIC_PICKS = {"official": muchomusic_pick, "word_boundary": muchomusic_pick_word}
"""MuchoMusic pick rules by name: ``official`` (the benchmark's own, the default) and
``word_boundary`` (letters as whole words), reported beside it."""


_TRUE = {"true", "1", "yes", "y", "t", "1.0"}
_FALSE = {"false", "0", "no", "n", "f", "", "nan", "none", "0.0"}


def _flag(value, item_id, key: str) -> bool:
    """CSV flags arrive as "True"/"False" strings, where plain truthiness would say True."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)):
        return not math.isnan(value) and value != 0
    s = str(value).strip().lower()
    if s in _TRUE or s in _FALSE:
        return s in _TRUE
    raise ValueError(f"MuchoMusic item {item_id!r}: {key}={value!r} is not a boolean flag")


def muchomusic_options(item: Mapping) -> tuple[list[str], int]:
    """The shown options of a MuchoMusic item and the correct one's index.

    Args:
        item: a dict with ``options`` (or ``choices``) in the shown order and either
            ``answer_index`` or ``correct_answer`` (text occurring exactly once in the options).

    Returns:
        ``(options, correct index)``.

    Raises:
        ValueError: no options, or the correct answer cannot be located unambiguously.
    """
    options = list(item.get("options", item.get("choices")) or [])
    if not options:
        raise ValueError(f"MuchoMusic item {item.get('id')!r} has no options/choices")
    if item.get("answer_index") is not None:
        idx = int(item["answer_index"])
        if not 0 <= idx < len(options):
            raise ValueError(f"MuchoMusic item {item.get('id')!r}: answer_index {idx} out of range")
        return options, idx
    hits = [i for i, o in enumerate(options) if o == item.get("correct_answer")]
    if len(hits) != 1:
        raise ValueError(f"MuchoMusic item {item.get('id')!r}: correct_answer occurs "
                         f"{len(hits)} times among the options")
    return options, hits[0]


def _mucho_counts(tally: list[int], judged: bool) -> dict:
    correct, answered, n = tally
    return {"accuracy": pct(correct, n),
            "instruction_following": None if judged else pct(answered, n),
            "correct": correct, "answered": answered, "unanswered": n - answered, "n": n}


def _muchomusic_result(items: list[Mapping], outcomes: dict[str, tuple[bool, bool]],
                       method: str) -> dict:
    total = [0, 0, 0]
    subset: dict[str, list[int]] = {}
    dataset: dict[str, list[int]] = {}
    for item in items:
        answered, correct = outcomes[item["id"]]
        tallies = [total]
        for key, name in (("music_knowledge", "knowledge"), ("music_reasoning", "reasoning")):
            if _flag(item.get(key), item["id"], key):
                tallies.append(subset.setdefault(name, [0, 0, 0]))
        if item.get("dataset"):
            tallies.append(dataset.setdefault(str(item["dataset"]), [0, 0, 0]))
        for t in tallies:
            t[0] += correct
            t[1] += answered
            t[2] += 1
    judged = method == "llm_judge"
    return {
        "benchmark": "muchomusic",
        "method": method,
        "n_items": len(items),
        "total": _mucho_counts(total, judged),
        "groups": {"subset": {k: _mucho_counts(subset[k], judged) for k in sorted(subset)},
                   "dataset": {k: _mucho_counts(dataset[k], judged) for k in sorted(dataset)}},
    }


def score_muchomusic(items: list[Mapping], outputs: Mapping[str, str | None],
                     pick: str = "official") -> dict:
    """Score MuchoMusic outputs with a pick rule (:data:`MUCHOMUSIC_PICKS`, default official).

    Args:
        items: dicts with ``id``, the options (see :func:`muchomusic_options`), and optionally
            ``music_knowledge`` / ``music_reasoning`` flags (bools or CSV strings) and
            ``dataset`` (sdd | musiccaps).
        outputs: ``{id: generated text or None}``; a missing or None output (e.g. unreadable
            audio) is unanswered: wrong, and in the denominator.
        pick: ``official`` (:func:`muchomusic_pick`) or ``word_boundary``
            (:func:`muchomusic_pick_word`).

    Returns:
        A JSON-able dict, ``method`` "official_rule" or "word_boundary_rule": ``total`` and
        ``groups["subset"]`` (knowledge, reasoning) and ``groups["dataset"]``, each with
        ``accuracy`` (percent of all N, unanswered counted wrong), ``instruction_following``
        (percent answered), ``correct``, ``answered``, ``unanswered`` and ``n``.

    Raises:
        ValueError: a missing id, duplicate id, bad options or flag, outputs for unknown ids,
            or an unknown pick.
    """
    if pick not in MUCHOMUSIC_PICKS:
        raise ValueError(f"unknown MuchoMusic pick {pick!r}; expected one of "
                         f"{sorted(MUCHOMUSIC_PICKS)}")
    rule = MUCHOMUSIC_PICKS[pick]
    ids = check_ids(items, ("id",), "MuchoMusic")
    check_known(ids, outputs, "outputs")
    outcomes = {}
    for item in items:
        options, gold = muchomusic_options(item)
        choice = rule(outputs.get(item["id"]), options)
        outcomes[item["id"]] = (choice is not None, choice == gold)
    return _muchomusic_result(items, outcomes, f"{pick}_rule")


def score_muchomusic_judged(items: list[Mapping], judgements: Mapping[str, int | None]) -> dict:
    """Score MuchoMusic from 0/1 LLM-judge verdicts (the way some suites report it).

    Args:
        items: as for :func:`score_muchomusic` (options are not needed).
        judgements: ``{id: 1 correct, 0 wrong, None not judged}``; an item without a verdict
            counts as wrong and as unanswered.

    Returns:
        The same shape as :func:`score_muchomusic` with ``method`` "llm_judge" and
        ``instruction_following`` None (a judge does not measure it).

    Raises:
        ValueError: a verdict other than 0/1, a duplicate id, or verdicts for unknown ids.
    """
    ids = check_ids(items, ("id",), "MuchoMusic")
    check_known(ids, judgements, "judgements")
    outcomes = {}
    for item in items:
        verdict = judgements.get(item["id"])
        if verdict is not None and verdict not in (0, 1):  # True/False/0.0/1.0 compare equal
            raise ValueError(f"judgement for {item['id']!r} is {verdict!r}; expected 0 or 1")
        outcomes[item["id"]] = (verdict is not None, verdict == 1)
    return _muchomusic_result(items, outcomes, "llm_judge")
