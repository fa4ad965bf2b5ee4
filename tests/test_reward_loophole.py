"""The length-reward loophole: dropping ``</think>``, deleting tags or truncating never pays."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audsemthinker import format as fmt
from audsemthinker.rewards import build_rewards, get_reward
from audsemthinker.rewards.registry import load_reward_config

REPO = Path(__file__).resolve().parents[1]
CHOICES = ["x", "y", "z", "w"]
GOLD = "B. y"
TAGS = ("think", "semantic_elements", "answer")


def words(n: int) -> str:
    return " ".join(["w"] * n)


@functools.cache
def _rewards(config: str, no_think: str | None):
    name, _, budget = config.partition("@")
    spec = load_reward_config(REPO / "configs/reward" / name, int(budget or 25))
    for entry in spec:
        if entry["name"] == "length" and no_think is not None:
            entry["no_think"] = no_think
    return build_rewards(spec)


def total(config: str, completion: str, gold: str = GOLD, choices=CHOICES,
          no_think: str | None = None) -> float:
    """The summed, weighted reward of a shipped reward config (optionally another no_think)."""
    funcs, weights = _rewards(config, no_think)
    return sum(w * f(completions=[completion], answer=[gold], choices=[choices])[0]
               for f, w in zip(funcs, weights))


WELL_FORMED = fmt.render_target(words(40), "B", "- Physical sound sources: y")


def test_worked_example_dropping_the_closing_think_tag_no_longer_pays():
    assert total("paper.yaml", WELL_FORMED) == pytest.approx(1.5)  # 1.0 + 0.5 + 0
    unclosed = WELL_FORMED.replace("</think>", "", 1)
    assert total("paper.yaml", unclosed) == pytest.approx(1.0)  # was 1.0 + 0 + 1.0 = 2.0
    # The release's rule (count the whole completion) closes this case for the linear shape.
    assert total("paper.yaml", unclosed, no_think="whole") == pytest.approx(1.0)


def test_runaway_completion_scores_below_a_well_formed_wrong_answer():
    runaway = "<think>" + words(512)  # cut at the token limit, never closed
    wrong = fmt.render_target(words(40), "C", "- Physical sound sources: z")
    assert total("paper.yaml", wrong) == pytest.approx(0.5)
    assert total("paper.yaml", runaway) == 0.0
    assert total("paper.yaml", runaway, no_think="whole") == 0.0
    # A short runaway (cut inside <think>) is why "zero" is the default: "whole" pays it 1.0.
    short = "<think>" + words(5)
    assert total("paper.yaml", short) == 0.0
    assert total("paper.yaml", short, no_think="whole") == pytest.approx(1.0)


def test_bare_answer_without_tags_earns_no_length_reward():
    assert get_reward("length")(completions=["B"]) == [0.0]
    assert get_reward("length", no_think="whole")(completions=["B"]) == [1.0]
    assert get_reward("length", shape="cosine")(completions=["<think>" + words(25)]) == [0.0]


def test_worked_values_with_a_closed_think_block_stay():
    f = get_reward("length")
    out = f(completions=[f"<think>{words(n)}</think><answer>B</answer>" for n in (0, 20, 25, 30)])
    assert out == pytest.approx([1.0, 1.0, 0.5, 0.0])


def test_unknown_no_think_is_a_config_error():
    with pytest.raises(ValueError, match="no_think"):
        get_reward("length", no_think="half")


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------
VOCAB = ["w", "y", "x", "B", "A.", "(C)", "birds", "z"]  # letters and option words, no tag words
# Lengths drawn uniformly over 0..60 words, so both sides of every budget are common.
_text = st.integers(0, 60).flatmap(
    lambda n: st.lists(st.sampled_from(VOCAB), min_size=n, max_size=n)).map(" ".join)


@st.composite
def well_formed(draw, variant):
    think = draw(_text)
    answer = draw(st.sampled_from(["B", "y", "B. y", "C", "z", "A. x", ""]))
    elements = "- Physical sound sources: " + draw(_text) if variant == "semantic" else None
    sep = draw(st.sampled_from(["\n", "", " \n "]))
    parts = [f"<think>{think}</think>"]
    if elements is not None:
        parts.append(f"<semantic_elements>{elements}</semantic_elements>")
    parts.append(f"<answer>{answer}</answer>")
    return sep.join(parts)


@st.composite
def mutation(draw, variant):
    text = draw(well_formed(variant))
    tags = [t for t in TAGS if variant == "semantic" or t != "semantic_elements"]
    kind = draw(st.sampled_from(["delete_open", "delete_close", "truncate"]))
    if kind == "truncate":
        return text, text[:draw(st.integers(0, len(text)))]
    tag = draw(st.sampled_from(tags))
    marker = f"<{tag}>" if kind == "delete_open" else f"</{tag}>"
    return text, text.replace(marker, "", 1)


CONFIGS = [("paper.yaml", "semantic"), ("paper_cosine.yaml", "semantic"),
           ("paper.yaml@100", "semantic"), ("simple.yaml", "simple")]


@pytest.mark.parametrize("config, variant", CONFIGS)
def test_deleting_unclosing_or_truncating_never_raises_the_total(config, variant):
    @settings(max_examples=150, deadline=None)
    @given(mutation(variant))
    def check(case):
        original, mutated = case
        assert total(config, mutated) <= total(config, original) + 1e-9, (original, mutated)

    check()


@settings(max_examples=150, deadline=None)
@given(well_formed("semantic"), st.sampled_from(TAGS), st.booleans())
def test_whole_completion_rule_never_pays_for_a_deleted_tag_under_linear(text, tag, opening):
    mutated = text.replace(f"<{tag}>" if opening else f"</{tag}>", "", 1)
    assert (total("paper.yaml", mutated, no_think="whole")
            <= total("paper.yaml", text, no_think="whole") + 1e-9)
