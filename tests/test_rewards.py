"""The paper's GRPO rewards (docs/recipe.md), the registry, and never-raise properties."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audsemthinker import format as fmt
from audsemthinker.rewards import (
    REWARDS,
    available_rewards,
    build_rewards,
    completion_text,
    get_reward,
)
from audsemthinker.rewards.registry import load_reward_config

REPO = Path(__file__).resolve().parents[1]
CHOICES = ["The sound of a dog barking", "The sound of birds", "A car horn", "Rain on a roof"]


def words(n: int) -> str:
    return " ".join(["w"] * n)


def semantic(think: str = "x", elements: str = "- Physical sound sources: bird", answer: str = "B"):
    return fmt.render_target(think, answer, elements)


# --------------------------------------------------------------------------------------------
# completion_text
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("completion, text", [
    ("plain", "plain"),
    ([{"role": "assistant", "content": "<answer>B</answer>"}], "<answer>B</answer>"),
    ([{"role": "assistant", "content": [{"type": "text", "text": "a"},
                                        {"type": "text", "text": "b"}]}], "ab"),
    ({"role": "assistant", "content": "one"}, "one"),
    (None, ""),
])
def test_completion_text_plain_and_conversational(completion, text):
    assert completion_text(completion) == text


def test_conversational_completion_is_scored_like_plain():
    acc = get_reward("accuracy")
    conv = [[{"role": "assistant", "content": "<answer>B</answer>"}]]
    assert acc(completions=conv, answer=["B. The sound of birds"], choices=[CHOICES]) == [1.0]


# --------------------------------------------------------------------------------------------
# accuracy
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer_text, expected", [
    ("B", 1.0),                                  # letter only (the release scored this 0)
    ("The sound of birds", 1.0),                 # text only
    ("B. The sound of birds", 1.0),              # both
    ("(B) the sound of birds!", 1.0),            # both, other punctuation and case
    ("A", 0.0),                                  # wrong letter
    ("A car horn", 0.0),                         # wrong text
    ("B. A car horn", 0.0),                      # letter and text disagree
    ("", 0.0),
])
def test_accuracy_option_letter_text_both(answer_text, expected):
    acc = get_reward("accuracy")
    out = acc(prompts=["p"], completions=[semantic(answer=answer_text)],
              answer=["B. The sound of birds"], choices=[CHOICES], trainer_state=None)
    assert out == [expected]


@pytest.mark.parametrize("gold", ["B", "The sound of birds", "B. The sound of birds"])
def test_accuracy_gold_in_any_form(gold):
    acc = get_reward("accuracy")
    assert acc(completions=["<answer>birds</answer>", "<answer>The sound of birds</answer>"],
               answer=[gold, gold], choices=[CHOICES, CHOICES]) == [0.0, 1.0]


def test_accuracy_without_tag_uses_whole_text_and_first_answer_wins():
    acc = get_reward("accuracy", value=2.0)
    completions = [
        "B",                                                  # no tag: whole text
        "I think B",                                          # no tag: whole text is not an option
        "<answer>\nThe sound\nof birds\n</answer>",           # DOTALL
        "<answer>B</answer> then <answer>A</answer>",         # first wins
        "<answer>A</answer> then <answer>B</answer>",
    ]
    out = acc(completions=completions, answer=["B"] * 5, choices=[CHOICES] * 5)
    assert out == [2.0, 0.0, 2.0, 2.0, 0.0]


def test_accuracy_open_question_compares_normalised_text():
    acc = get_reward("accuracy")
    out = acc(completions=["<answer>A Dog, barking.</answer>", "<answer>dog</answer>",
                           "<answer></answer>"],
              answer=["a dog barking", "a dog barking", ""], choices=[None, [], None])
    assert out == [1.0, 0.0, 0.0]


def test_accuracy_missing_gold_scores_zero_and_misaligned_columns_raise():
    acc = get_reward("accuracy")
    assert acc(completions=["<answer>B</answer>"], answer=[None], choices=[CHOICES]) == [0.0]
    with pytest.raises(ValueError, match="'answer' has 1 values for 2 completions"):
        acc(completions=["a", "b"], answer=["B"])
    with pytest.raises(ValueError, match="choices"):
        acc(completions=["a"], answer=["B"], choices=["A. x B. y"])


def test_accuracy_mmau_mode():
    pytest.importorskip("audsemthinker.eval.scoring",
                        reason="mmau_match lives in audsemthinker/eval/scoring.py")
    choices = ["Man", "Woman", "Child", "Robot"]
    acc = get_reward("accuracy", mode="mmau")
    completions = ["<answer>man</answer>",            # text, any case
                   "<answer>A</answer>",              # letter mapped to "Man"
                   "<answer>(A) Man</answer>",
                   "<answer>A man, not a woman</answer>",  # names a distractor's token
                   "<answer>B</answer>",
                   "<answer></answer>",               # empty prediction
                   "<answer>It is a man speaking</answer>"]  # superset without distractors
    n = len(completions)
    out = acc(completions=completions, answer=["Man"] * n, choices=[choices] * n)
    assert out == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    # Gold given in the training data's letter form maps to the choice text first.
    assert acc(completions=["<answer>Man</answer>"], answer=["A. Man"],
               choices=[choices]) == [1.0]


def test_accuracy_unknown_mode():
    with pytest.raises(ValueError, match="unknown accuracy mode"):
        get_reward("accuracy", mode="exact")


# --------------------------------------------------------------------------------------------
# format
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, sem, simple", [
    ("<think>a</think><semantic_elements>b</semantic_elements><answer>c</answer>", 0.5, 0.0),
    ("<think>a\nb</think>\n <semantic_elements>\n</semantic_elements>\n<answer>\nc</answer>",
     0.5, 0.0),
    ("  <think>a</think><answer>c</answer>\n", 0.0, 0.5),     # outer whitespace is stripped
    ("Sure! <think>a</think><answer>c</answer>", 0.0, 0.0),  # leading junk
    ("<think>a</think><answer>c</answer> done", 0.0, 0.0),   # trailing junk
    ("<think>a</think> x <answer>c</answer>", 0.0, 0.0),     # junk between blocks
    ("<answer>c</answer><think>a</think>", 0.0, 0.0),        # wrong order
    ("<think>a<answer>c</answer>", 0.0, 0.0),                # unclosed think
    ("", 0.0, 0.0),
])
def test_format_exact_patterns(text, sem, simple):
    assert get_reward("format")(completions=[text]) == [sem]
    assert get_reward("format", variant="simple")(completions=[text]) == [simple]


def test_format_value_and_unknown_variant():
    assert get_reward("format", value=1.0)(completions=[semantic()]) == [1.0]
    with pytest.raises(ValueError, match="unknown format variant"):
        get_reward("format", variant="full")


# --------------------------------------------------------------------------------------------
# length
# --------------------------------------------------------------------------------------------
def length_values(shape: str, ns: list[int], **kw) -> list[float]:
    f = get_reward("length", shape=shape, **kw)
    return f(completions=[f"<think>{words(n)}</think><answer>x</answer>" for n in ns])


def test_length_linear_budget_25():
    ns = [0, 20, 21, 25, 29, 30, 100]
    assert length_values("linear", ns) == pytest.approx([1, 1, 0.9, 0.5, 0.1, 0, 0])


def test_length_linear_budget_100():
    assert length_values("linear", [95, 100, 105], budget=100) == pytest.approx([1, 0.5, 0])


def test_length_linear_encourage():
    # n <= B: clip(1 - 0.1*(25 - n) + 0.5); n > B: the linear formula.
    ns = [0, 10, 15, 20, 25, 26, 30]
    assert length_values("linear_encourage", ns) == pytest.approx([0, 0, 0.5, 1, 1, 0.4, 0])


def test_length_cosine():
    ns = [0, 25, 50, 75, 12, 38]
    expect = [0, 1, 0, 0, 0.5 * (1 + math.cos(math.pi * 13 / 25)),
              0.5 * (1 + math.cos(math.pi * 13 / 25))]
    assert length_values("cosine", ns) == pytest.approx(expect)
    # A narrower window: 0 once 10 words away from the budget.
    assert length_values("cosine", [15, 20, 25, 35], window=10) == pytest.approx([0, 0.5, 1, 0])


def test_length_counts_first_think_only_and_no_think_earns_nothing():
    f = get_reward("length")
    out = f(completions=["<think>" + words(30) + "</think><think>a</think>",
                         "no think block at all, many many words " + words(200),
                         "<think>\n  a\tb \n c </think>"])
    assert out == pytest.approx([0.0, 0.0, 1.0])
    assert get_reward("length", shape="cosine")(completions=["no think"]) == [0.0]
    whole = get_reward("length", no_think="whole")  # the release: count the whole completion
    assert whole(completions=["no think at all", "no think " + words(200)]) == [1.0, 0.0]


@pytest.mark.parametrize("kw, msg", [
    ({"shape": "quadratic"}, "unknown length shape"),
    ({"budget": -1}, "budget >= 0"),
    ({"shape": "cosine", "budget": 0}, "positive window"),
    ({"shape": "cosine", "window": 0}, "positive window"),
])
def test_length_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        get_reward("length", **kw)


# --------------------------------------------------------------------------------------------
# registry and configs
# --------------------------------------------------------------------------------------------
def test_registry_names_and_stable_function_names():
    assert available_rewards() == sorted(REWARDS) == [
        "accuracy", "format", "length", "open_answer", "overlong", "semantic_consistency",
        "semantic_coverage"]
    for name in available_rewards():
        assert get_reward(name).__name__ == name


def test_unknown_reward_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown reward 'acc'.*accuracy, format, length"):
        get_reward("acc")


def test_bad_config_key_is_a_clear_error():
    with pytest.raises(ValueError, match=r"reward 'length': bad config keys \['budgt'\]"):
        build_rewards([{"name": "length", "budgt": 10}])


def test_build_rewards_names_weights_and_duplicates():
    funcs, weights = build_rewards({"rewards": [
        {"name": "accuracy", "weight": 2},
        {"name": "length", "weight": 0.5, "budget": 100, "log_name": "length_100"},
        {"name": "length"},
    ]})
    assert [f.__name__ for f in funcs] == ["accuracy", "length_100", "length"]
    assert weights == [2.0, 0.5, 1.0]
    assert funcs[1](completions=["<think>" + words(95) + "</think>"]) == [1.0]
    with pytest.raises(ValueError, match="appear twice"):
        build_rewards([{"name": "length"}, {"name": "length", "budget": 100}])
    with pytest.raises(ValueError, match="non-empty"):
        build_rewards([])
    with pytest.raises(ValueError, match="exactly one of"):
        build_rewards([{"weight": 1.0}])
    with pytest.raises(ValueError, match="weight must be finite"):
        build_rewards([{"name": "format", "weight": float("nan")}])


def always_half(completions, **kwargs):
    """A test-local reward function, plugged in through ``_target_``."""
    return [0.5] * len(completions)


def make_constant(value: float = 1.0):
    def constant(completions, **kwargs):
        return [value] * len(completions)
    return constant


def test_target_plugins_function_and_factory():
    funcs, weights = build_rewards([
        {"_target_": f"{__name__}.always_half", "weight": 3},
        {"_target_": f"{__name__}.make_constant", "value": 0.25},
        {"_target_": "audsemthinker.rewards.length.get_length_reward", "budget": 8,
         "log_name": "short"},
    ])
    assert [f.__name__ for f in funcs] == ["always_half", "constant", "short"]
    assert weights == [3.0, 1.0, 1.0]
    assert [f(completions=["<think>a b c</think>"]) for f in funcs] == [[0.5], [0.25], [1.0]]
    with pytest.raises(ValueError, match="takes no config keys"):
        build_rewards([{"_target_": f"{__name__}.always_half", "value": 1}])
    with pytest.raises(ValueError, match="cannot import _target_"):
        build_rewards([{"_target_": "audsemthinker.rewards.nope.get_x"}])


REWARD_CONFIGS = sorted((REPO / "configs" / "reward").glob("*.yaml"))


def test_reward_config_files_exist():
    names = {p.stem for p in REWARD_CONFIGS}
    assert {"paper", "paper_cosine", "simple", "semantic_coverage",
            "semantic_consistency", "open_answer", "tiny"} <= names


@pytest.mark.parametrize("path", REWARD_CONFIGS, ids=lambda p: p.stem)
def test_reward_configs_build(path):
    assert path.read_text().startswith("# ")
    funcs, weights = build_rewards(load_reward_config(path))
    out = [f(completions=[semantic(answer="B")], answer=["B. The sound of birds"],
             choices=[CHOICES], task=["sound"]) for f in funcs]
    assert all(len(o) == 1 and 0.0 <= o[0] <= 1.0 for o in out)
    assert len(weights) == len(funcs)


def test_build_rewards_accepts_omegaconf_containers():
    omegaconf = pytest.importorskip("omegaconf")
    loaded = omegaconf.OmegaConf.load(REPO / "configs/reward/semantic_coverage.yaml")
    cfg = omegaconf.OmegaConf.merge({"length_budget": 25}, loaded)
    funcs, weights = build_rewards(cfg)
    coverage = funcs[-1]
    text = semantic(elements="- Signal descriptors: loud\n- Temporal context: night")
    # music targets six categories (configs/reward/semantic_coverage.yaml), others all nine.
    assert coverage(completions=[text, text], task=["music", "sound"]) == pytest.approx(
        [2 / 6, 2 / 9])


def test_paper_config_values():
    funcs, weights = build_rewards(load_reward_config(REPO / "configs/reward/paper.yaml"))
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "length"] and weights == [1, 1, 1]
    good = semantic(think=words(20), answer="B")
    assert [f(completions=[good], answer=["B. The sound of birds"], choices=[CHOICES])[0]
            for f in funcs] == [1.0, 0.5, 1.0]


def test_import_is_pure_python():
    code = "import sys, audsemthinker.rewards; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                   env={"PYTHONPATH": str(REPO), "PATH": ""})


# --------------------------------------------------------------------------------------------
# Properties: any text, never raises, always in range
# --------------------------------------------------------------------------------------------
TAGS = ["<think>", "</think>", "<semantic_elements>", "</semantic_elements>", "<answer>",
        "</answer>", "- Sound-generating agents: a dog", "Signal descriptors:", "\n", " ", "B",
        "A.", "(C)", ":", "-", "1."]
texts = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(TAGS), st.text(max_size=20)), max_size=30).map("".join),
    # Huge strings, up to ~100k characters of one repeated piece.
    st.builds(lambda t, k: (t * (100_000 // len(t) + 1))[:k],
              st.sampled_from(TAGS + ["wörd ✓ 音 ", "<think>w w "]), st.integers(0, 100_000)),
)
choice_lists = st.one_of(st.none(), st.lists(st.text(max_size=30), max_size=8))

# Every registered reward, in each of its modes, with its documented range.
SAMPLES = [
    ({"name": "accuracy"}, {0.0, 1.0}),
    ({"name": "format"}, {0.0, 0.5}),
    ({"name": "format", "variant": "simple"}, {0.0, 0.5}),
    ({"name": "length"}, (0.0, 1.0)),
    ({"name": "length", "shape": "linear_encourage"}, (0.0, 1.0)),
    ({"name": "length", "shape": "cosine"}, (0.0, 1.0)),
    ({"name": "semantic_coverage", "targets_by_task": {"music": ["signal"]}}, (0.0, 1.0)),
    ({"name": "semantic_consistency"}, {0.0, 1.0}),
    ({"name": "open_answer"}, (0.0, 1.0)),
    ({"name": "open_answer", "metric": "rouge_l"}, (0.0, 1.0)),
    ({"name": "overlong", "max_length": 2, "buffer": 1}, (-1.0, 0.0)),
]
FUNCS = [(build_rewards([dict(cfg, log_name=str(i))])[0][0], rng)
         for i, (cfg, rng) in enumerate(SAMPLES)]


def test_property_samples_cover_every_reward():
    assert {cfg["name"] for cfg, _ in SAMPLES} == set(available_rewards())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, gold=st.one_of(st.none(), st.text(max_size=40)), choices=choice_lists,
       task=st.sampled_from([None, "music", "sound", ""]), conversational=st.booleans())
def test_every_reward_never_raises_and_stays_in_range(text, gold, choices, task, conversational):
    completion = [{"role": "assistant", "content": text}] if conversational else text
    for f, rng in FUNCS:
        out = f(prompts=["q"], completions=[completion, ""], completion_ids=[[1], []],
                answer=[gold, gold], choices=[choices, choices], task=[task, task],
                trainer_state=None)
        assert len(out) == 2
        for v in out:
            assert isinstance(v, float)
            assert (v in rng) if isinstance(rng, set) else (rng[0] <= v <= rng[1]), (f, v)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "a", "\n", "<",
                                 "/", ">"]), max_size=25).map("".join))
def test_first_block_equals_the_non_greedy_regex(text):
    # format.first_block replaced a quadratic regex search; it must return exactly the same.
    import re

    for tag in ("think", "answer"):
        m = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
        assert fmt.first_block(text, tag) == (m.group(1) if m else None)
