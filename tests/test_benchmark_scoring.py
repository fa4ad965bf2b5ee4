"""Scores equal to the benchmarks' own scripts: MMAU empty answers, MuchoMusic's literal pick.

The MMAU check runs the harness end to end, then an independent re-implementation of the
official evaluation script over the submission file the harness wrote, and compares what that
script would print with the accuracy we report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_eval_harness import make_cfg, scripted, write_mmau, write_mucho

from audsemthinker.eval import harness
from audsemthinker.eval.scoring import (
    muchomusic_pick,
    muchomusic_pick_word,
    score_mmau,
    score_muchomusic,
)

PEOPLE = ["Man", "Woman", "Child", "Robot"]


# --------------------------------------------------------------------------------------------
# MMAU: an independent re-implementation of the official evaluation script
# --------------------------------------------------------------------------------------------
def _official_tokens(text: str) -> set:
    return set(re.findall(r"\b\w+\b", text.lower()))


def _official_match(answer: str, prediction: str, choices: list) -> bool:
    pred, gold = _official_tokens(prediction), _official_tokens(answer)
    if not pred:
        return False
    wrong = set()
    for c in choices:
        toks = _official_tokens(c)
        if toks != gold:
            wrong |= toks - gold
    return gold.issubset(pred) and pred.isdisjoint(wrong)


def official_mmau_printout(submission_path: Path) -> dict:
    """What the official script prints for a submission file: total and per-task accuracy
    (two decimals) and its no-prediction count. Items without ``model_output`` are skipped."""
    items = json.loads(submission_path.read_text(encoding="utf-8"))
    corr, total, no_pred = {}, {}, 0
    for sample in items:
        if "model_output" not in sample:
            no_pred += 1
            continue
        ok = _official_match(sample["answer"], sample["model_output"], sample["choices"])
        for key in ("total", sample["task"]):
            corr[key] = corr.get(key, 0) + int(ok)
            total[key] = total.get(key, 0) + 1
    return {"accuracy": {k: f"{100 * corr[k] / total[k]:.2f}" for k in total},
            "no_prediction": no_pred}


def test_empty_answer_is_scored_wrong_and_never_generated_is_skipped():
    items = [{"id": str(i), "choices": PEOPLE, "answer": "Man", "task": "sound",
              "difficulty": "easy", "sub-category": "s", "category": "Reasoning"}
             for i in range(4)]
    r = score_mmau(items, {"0": "a man", "1": "", "2": "   "})  # "3" never generated
    assert r["total"] == {"accuracy": 100 / 3, "correct": 1, "scored": 3, "skipped": 1,
                          "empty": 2}


def test_printed_accuracy_equals_the_official_script_on_our_submission(tiny_full_dir, tmp_path,
                                                                       monkeypatch):
    rows_path, meta, rows = write_mmau(tmp_path / "data", n=7)
    Path(rows[2]["audio"]).unlink()  # unreadable audio: never generated, left out by both
    # By tone: m0 right (letter), m1 right (sentence), m3 empty <answer></answer>, m4 empty
    # completion, m5 right "(B) ...", m6 wrong (a distractor word).
    script = {200: "<answer>A</answer>", 220: "<answer>I hear a cat meowing.</answer>",
              260: "<think>hm</think><answer></answer>", 280: "",
              300: "<answer>(B) a cat meowing</answer>", 320: "<answer>a dog or rain</answer>"}
    monkeypatch.setattr(harness, "generate_rows", scripted(script))
    bench = {"mmau_test_mini": {"scorer": "mmau", "rows": str(rows_path), "metadata": str(meta),
                                "version": "original", "submission": True}}
    r = harness.run_eval(make_cfg(tiny_full_dir, tmp_path / "run", bench))["mmau_test_mini"]
    total = r["score"]["total"]
    assert total == {"accuracy": 50.0, "correct": 3, "scored": 6, "skipped": 1, "empty": 2}

    official = official_mmau_printout(Path(r["submission"]))
    assert official["accuracy"]["total"] == f"{r['accuracy']:.2f}"
    for task, cell in r["score"]["groups"]["task"].items():
        assert official["accuracy"][task] == f"{cell['accuracy']:.2f}", task
    assert official["no_prediction"] == total["skipped"] == 1
    sub = {s["id"]: s for s in json.loads(Path(r["submission"]).read_text())}
    assert "model_output" not in sub["m2"]
    assert sub["m3"]["model_output"] == sub["m4"]["model_output"] == ""
    md = (tmp_path / "run" / "reports" / "mmau_test_mini.md").read_text()
    assert "2 empty answers (scored wrong)" in md


# --------------------------------------------------------------------------------------------
# MuchoMusic: the official pick, read literally, against the word-boundary variant
# --------------------------------------------------------------------------------------------
GENRES = ["rock", "jazz", "pop", "blues"]


@pytest.mark.parametrize("output, official, word", [
    ("The correct answer is: B", 1, 1),
    ("The correct answer is: (C) pop", 2, 2),
    ("It sounds like Blues to me", 1, 3),             # the B of "Blues" is a letter (official)
    ("Drums and Bass lead it", None, None),           # B and D both found: text, no option named
    ("Drums lead, so rock", 3, 0),                    # D from "Drums" alone; word rule: text
    ("B. Because B fits best", 1, 1),                 # one letter, repeated
    ("The correct answer is: A or B, I think jazz", 1, 1),  # two letters -> text "jazz"
    ("the correct answer is: b", None, None),         # lower-case letters are not letters
    ("Cool, I cannot tell", 2, None),                 # the C of "Cool" picks pop; I is no letter
    ("A jazz tune", 0, 0),                            # the article "A" is a letter
    ("no cue here, maybe rock", 0, 0),                # no cue: the whole text, then text match
    ("The correct answer is: A\nThe correct answer is: D", 3, 3),  # several cues: the last
    ("The correct answer is: Blues. The correct answer is: rock", 0, 0),
    ("", None, None),
    (None, None, None),
])
def test_muchomusic_case_table(output, official, word):
    assert muchomusic_pick(output, GENRES) == official
    assert muchomusic_pick_word(output, GENRES) == word


def _literal_pick(output, options):
    """The official extract_responses rule as written: split on the cue, set of characters."""
    if output is None:
        return None
    text = output.split("The correct answer is:")[-1]
    letters = "ABCDEFGH"[:len(options)]
    found = [ch for ch in letters if ch in set(text)]
    if len(found) == 1:
        return letters.index(found[0])
    for i, option in enumerate(options):
        if option.lower() in text.lower():
            return i
    return None


_pieces = st.sampled_from(["The correct answer is:", "A", "B", "(C)", "D.", "Blues", "Drums",
                           "jazz", "rock", "pop", " ", "\n", "b", "Cool", "maybe"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces, max_size=12).map("".join))
def test_official_pick_equals_a_literal_reimplementation(output):
    assert muchomusic_pick(output, GENRES) == _literal_pick(output, GENRES)


def test_unreadable_audio_counts_unanswered_and_the_variant_is_reported(tiny_full_dir, tmp_path,
                                                                        monkeypatch):
    rows_path, _, rows = write_mucho(tmp_path / "data", n=4)  # gold "piano", options shuffled
    Path(rows[3]["audio"]).unlink()
    letter = "ABCD"[rows[0]["options"].index("piano")]
    # Item 0: the right letter; 1: "Bass" holds a B (official: letter B; word rule: text);
    # 2: unanswered; 3: never generated (unanswered, still in N).
    script = {300: f"<answer>{letter}</answer>", 320: "<answer>Bass and piano</answer>",
              340: "<answer>no idea</answer>"}
    monkeypatch.setattr(harness, "generate_rows", scripted(script))
    bench = {"muchomusic": {"scorer": "muchomusic", "rows": str(rows_path)}}
    r = harness.run_eval(make_cfg(tiny_full_dir, tmp_path / "run", bench))["muchomusic"]
    assert r["score"]["n_items"] == 4 and r["score"]["total"]["n"] == 4
    assert r["score"]["method"] == "official_rule"
    b_is_piano = rows[1]["options"][1] == "piano"
    assert r["score"]["total"]["correct"] == 1 + b_is_piano
    assert r["score"]["total"]["unanswered"] == 2
    variant = r["score_variants"]["word_boundary"]
    assert variant["method"] == "word_boundary_rule"
    assert variant["total"]["correct"] == 2 and variant["total"]["n"] == 4
    expect = score_muchomusic(rows, {rows[i]["id"]: o for i, o in enumerate(
        [letter, "Bass and piano", "no idea"])})
    assert r["score"]["total"] == expect["total"]
