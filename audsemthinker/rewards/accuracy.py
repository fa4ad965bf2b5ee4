"""Accuracy reward: does the ``<answer>`` name the gold answer (docs/recipe.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from audsemthinker import format as fmt
from audsemthinker.rewards.registry import choices_list, column, completion_text, register

MODES = ("option", "mmau")


def option_correct(prediction: str, gold: Any, choices: list[str] | None) -> bool:
    """Whether an extracted answer names the gold option (letter, text, or both).

    With choices, gold and prediction are both mapped to an option index with
    :func:`format.match_option`, so ``"B"``, ``"birds"``, ``"B. birds"`` and ``"(B) Birds!"`` all
    equal gold ``"B. birds"`` (the release compared exact strings and scored ``"B"`` wrong). If the
    gold names no option (a data problem), or there are no choices, the normalised strings
    (:func:`format.normalize`) must be equal and non-empty.

    Args:
        prediction: the extracted answer text.
        gold: the dataset's ``answer`` value; None scores False.
        choices: the row's options, or None for open questions.
    """
    if gold is None:
        return False
    gold = str(gold)
    if choices:
        gold_idx = fmt.match_option(gold, choices)
        if gold_idx is not None:
            return fmt.match_option(prediction, choices) == gold_idx
    key = fmt.normalize(gold)
    return bool(key) and fmt.normalize(prediction) == key


def _mmau_correct(match: Callable[[str, str, list[str]], bool], prediction: str, gold: Any,
                  choices: list[str] | None) -> bool:
    if gold is None:
        return False
    choices = choices or []
    gold_idx = fmt.match_option(str(gold), choices) if choices else None
    if gold_idx is not None:
        gold_text = choices[gold_idx]
    else:
        gold_text = fmt.answer_to_text(str(gold), choices)
    return bool(match(gold_text, fmt.answer_to_text(prediction, choices), choices))


@register("accuracy")
def get_accuracy_reward(mode: str = "option", value: float = 1.0) -> Callable[..., list[float]]:
    """Build the accuracy reward: ``value`` if the answer is right, else 0.0.

    The answer is :func:`format.extract_answer` of the completion (first ``<answer>`` block,
    DOTALL; the whole text if there is none). Reads the dataset columns ``answer`` (gold) and
    ``choices`` (list of options, or None).

    Args:
        mode: ``option`` compares option indices (:func:`option_correct`); ``mmau`` applies the
            official MMAU token-set rule (``audsemthinker.eval.scoring.mmau_match``) after mapping
            a leading option letter to its text, and a gold given as ``"B. text"`` to the choice
            text, so training optimises what the benchmark scores.
        value: reward for a correct answer.

    Returns:
        ``accuracy(completions, **columns) -> list[float]``, each 0.0 or ``value``.

    Raises:
        ValueError: unknown mode. The returned function raises ValueError only when a column
            does not hold one value per completion, never because of a completion's text.
        ImportError: mode ``mmau`` while ``audsemthinker.eval.scoring`` is unavailable.
    """
    if mode not in MODES:
        raise ValueError(f"unknown accuracy mode {mode!r}; expected one of {MODES}")
    value = float(value)
    if mode == "mmau":
        from audsemthinker.eval.scoring import mmau_match  # lazy: the eval package is optional here

        def correct(pred: str, gold: Any, choices: list[str] | None) -> bool:
            return _mmau_correct(mmau_match, pred, gold, choices)
    else:
        correct = option_correct

    def accuracy(completions: list[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        golds, choices = column(kwargs, "answer", n), column(kwargs, "choices", n)
        return [value if correct(fmt.extract_answer(completion_text(c)), g, choices_list(ch))
                else 0.0
                for c, g, ch in zip(completions, golds, choices)]

    return accuracy
