"""The public release's instruction wording as a named template, and lower-case option letters
read as the release reads them (it lower-cases answers before matching)."""

from __future__ import annotations

import pytest

from audsemthinker import format as fmt
from audsemthinker.eval.scoring import mmau_match, mmau_prediction
from audsemthinker.rewards.accuracy import option_correct

CHOICES = ["Man", "Woman", "Child", "Dog"]

# The release's own strings (training/evaluate/mmau_mini_omni.py, semantic and plain; and
# mmau_mini_omni_targetlength.py with --target_length 25), followed by its
# f"{prepend_prompt}{question}\nChoices:\n{choices_text}".
RELEASE_SEMANTIC = (
    "You are given a question and an audio clip. Your task is to answer the question based on "
    "the audio clip. The answers are multiple choice, so you need to select the correct answer "
    "from the given options. First, think about the question and the audio clip and put your "
    "thoughts in <think> and </think> tags. Then reason about the semantic elements involved in "
    "the audio clip and put your reasoning in <semantic_elements> and </semantic_elements> tags. "
    "Then answer the question based on the audio clip, put your answer in <answer> and </answer> "
    "tags. ")
RELEASE_SIMPLE = (
    "You are given a question and an audio clip. Your task is to answer the question based on "
    "the audio clip. The answers are multiple choice, so you need to select the correct answer "
    "from the given options. First, think about the question and the audio clip and put your "
    "thoughts in <think> and </think> tags. Then answer the question based on the audio clip, "
    "put your answer in <answer> and </answer> tags. ")
RELEASE_BUDGET_25 = (
    "You are given a question and an audio clip. Your task is to answer the question based on "
    "the audio clip. The answers are multiple choice, so you need to select the correct answer "
    "from the given options. First, think about the question and the audio clip and put your "
    "thoughts in <think> and </think> tags. Your thinking process should be approximately 25 "
    "words long. Then reason about the semantic elements involved in the audio clip and put your "
    "reasoning in <semantic_elements> and </semantic_elements> tags. Then answer the question "
    "based on the audio clip, put your answer in <answer> and </answer> tags. Question: ")
BODY = "Who speaks?\nChoices:\nA. Man\nB. Woman\nC. Child\nD. Dog"


@pytest.mark.parametrize("variant, budget, prefix", [
    ("semantic", None, RELEASE_SEMANTIC),
    ("simple", None, RELEASE_SIMPLE),
    ("semantic", 25, RELEASE_BUDGET_25),
])
def test_release_template_is_the_release_wording(variant, budget, prefix):
    text = fmt.user_prompt("Who speaks?", CHOICES, variant=variant, length_budget=budget,
                           instruction="release")
    assert text == prefix + BODY


def test_our_template_is_unchanged_and_unknown_wordings_fail():
    ours = fmt.user_prompt("Who speaks?", CHOICES)
    assert ours == fmt.instruction_prefix("semantic", multiple_choice=True) + "\n" + BODY
    with pytest.raises(ValueError, match="instruction"):
        fmt.user_prompt("Who speaks?", CHOICES, instruction="released")


@pytest.mark.parametrize("answer, index", [
    ("b", 1), ("b.", 1), ("(b)", 1), ("b) Woman", 1), ("b. Woman", 1), ("[c]", 2), ("d:", 3),
    ("B", 1), ("(B) Woman", 1),
])
def test_lower_case_option_letters_name_their_option(answer, index):
    assert fmt.match_option(answer, CHOICES) == index
    assert mmau_match(CHOICES[index], mmau_prediction(f"<answer>{answer}</answer>", CHOICES),
                      CHOICES)
    assert option_correct(answer, f"{'ABCD'[index]}. {CHOICES[index]}", CHOICES)


@pytest.mark.parametrize("answer", ["a dog barks", "e", "b. Man", "bird"])
def test_words_are_not_letters(answer):
    """An article is not option A, a letter past the options is nothing, and a letter whose
    text names another option is inconsistent."""
    assert fmt.match_option(answer, CHOICES) is None
