"""The official MMAU and MuchoMusic rules: hand-made cases, an independent re-implementation, and
the grouped counts the reports print."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audsemthinker.eval.scoring import (
    mmau_match,
    mmau_prediction,
    mmau_tokens,
    muchomusic_pick,
    score_mmau,
    score_muchomusic,
    score_muchomusic_judged,
)
from audsemthinker.format import muchomusic_prompt

PEOPLE = ["Man", "Woman", "Child", "Robot"]


# --------------------------------------------------------------------------------------------
# MMAU: hand-made cases
# --------------------------------------------------------------------------------------------
def test_tokens_lowercase_word_set():
    assert mmau_tokens("A man's VOICE, a man.") == {"a", "man", "s", "voice"}
    assert mmau_tokens(" ...!? ") == set()


def test_answer_inside_a_sentence_matches():
    assert mmau_match("Man", "The answer is a man speaking", PEOPLE)


def test_distractor_word_present_fails():
    assert not mmau_match("Man", "a man or a woman", PEOPLE)
    assert not mmau_match("Man", "Not a robot, a man", PEOPLE)


def test_punctuation_and_case_do_not_matter():
    assert mmau_match("Man", "MAN!", PEOPLE)
    assert mmau_match("Man", "(man)", PEOPLE)
    assert mmau_match("Man", "a man's voice", PEOPLE)


def test_multi_word_answers_need_every_token():
    choices = ["Acoustic guitar", "Electric guitar", "Piano", "Violin"]
    assert mmau_match("Acoustic guitar", "an ACOUSTIC guitar.", choices)
    assert not mmau_match("Acoustic guitar", "guitar", choices)  # "acoustic" missing
    assert not mmau_match("Acoustic guitar", "acoustic guitar, not electric", choices)
    # "guitar" is shared by the answer, so it is not a distractor token of "Electric guitar".
    assert mmau_match("Electric guitar", "electric guitar", choices)


def test_answer_tokens_subset_of_another_choice():
    choices = ["Dog", "Dog barking", "Cat", "Bird"]
    assert mmau_match("Dog", "a dog", choices)
    assert not mmau_match("Dog", "dog barking", choices)  # "barking" belongs to a distractor
    assert not mmau_match("Dog barking", "dog", choices)  # "barking" missing
    assert mmau_match("Dog barking", "a dog barking loudly", choices)


def test_choice_with_same_tokens_as_answer_is_not_a_distractor():
    assert mmau_match("Man", "man", ["Man", "man.", "Woman"])


def test_empty_prediction_never_matches():
    assert not mmau_match("Man", "", PEOPLE)
    assert not mmau_match("Man", "  ?! ", PEOPLE)


def test_bare_letter_fed_directly_is_just_a_word():
    choices = ["A dog barking", "Cat meowing", "Bird singing", "Car horn"]
    assert not mmau_match("Cat meowing", "B", choices)
    assert not mmau_match("A dog barking", "A", choices)  # {"a"} lacks "dog", "barking"
    assert mmau_match("Cat meowing", "B. Cat meowing", choices)  # "b" is nobody's token
    assert not mmau_match("Cat meowing", "A. Cat meowing", choices)  # "a" is a distractor token


def test_prediction_maps_leading_letter_to_choice_text():
    assert mmau_prediction("<think>hm</think><answer>B</answer>", PEOPLE) == "Woman"
    assert mmau_prediction("<answer>(B) Woman</answer>", PEOPLE) == "Woman"
    assert mmau_prediction("<answer> B. Woman </answer>", PEOPLE) == "Woman"
    assert mmau_match("Woman", mmau_prediction("<answer>B</answer>", PEOPLE), PEOPLE)
    assert not mmau_match("Man", mmau_prediction("<answer>B</answer>", PEOPLE), PEOPLE)


def test_prediction_keeps_sentences_and_untagged_text():
    assert mmau_prediction("<answer>A man is speaking</answer>", PEOPLE) == "A man is speaking"
    assert mmau_prediction("It is a child.", PEOPLE) == "It is a child."


def test_empty_prediction_is_scored_and_only_no_completion_is_skipped():
    assert mmau_prediction("<think>x</think><answer></answer>", PEOPLE) == ""
    assert mmau_prediction("<answer>   </answer>", PEOPLE) == ""
    assert mmau_prediction("", PEOPLE) == ""
    assert mmau_prediction(None, PEOPLE) is None


# --------------------------------------------------------------------------------------------
# MMAU: an independent, literal re-implementation (loops and lists, manual tokeniser)
# --------------------------------------------------------------------------------------------
def _literal_tokens(text):
    words, cur = [], ""
    for ch in text.lower() + " ":
        if ch.isascii() and (ch.isalnum() or ch == "_"):
            cur += ch
        else:
            if cur and cur not in words:
                words.append(cur)
            cur = ""
    return words


def _literal_rule(answer, prediction, choices):
    pred = _literal_tokens(prediction)
    if len(pred) == 0:
        return False
    gold = _literal_tokens(answer)
    wrong = []
    for choice in choices:
        toks = _literal_tokens(choice)
        same = all(t in gold for t in toks) and all(t in toks for t in gold)
        if not same:
            for t in toks:
                if t not in gold and t not in wrong:
                    wrong.append(t)
    for t in gold:
        if t not in pred:
            return False
    for t in pred:
        if t in wrong:
            return False
    return True


VOCAB = ["man", "Woman", "dog", "DOG", "a", "b", "the", "guitar", "x_1", "it's", "42", "bark"]
SEPS = [" ", ", ", ". ", "-", "(", ")!", " ... "]
_word = st.sampled_from(VOCAB)
_phrase = st.lists(st.tuples(_word, st.sampled_from(SEPS)), min_size=0, max_size=4).map(
    lambda parts: "".join(w + s for w, s in parts))


@st.composite
def _mmau_case(draw):
    choices = draw(st.lists(_phrase.filter(str.strip), min_size=2, max_size=5))
    answer = draw(st.sampled_from(choices))
    kind = draw(st.sampled_from(["answer", "wrapped", "mixed", "random"]))
    if kind == "answer":
        pred = answer
    elif kind == "wrapped":
        pred = draw(_phrase) + " " + answer + " " + draw(_phrase)
    elif kind == "mixed":  # pieces of several choices: distractor tokens next to answer tokens
        pred = " ".join(draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3)))
    else:
        pred = draw(_phrase)
    recase = draw(st.sampled_from([str, str.upper, str.lower, str.title]))
    return answer, recase(pred), choices


@settings(max_examples=200, deadline=None)
@given(_mmau_case())
def test_mmau_match_equals_literal_official_rule(case):
    answer, pred, choices = case
    assert mmau_match(answer, pred, choices) == _literal_rule(answer, pred, choices)


def test_literal_comparison_exercises_both_outcomes():
    rng = random.Random(0)
    outcomes = []
    for _ in range(400):
        choices = [" ".join(rng.sample(VOCAB, rng.randint(1, 2))) for _ in range(rng.randint(2, 4))]
        answer = rng.choice(choices)
        pred = rng.choice([answer, f"the {answer} {rng.choice(VOCAB)}",
                           " ".join(rng.sample(VOCAB, 2))])
        expected = _literal_rule(answer, pred, choices)
        assert mmau_match(answer, pred, choices) == expected, (answer, pred, choices)
        outcomes.append(expected)
    assert 40 < sum(outcomes) < 360


# --------------------------------------------------------------------------------------------
# MMAU: grouped scores
# --------------------------------------------------------------------------------------------
def _item(id_, task, difficulty, sub, category, answer="Man"):
    return {"id": id_, "audio_id": f"./a/{id_}.wav", "question": "who?", "choices": PEOPLE,
            "answer": answer, "dataset": "x", "task": task, "split": "test-mini",
            "category": category, "sub-category": sub, "difficulty": difficulty}


FIXTURE = [
    _item("1", "sound", "easy", "Source", "Reasoning"),
    _item("2", "sound", "hard", "Source", ["Reasoning"]),
    _item("3", "music", "easy", "Genre", "Information Extraction", answer="Woman"),
    _item("4", "speech", "medium", "Speaker", "Reasoning", answer="Child"),
    _item("5", "speech", "medium", "Speaker", "Information Extraction"),
    _item("6", "music", "hard", "Genre", "Reasoning"),
]
PREDICTIONS = {"1": "a man", "2": "a woman", "3": "Woman", "4": None, "5": "   "}  # 6 absent


def test_score_mmau_counts_and_skips():
    r = score_mmau(FIXTURE, PREDICTIONS)  # "5" is blank: scored wrong; "4" and "6": skipped
    assert r["total"] == {"accuracy": 50.0, "correct": 2, "scored": 4, "skipped": 2,
                          "empty": 1}
    assert r["n_items"] == 6
    g = r["groups"]
    assert list(g["task"]) == ["sound", "music", "speech"]
    assert g["task"]["sound"] == {"accuracy": 50.0, "correct": 1, "scored": 2, "skipped": 0,
                                  "empty": 0}
    assert g["task"]["music"] == {"accuracy": 100.0, "correct": 1, "scored": 1, "skipped": 1,
                                  "empty": 0}
    assert g["task"]["speech"] == {"accuracy": 0.0, "correct": 0, "scored": 1, "skipped": 1,
                                   "empty": 1}
    assert list(g["difficulty"]) == ["easy", "medium", "hard"]
    assert g["difficulty"]["easy"]["accuracy"] == 100.0
    assert g["difficulty"]["hard"] == {"accuracy": 0.0, "correct": 0, "scored": 1, "skipped": 1,
                                       "empty": 0}
    assert g["sub-category"]["Genre"]["correct"] == 1
    assert g["category"]["Reasoning"] == {"accuracy": 50.0, "correct": 1, "scored": 2,
                                          "skipped": 2, "empty": 0}
    assert g["category"]["Information Extraction"]["empty"] == 1


def test_score_mmau_rejects_misaligned_or_unscorable_input():
    with pytest.raises(ValueError, match="not among the items"):
        score_mmau(FIXTURE, {"nope": "man"})
    with pytest.raises(ValueError, match="twice"):
        score_mmau(FIXTURE + [FIXTURE[0]], {})
    with pytest.raises(ValueError, match="no answer"):
        score_mmau([_item("t", "sound", "easy", "S", "Reasoning", answer="")], {"t": "man"})
    with pytest.raises(ValueError, match="lacks keys"):
        score_mmau([{"id": "1", "choices": PEOPLE, "answer": "Man"}], {})
    with pytest.raises(TypeError):
        score_mmau(FIXTURE, {"1": 3})


# --------------------------------------------------------------------------------------------
# MuchoMusic
# --------------------------------------------------------------------------------------------
GENRES = ["rock", "jazz", "pop", "blues"]


@pytest.mark.parametrize("output, expected", [
    ("The correct answer is: B", 1),
    ("The correct answer is: (C) pop", 2),
    ("B. Because B fits best", 1),                       # one letter, repeated
    ("The correct answer is: A or B, I think jazz", 1),  # two letters -> text fallback
    ("It sounds like Blues to me", 1),                   # the "B" of "Blues" is a letter
    ("the correct answer is: b", None),                  # lower-case letters are not letters
    ("I cannot tell", None),
    ("A jazz tune", 0),                                  # the article "A" is a standalone letter
    ("The correct answer is: A\nThe correct answer is: D", 3),  # last cue wins
    ("", None),
    (None, None),
])
def test_muchomusic_pick(output, expected):
    assert muchomusic_pick(output, GENRES) == expected


def test_muchomusic_pick_ignores_echoed_prompt():
    echoed = muchomusic_prompt("Which genre?", GENRES) + "D"
    assert muchomusic_pick(echoed, GENRES) == 3
    assert muchomusic_pick(muchomusic_prompt("Which genre?", GENRES) + "maybe", GENRES) is None


def _mm(id_, correct, knowledge, reasoning, dataset):
    return {"id": id_, "question": "q", "options": GENRES, "correct_answer": correct,
            "music_knowledge": knowledge, "music_reasoning": reasoning, "dataset": dataset}


MM_ITEMS = [
    _mm("a", "rock", "True", "False", "sdd"),
    _mm("b", "jazz", True, True, "musiccaps"),
    _mm("c", "pop", "False", "True", "sdd"),
    _mm("d", "blues", "False", "False", "musiccaps"),
]


def test_score_muchomusic_rule():
    outputs = {"a": "The correct answer is: A", "b": "C", "c": "no idea"}  # d missing
    r = score_muchomusic(MM_ITEMS, outputs)
    assert r["method"] == "official_rule"
    assert r["total"] == {"accuracy": 25.0, "instruction_following": 50.0, "correct": 1,
                          "answered": 2, "unanswered": 2, "n": 4}
    sub = r["groups"]["subset"]
    assert sub["knowledge"] == {"accuracy": 50.0, "instruction_following": 100.0, "correct": 1,
                                "answered": 2, "unanswered": 0, "n": 2}
    assert sub["reasoning"]["accuracy"] == 0.0 and sub["reasoning"]["n"] == 2
    assert r["groups"]["dataset"]["sdd"]["accuracy"] == 50.0
    assert r["groups"]["dataset"]["musiccaps"]["correct"] == 0


def test_score_muchomusic_judged():
    r = score_muchomusic_judged(MM_ITEMS, {"a": 1, "b": 1, "c": 0})
    assert r["method"] == "llm_judge"
    assert r["total"]["accuracy"] == 50.0
    assert r["total"]["unanswered"] == 1 and r["total"]["instruction_following"] is None
    assert r["groups"]["subset"]["reasoning"]["correct"] == 1
    with pytest.raises(ValueError, match="expected 0 or 1"):
        score_muchomusic_judged(MM_ITEMS, {"a": 0.5})


def test_score_muchomusic_rejects_bad_items():
    with pytest.raises(ValueError, match="occurs 0 times"):
        score_muchomusic([_mm("x", "metal", True, True, "sdd")], {})
    with pytest.raises(ValueError, match="not a boolean flag"):
        score_muchomusic([_mm("x", "rock", "maybe", True, "sdd")], {})
    with pytest.raises(ValueError, match="not among the items"):
        score_muchomusic(MM_ITEMS, {"zz": "A"})
