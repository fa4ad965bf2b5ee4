"""The official scoring rules of MMAU and MuchoMusic, as pure functions.

Every number we compare with a paper comes from here, so the rules follow the benchmarks' own
scripts literally (docs BENCHMARKS.md): MMAU's token-set match with no fallback and skipped items
left out of the denominator; MuchoMusic's letter-then-text pick with unanswered items counted
wrong. All accuracies are percentages. Imports nothing heavy: the GRPO accuracy reward reuses
:func:`mmau_match`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from audsemthinker.format import (
    MUCHOMUSIC_ANSWER_CUE,
    OPTION_LETTERS,
    answer_to_text,
    extract_answer,
    word_set,
)

MMAU_GROUPS = ("task", "difficulty", "sub-category", "category")
"""The MMAU item fields accuracy is broken down by, in report order."""
_MMAU_REQUIRED = ("id", "choices", "answer", *MMAU_GROUPS)
_KNOWN_ORDER = {"task": ("sound", "music", "speech"), "difficulty": ("easy", "medium", "hard")}


def _pct(num: int, den: int) -> float | None:
    return 100.0 * num / den if den else None


def _ordered(group: str, tallies: dict[str, list[int]]) -> list[str]:
    known = _KNOWN_ORDER.get(group, ())
    return [k for k in known if k in tallies] + sorted(k for k in tallies if k not in known)


def _check_ids(items: list[Mapping], required: tuple[str, ...], bench: str) -> set[str]:
    seen: set[str] = set()
    for i, item in enumerate(items):
        missing = [k for k in required if k not in item]
        if missing:
            raise ValueError(f"{bench} item #{i} lacks keys {missing}; got {sorted(item)}")
        if item["id"] in seen:
            raise ValueError(f"{bench} item id {item['id']!r} occurs twice")
        seen.add(item["id"])
    return seen


def _check_known(ids: set[str], given: Iterable, what: str) -> None:
    unknown = sorted(str(k) for k in set(given) - ids)
    if unknown:
        raise ValueError(f"{len(unknown)} {what} for ids not among the items (e.g. {unknown[:3]}):"
                         " wrong benchmark file, split or version?")


# --------------------------------------------------------------------------------------------
# MMAU
# --------------------------------------------------------------------------------------------
def mmau_tokens(text: str) -> set[str]:
    """The official tokenisation: the set of regex ``\\b\\w+\\b`` matches in ``text.lower()``."""
    return word_set(text)


def mmau_match(answer: str, prediction: str, choices: list[str]) -> bool:
    """The official MMAU rule: the answer's tokens are all predicted and no distractor's are.

    A distractor token is a token of another choice that is not in the answer (choices whose
    token set equals the answer's are not distractors). So "The answer is a man speaking" matches
    "Man" among ["Man", "Woman", ...], while "a man or a woman" does not.

    Args:
        answer: the gold choice text.
        prediction: the model's answer text (already mapped from a leading letter, see
            :func:`mmau_prediction`); a bare letter is scored as the word it is, no mapping.
        choices: all choices of the item, the answer included.

    Returns:
        True iff the prediction is correct under the official rule; False for an empty one.
    """
    pred, gold = mmau_tokens(prediction), mmau_tokens(answer)
    if not pred:
        return False
    wrong: set[str] = set()
    for choice in choices:
        toks = mmau_tokens(choice)
        if toks != gold:
            wrong |= toks - gold
    return gold <= pred and not (pred & wrong)


def mmau_prediction(completion: str | None, choices: list[str]) -> str | None:
    """The text MMAU scores for a completion: its answer with a leading option letter mapped.

    Args:
        completion: the raw generated text; ``None`` when generation produced nothing.
        choices: the item's choices, in the order shown in the prompt.

    Returns:
        The ``<answer>`` content (the whole text if the tag is absent, as
        :func:`format.extract_answer` does) with ``"B"``, ``"B. x"`` or ``"(B) x"`` turned into
        choice text by :func:`format.answer_to_text`; ``None`` (a skipped item) when empty.
    """
    if completion is None:
        return None
    text = answer_to_text(extract_answer(completion), choices)
    return text if text.strip() else None


def _mmau_group(item: Mapping, key: str) -> str:
    value = item[key]
    if isinstance(value, (list, tuple)):  # a few items hold category ["Reasoning"]
        value = value[0] if value else None
    if value is None or not str(value).strip():
        raise ValueError(f"MMAU item {item['id']!r} has an empty {key!r}")
    return str(value)


def _mmau_counts(tally: list[int]) -> dict:
    correct, scored, skipped = tally
    return {"accuracy": _pct(correct, scored), "correct": correct, "scored": scored,
            "skipped": skipped}


def score_mmau(items: list[Mapping], predictions: Mapping[str, str | None]) -> dict:
    """Score MMAU predictions: total (micro) and per task, difficulty, sub-category, category.

    Args:
        items: MMAU-schema dicts (``id, question, choices, answer, task, difficulty, category,
            sub-category, ...``) with gold answers (test-mini).
        predictions: ``{id: answer text or None}``, e.g. from :func:`mmau_prediction`. An item
            with no entry, ``None`` or blank text is skipped: counted and reported, but not in
            the denominator, as the official script does.

    Returns:
        A JSON-able dict: ``total`` and ``groups[field][value]``, each holding ``accuracy``
        (percent of scored, or None when nothing was scored), ``correct``, ``scored`` and
        ``skipped``; plus ``n_items`` and ``method`` ("official_rule").

    Raises:
        ValueError: a missing key, duplicate id, empty answer (the test split is scored by the
            benchmark server: write a submission instead), or predictions for unknown ids.
        TypeError: a prediction that is neither a string nor None.
    """
    ids = _check_ids(items, _MMAU_REQUIRED, "MMAU")
    _check_known(ids, predictions, "predictions")
    total = [0, 0, 0]
    groups: dict[str, dict[str, list[int]]] = {g: {} for g in MMAU_GROUPS}
    for item in items:
        if not str(item["answer"]).strip():
            raise ValueError(f"MMAU item {item['id']!r} has no answer: the test split is scored "
                             "by the benchmark server (write a submission file instead)")
        pred = predictions.get(item["id"])
        if pred is not None and not isinstance(pred, str):
            raise TypeError(f"prediction for {item['id']!r} is {type(pred).__name__}, not str")
        tallies = [total] + [groups[g].setdefault(_mmau_group(item, g), [0, 0, 0])
                             for g in MMAU_GROUPS]
        if pred is None or not pred.strip():
            for t in tallies:
                t[2] += 1
            continue
        ok = mmau_match(item["answer"], pred, list(item["choices"]))
        for t in tallies:
            t[0] += ok
            t[1] += 1
    return {
        "benchmark": "mmau",
        "method": "official_rule",
        "n_items": len(items),
        "total": _mmau_counts(total),
        "groups": {g: {k: _mmau_counts(groups[g][k]) for k in _ordered(g, groups[g])}
                   for g in MMAU_GROUPS},
    }


# --------------------------------------------------------------------------------------------
# MuchoMusic
# --------------------------------------------------------------------------------------------
def muchomusic_pick(output: str | None, options: list[str]) -> int | None:
    """The official MuchoMusic pick: a lone option letter, else the first option text, else None.

    Only the text after the LAST ``"The correct answer is:"`` is read (the whole output when the
    cue is absent), so an echoed prompt, which lists every option, never decides the pick.
    Letters are standalone capital option letters, regex ``\\b[A-D]\\b`` for four options (the
    class covers the first ``len(options)`` letters): ``"(B)"``, ``"B."`` and ``"B"`` count;
    lower-case ``"b"`` and the ``B`` inside ``"Blues"`` do not; the article ``"A"`` does. When
    exactly one distinct letter occurs (repeats allowed) it is the pick. Otherwise the first
    option, in order, whose lower-cased text occurs in the lower-cased tail is the pick.

    Args:
        output: the model's generated text, or None.
        options: the option texts in the order shown as (A), (B), ...

    Returns:
        The picked option's index, or None (unanswered).

    Raises:
        ValueError: no options, or more than there are letters.
    """
    if not 0 < len(options) <= len(OPTION_LETTERS):
        raise ValueError(f"expected 1..{len(OPTION_LETTERS)} options, got {len(options)}")
    if output is None:
        return None
    tail = str(output).rsplit(MUCHOMUSIC_ANSWER_CUE, 1)[-1]
    letters = set(re.findall(rf"\b[{OPTION_LETTERS[:len(options)]}]\b", tail))
    if len(letters) == 1:
        return OPTION_LETTERS.index(letters.pop())
    low = tail.lower()
    for i, option in enumerate(options):
        text = str(option).strip().lower()
        if text and text in low:
            return i
    return None


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
    return {"accuracy": _pct(correct, n),
            "instruction_following": None if judged else _pct(answered, n),
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


def score_muchomusic(items: list[Mapping], outputs: Mapping[str, str | None]) -> dict:
    """Score MuchoMusic outputs with the official pick rule (:func:`muchomusic_pick`).

    Args:
        items: dicts with ``id``, the options (see :func:`muchomusic_options`), and optionally
            ``music_knowledge`` / ``music_reasoning`` flags (bools or CSV strings) and
            ``dataset`` (sdd | musiccaps).
        outputs: ``{id: generated text or None}``; a missing or None output is unanswered.

    Returns:
        A JSON-able dict, ``method`` "official_rule": ``total`` and ``groups["subset"]``
        (knowledge, reasoning) and ``groups["dataset"]``, each with ``accuracy`` (percent of all
        N, unanswered counted wrong), ``instruction_following`` (percent answered), ``correct``,
        ``answered``, ``unanswered`` and ``n``.

    Raises:
        ValueError: a missing id, duplicate id, bad options or flag, or outputs for unknown ids.
    """
    ids = _check_ids(items, ("id",), "MuchoMusic")
    _check_known(ids, outputs, "outputs")
    outcomes = {}
    for item in items:
        options, gold = muchomusic_options(item)
        pick = muchomusic_pick(outputs.get(item["id"]), options)
        outcomes[item["id"]] = (pick is not None, pick == gold)
    return _muchomusic_result(items, outcomes, "official_rule")


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
    ids = _check_ids(items, ("id",), "MuchoMusic")
    _check_known(ids, judgements, "judgements")
    outcomes = {}
    for item in items:
        verdict = judgements.get(item["id"])
        if verdict is not None and verdict not in (0, 1):  # True/False/0.0/1.0 compare equal
            raise ValueError(f"judgement for {item['id']!r} is {verdict!r}; expected 0 or 1")
        outcomes[item["id"]] = (verdict is not None, verdict == 1)
    return _muchomusic_result(items, outcomes, "llm_judge")
