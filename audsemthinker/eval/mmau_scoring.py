"""MMAU's official rule: token-set match with no fallback, accuracy by group."""

from __future__ import annotations

from collections.abc import Mapping

from audsemthinker.eval.tally import check_ids, check_known, ordered_groups, pct
from audsemthinker.format import (
    answer_to_text,
    extract_answer,
    word_set,
)

MMAU_GROUPS = ("task", "difficulty", "sub-category", "category")
"""The MMAU item fields accuracy is broken down by, in report order."""
_MMAU_REQUIRED = ("id", "choices", "answer", *MMAU_GROUPS)


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
        choice text by :func:`format.answer_to_text`; ``""`` for an empty answer or completion
        (scored wrong, as the official script scores an empty ``model_output``); ``None`` only
        when nothing was generated.
    """
    if completion is None:
        return None
    return answer_to_text(extract_answer(completion), choices).strip()


def _mmau_group(item: Mapping, key: str) -> str:
    value = item[key]
    if isinstance(value, (list, tuple)):  # a few items hold category ["Reasoning"]
        value = value[0] if value else None
    if value is None or not str(value).strip():
        raise ValueError(f"MMAU item {item['id']!r} has an empty {key!r}")
    return str(value)


def _mmau_counts(tally: list[int]) -> dict:
    correct, scored, skipped, empty = tally
    return {"accuracy": pct(correct, scored), "correct": correct, "scored": scored,
            "skipped": skipped, "empty": empty}


def score_mmau(items: list[Mapping], predictions: Mapping[str, str | None]) -> dict:
    """Score MMAU predictions: total (micro) and per task, difficulty, sub-category, category.

    Args:
        items: MMAU-schema dicts (``id, question, choices, answer, task, difficulty, category,
            sub-category, ...``) with gold answers (test-mini).
        predictions: ``{id: answer text or None}``, e.g. from :func:`mmau_prediction`. An item
            with no entry or ``None`` was never generated (e.g. unreadable audio): it is
            skipped, counted but not in the denominator, as the official script skips an item
            without ``model_output``. Blank text is scored (always wrong) and counted as empty.

    Returns:
        A JSON-able dict: ``total`` and ``groups[field][value]``, each holding ``accuracy``
        (percent of scored, or None when nothing was scored), ``correct``, ``scored``,
        ``skipped`` (never generated) and ``empty`` (scored, blank answer); plus ``n_items``
        and ``method`` ("official_rule").

    Raises:
        ValueError: a missing key, duplicate id, empty answer (the test split is scored by the
            benchmark server: write a submission instead), or predictions for unknown ids.
        TypeError: a prediction that is neither a string nor None.
    """
    ids = check_ids(items, _MMAU_REQUIRED, "MMAU")
    check_known(ids, predictions, "predictions")
    total = [0, 0, 0, 0]
    groups: dict[str, dict[str, list[int]]] = {g: {} for g in MMAU_GROUPS}
    for item in items:
        if not str(item["answer"]).strip():
            raise ValueError(f"MMAU item {item['id']!r} has no answer: the test split is scored "
                             "by the benchmark server (write a submission file instead)")
        pred = predictions.get(item["id"])
        if pred is not None and not isinstance(pred, str):
            raise TypeError(f"prediction for {item['id']!r} is {type(pred).__name__}, not str")
        tallies = [total] + [groups[g].setdefault(_mmau_group(item, g), [0, 0, 0, 0])
                             for g in MMAU_GROUPS]
        if pred is None:
            for t in tallies:
                t[2] += 1
            continue
        ok = mmau_match(item["answer"], pred, list(item["choices"]))
        for t in tallies:
            t[0] += ok
            t[1] += 1
            t[3] += not pred.strip()
    return {
        "benchmark": "mmau",
        "method": "official_rule",
        "n_items": len(items),
        "total": _mmau_counts(total),
        "groups": {g: {k: _mmau_counts(groups[g][k]) for k in ordered_groups(g, groups[g])}
                   for g in MMAU_GROUPS},
    }
