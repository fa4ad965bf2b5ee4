"""The official scoring rules of MMAU and MuchoMusic, as pure functions.

Every number we compare with a paper comes from here, so the rules follow the benchmarks' own
scripts literally: MMAU's token-set match with no fallback, where only items never generated are
left out of the denominator (an empty answer is scored, and wrong); MuchoMusic's character-level
letter-then-text pick with unanswered items counted wrong (docs/scoring.md). All accuracies
are percentages. Imports nothing heavy: the GRPO accuracy reward reuses :func:`mmau_match`.
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
    return {"accuracy": _pct(correct, scored), "correct": correct, "scored": scored,
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
    ids = _check_ids(items, _MMAU_REQUIRED, "MMAU")
    _check_known(ids, predictions, "predictions")
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
        "groups": {g: {k: _mmau_counts(groups[g][k]) for k in _ordered(g, groups[g])}
                   for g in MMAU_GROUPS},
    }


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
    ids = _check_ids(items, ("id",), "MuchoMusic")
    _check_known(ids, outputs, "outputs")
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
    ids = _check_ids(items, ("id",), "MuchoMusic")
    _check_known(ids, judgements, "judgements")
    outcomes = {}
    for item in items:
        verdict = judgements.get(item["id"])
        if verdict is not None and verdict not in (0, 1):  # True/False/0.0/1.0 compare equal
            raise ValueError(f"judgement for {item['id']!r} is {verdict!r}; expected 0 or 1")
        outcomes[item["id"]] = (verdict is not None, verdict == 1)
    return _muchomusic_result(items, outcomes, "llm_judge")
