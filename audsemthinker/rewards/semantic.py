"""Rewards that read the ``<semantic_elements>`` block.

The paper found the semantic elements helped SFT but not GRPO, because outcome-only rewards
ignore them. ``semantic_coverage`` rewards addressing the descriptor categories a task needs;
``semantic_consistency`` rewards an answer the listed elements support.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from audsemthinker import format as fmt
from audsemthinker.rewards.registry import (
    choices_list,
    column,
    completion_text,
    register,
)

STOPWORDS = frozenset(
    "a an the of and or to in on at by for with from as is are was were be been being it its "
    "this that these those there some any into over under no not".split()
)
"""Words too common to count as an option's content (a short list: option texts are short)."""


def _check_targets(targets: Iterable[str], where: str) -> tuple[str, ...]:
    targets = tuple(str(t) for t in targets)
    unknown = [t for t in targets if t not in fmt.CATEGORY_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown semantic categories {unknown}; "
                         f"known: {list(fmt.CATEGORY_KEYS)}")
    if not targets:
        raise ValueError(f"{where}: the target category list is empty")
    return tuple(dict.fromkeys(targets))  # drop repeats, keep order


_PLACEHOLDERS = frozenset({"", "none", "n a", "na", "nothing", "unknown", "not present",
                           "not applicable", "not mentioned", "not specified"})
"""Elements that address no category (normalised); they would otherwise be free coverage."""


def elements_of(text: str) -> dict[str, list[str]]:
    """``{category key: [element, ...]}`` from the first semantic block; {} if none.

    Placeholder elements such as "none" or "N/A" are dropped, so "- Temporal context: none"
    does not count as addressing the temporal context.
    """
    block = fmt.parse(text).semantic_elements
    if block is None:
        return {}
    found = {k: [x for x in xs if fmt.normalize(x) not in _PLACEHOLDERS]
             for k, xs in fmt.parse_semantic_elements(block).items()}
    return {k: xs for k, xs in found.items() if xs}


@register("semantic_coverage")
def get_semantic_coverage_reward(targets: Iterable[str] | None = None,
                                 targets_by_task: Mapping[str, Iterable[str]] | None = None,
                                 value: float = 1.0) -> Callable[..., list[float]]:
    """Build the coverage reward: ``value * covered targets / targets``.

    A target category is covered when the first ``<semantic_elements>`` block lists at least one
    element under it (headings parsed by :func:`format.parse_semantic_elements`, which accepts
    the category aliases). A missing block, or one with no recognisable heading, scores 0. The
    block is read wherever it sits: the format reward is what enforces the layout.

    Args:
        targets: category keys to cover; None means all nine.
        targets_by_task: per value of the dataset's ``task`` column (e.g. ``music``), its own
            key list (music questions need not name a spatial context); other tasks use
            ``targets``.
        value: reward when every target is covered.

    Returns:
        ``semantic_coverage(completions, **columns) -> list[float]`` in [0, value].

    Raises:
        ValueError: an unknown category key or an empty target list.
    """
    default = _check_targets(fmt.CATEGORY_KEYS if targets is None else targets, "targets")
    by_task = {str(task): _check_targets(keys, f"targets_by_task[{task!r}]")
               for task, keys in dict(targets_by_task or {}).items()}
    value = float(value)

    def semantic_coverage(completions: list[Any], **kwargs: Any) -> list[float]:
        tasks = column(kwargs, "task", len(completions))
        out = []
        for c, task in zip(completions, tasks):
            wanted = by_task.get(str(task), default) if task is not None else default
            found = elements_of(completion_text(c))
            out.append(value * sum(1 for t in wanted if found.get(t)) / len(wanted))
        return out

    return semantic_coverage


def supported_choice(text: str, choices: list[str]) -> bool:
    """Whether the completion's chosen option is supported and uncontradicted by its elements.

    Heuristic, on MMAU's token sets (:func:`format.word_set`, minus :data:`STOPWORDS`):

    - the chosen option's content words must all occur in the semantic elements or the
      ``<think>`` text;
    - no semantic element may contain a distractor's distinctive word (a word of another option
      that the chosen option does not have), like MMAU's rule for a prediction.

    Known failure cases: synonyms and paraphrases ("canine" for "dog") count as unsupported;
    negations ("no dog present") count as naming the word; a distractor word that is also a
    legitimate detail ("car" in "a car passes while a dog barks" when "car horn" is a distractor)
    counts as a contradiction; options made only of stopwords ("none of the above") are never
    supported; inflections differ ("barks" vs "barking"). It rewards consistency, not truth.

    Returns:
        False if there is no ``<answer>`` block or it names no option.
    """
    parts = fmt.parse(text)
    if parts.answer is None:
        return False
    idx = fmt.match_option(parts.answer, choices)
    if idx is None:
        return False
    chosen = fmt.word_set(choices[idx])
    content = chosen - STOPWORDS
    if not content:
        return False
    items = [x for xs in elements_of(text).values() for x in xs]
    element_words = fmt.word_set(" ".join(items))
    evidence = element_words | fmt.word_set(parts.think or "")
    if not content <= evidence:
        return False
    distinctive: set[str] = set()
    for j, option in enumerate(choices):
        words = fmt.word_set(option)
        if j != idx and words != chosen:
            distinctive |= words - chosen - STOPWORDS
    return not (element_words & distinctive)


@register("semantic_consistency")
def get_semantic_consistency_reward(value: float = 1.0) -> Callable[..., list[float]]:
    """Build the consistency reward: ``value`` when :func:`supported_choice` holds, else 0.

    Only multiple-choice rows (a non-empty ``choices`` column value) can score; open questions,
    completions without an ``<answer>`` block and answers naming no option get 0.

    Args:
        value: reward for a supported, uncontradicted choice.

    Returns:
        ``semantic_consistency(completions, **columns) -> list[float]``, each 0.0 or ``value``.
    """
    value = float(value)

    def semantic_consistency(completions: list[Any], **kwargs: Any) -> list[float]:
        choices = column(kwargs, "choices", len(completions))
        out = []
        for c, ch in zip(completions, choices):
            opts = choices_list(ch)
            out.append(value if opts and supported_choice(completion_text(c), opts) else 0.0)
        return out

    return semantic_consistency
