"""Issue-9 rewards: semantic_coverage, semantic_consistency and lexical open_answer."""

from __future__ import annotations

import pytest
from helpers import covers_all_targets
from hypothesis import given, settings
from hypothesis import strategies as st

from audsemthinker import format as fmt
from audsemthinker.rewards import get_reward
from audsemthinker.rewards.open_answer import lcs_length, rouge_l, token_f1

CHOICES = ["The sound of a dog barking", "The sound of birds", "A car horn", "Rain on a roof"]


def completion(elements: str, think: str = "x", answer: str = "B") -> str:
    return fmt.render_target(think, answer, elements)


# --------------------------------------------------------------------------------------------
# semantic_coverage
# --------------------------------------------------------------------------------------------
THREE = ("- Sound-generating agents: a dog\n- Physical sound sources: leash\n"
         "- Signal descriptors: loud")
DATASET_FORM = "1. Sound-generating agents:\n- a dog\n2. Spatial context:\n- a park\n- outdoors"


def coverage(texts, **cfg):
    kw = {k: cfg.pop(k) for k in ("task",) if k in cfg}
    return get_reward("semantic_coverage", **cfg)(completions=texts, **kw)


def test_coverage_counts_categories_with_an_element():
    assert coverage([completion(THREE)]) == pytest.approx([3 / 9])
    assert coverage([completion(DATASET_FORM)]) == pytest.approx([2 / 9])
    # One line per category in our rendering, aliases accepted, repeats count once.
    aliases = "- who: dog\n- where: park\n- Sound-generating agents: cat"
    assert coverage([completion(aliases)]) == pytest.approx([2 / 9])


def test_coverage_targets_and_value():
    texts = [completion(DATASET_FORM)]
    assert coverage(texts, targets=["agents", "spatial"]) == [1.0]
    assert coverage(texts, targets=["agents", "temporal"]) == [0.5]
    assert coverage(texts, targets=["temporal"], value=2.0) == [0.0]
    assert coverage(texts, targets=["agents", "spatial", "agents"], value=2.0) == [2.0]


def test_coverage_targets_by_task_column():
    texts = [completion(THREE)] * 3
    out = coverage(texts, targets=["agents", "spatial"], task=["music", "sound", None],
                   targets_by_task={"music": ["sources", "signal"]})
    assert out == [1.0, 0.5, 0.5]


def test_coverage_missing_malformed_or_placeholder_block_is_zero():
    texts = [
        "<think>x</think><answer>B</answer>",                      # no block
        "<think>x</think><semantic_elements>- Sound-generating agents: dog",  # never closed
        completion("a dog barks in a park"),                        # no category headings
        completion("- Temporal context: none\n- Spatial context: N/A\n2. Acoustic surfaces:\n"
                   "- not present"),                                # placeholders only
        "",
    ]
    assert coverage(texts) == [0.0] * 5


def test_coverage_reads_first_block_even_when_layout_is_wrong():
    # The format reward punishes the layout; coverage reads the block wherever it is.
    text = "<semantic_elements>- Temporal context: at night</semantic_elements> junk"
    assert coverage([text], targets=["temporal"]) == [1.0]


@pytest.mark.parametrize("cfg, msg", [
    ({"targets": ["agents", "loudness"]}, r"unknown semantic categories \['loudness'\]"),
    ({"targets": []}, "empty"),
    ({"targets_by_task": {"music": ["pitch"]}}, r"targets_by_task\['music'\]"),
])
def test_coverage_bad_config(cfg, msg):
    with pytest.raises(ValueError, match=msg):
        get_reward("semantic_coverage", **cfg)


def test_covers_all_targets():
    text = completion(DATASET_FORM)
    assert covers_all_targets(text, ["agents", "spatial"]) is True
    assert covers_all_targets([{"role": "assistant", "content": text}], ["agents"]) is True
    assert covers_all_targets(text, ["agents", "signal"]) is False
    assert covers_all_targets(text) is False
    with pytest.raises(ValueError):
        covers_all_targets(text, ["who"])


# --------------------------------------------------------------------------------------------
# semantic_consistency
# --------------------------------------------------------------------------------------------
BIRDS = "- Sound-generating agents: birds\n- Sound generation mechanisms: chirping"


def consistency(texts, choices=None):
    f = get_reward("semantic_consistency")
    return f(completions=texts, choices=[CHOICES if choices is None else choices] * len(texts))


def test_consistency_supported_choice():
    texts = [
        # 'sound' in the think text, 'birds' in the elements
        completion(BIRDS, think="I hear a sound in the trees."),
        completion(BIRDS, think="I hear a sound.", answer="The sound of birds"),
        # A distractor named in the think text is fine: only elements contradict.
        completion(BIRDS, think="A dog? No, a bird sound.", answer="B. The sound of birds"),
    ]
    assert consistency(texts) == [1.0, 1.0, 1.0]


def test_consistency_unsupported_or_contradicted():
    texts = [
        completion(BIRDS, think="Chirping."),                       # 'sound' nowhere
        completion(BIRDS + "\n- Physical sound sources: car", think="sound"),  # distractor word
        # A negated distractor still counts as naming it: a documented failure case.
        completion("- Sound-generating agents: birds, no dog", think="sound"),
        completion(BIRDS, think="sound", answer="A"),               # chosen dog: not supported
        completion(BIRDS, think="sound", answer="E"),               # names no option
        "<think>the sound of birds</think>" + f"<semantic_elements>{BIRDS}</semantic_elements>B",
    ]
    assert consistency(texts) == [0.0] * 6


def test_consistency_category_headings_are_not_evidence():
    choices = ["Signal", "Noise"]
    text = completion("- Signal descriptors: loud", think="It is loud.", answer="A")
    assert consistency([text], choices) == [0.0]
    text = completion("- Signal descriptors: a clear signal", think="loud", answer="A")
    assert consistency([text], choices) == [1.0]


def test_consistency_needs_choices_and_content_words():
    f = get_reward("semantic_consistency", value=0.5)
    text = completion(BIRDS, think="sound")
    assert f(completions=[text, text], choices=[None, []]) == [0.0, 0.0]
    assert f(completions=[text], choices=[CHOICES]) == [0.5]
    # An option made of stopwords only cannot be supported.
    assert f(completions=[completion(BIRDS, answer="A")], choices=[["this is it", "x"]]) \
        == [0.0]


# --------------------------------------------------------------------------------------------
# open_answer (lexical)
# --------------------------------------------------------------------------------------------
def test_token_f1_and_rouge_l_worked_values():
    # pred [a, dog, barks, loudly] vs ref [the, dog, barks]: 2 common, P = 1/2, R = 2/3.
    assert token_f1("A dog barks loudly.", "the dog barks") == pytest.approx(4 / 7)
    assert rouge_l("A dog barks loudly.", "the dog barks") == pytest.approx(4 / 7)
    # Order matters to ROUGE-L only: LCS of [barks, dog] and [dog, barks] is 1.
    assert token_f1("barks dog", "dog barks") == 1.0
    assert rouge_l("barks dog", "dog barks") == pytest.approx(0.5)
    # Repeated words count once per occurrence in F1: pred [dog, dog] vs ref [dog]: P=1/2, R=1.
    assert token_f1("dog dog", "dog") == pytest.approx(2 / 3)
    assert token_f1("", "dog") == rouge_l("", "dog") == 0.0
    assert token_f1("dog", "") == rouge_l("!!", "") == 0.0


def test_open_answer_reward_uses_extracted_answer():
    f1 = get_reward("open_answer")
    rl = get_reward("open_answer", metric="rouge_l")
    texts = [completion("- who: x", think="cats meow", answer="The dog barks!"),
             "<answer>barks dog</answer>", "no tags: the dog barks", "<answer>dog</answer>"]
    refs = ["the dog barks", "dog barks", "the dog barks", None]
    assert f1(completions=texts, answer=refs) == pytest.approx([1.0, 1.0, 0.75, 0.0])
    assert rl(completions=texts, answer=refs) == pytest.approx([1.0, 0.5, 0.75, 0.0])


def test_open_answer_bad_config():
    with pytest.raises(ValueError, match="unknown open_answer metric"):
        get_reward("open_answer", metric="bleu")
    with pytest.raises(ValueError, match="unknown open_answer mode"):
        get_reward("open_answer", mode="exact")
    with pytest.raises(ValueError, match="needs a 'judge' config"):
        get_reward("open_answer", mode="judge")


def lcs_table(a, b):
    """The textbook O(len(a) * len(b)) dynamic programme, as an independent reference."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


tokens = st.lists(st.sampled_from("abcde"), max_size=40)


@settings(max_examples=200, deadline=None)
@given(a=tokens, b=tokens)
def test_bit_parallel_lcs_equals_dynamic_programme(a, b):
    assert lcs_length(a, b) == lcs_table(a, b) == lcs_length(b, a)


@settings(max_examples=200, deadline=None)
@given(p=st.text(max_size=200), r=st.text(max_size=200))
def test_lexical_scores_bounded_symmetric_and_one_on_identity(p, r):
    for metric in (token_f1, rouge_l):
        assert 0.0 <= metric(p, r) <= 1.0
        assert metric(p, r) == pytest.approx(metric(r, p))
        assert metric(r, r) == (1.0 if fmt.normalize(r) else 0.0)


def test_lcs_scales_to_long_answers():
    a = [f"w{i % 97}" for i in range(20_000)]
    assert lcs_length(a, a) == 20_000
    assert rouge_l(" ".join(a), " ".join(a[:10_000])) == pytest.approx(2 * 0.5 / 1.5)
