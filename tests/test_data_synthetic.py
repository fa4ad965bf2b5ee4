"""Synthetic audio QA: deterministic, balanced, answerable from the audio alone, compact text."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest

from audsemthinker import format as fmt
from audsemthinker.audio import load_audio
from audsemthinker.data.examples import load_examples
from audsemthinker.data.registry import build_dataset
from audsemthinker.data.synthetic import SYNTHETIC_TASKS, TASKS, make_item, vocabulary_text

ALL = dict(tasks=list(SYNTHETIC_TASKS), question_types=["mc_qa", "qa", "aac"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    report = build_dataset("synthetic", out, n_train=48, n_valid=24, n_test=0, seed=3, **ALL)
    return out, report, load_examples(out / "train.jsonl") + load_examples(out / "valid.jsonl")


# -- deciding the answer from the audio with plain signal processing -------------------------
def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / 16000)[np.argmax(spec)])


def decide(task: str, x: np.ndarray) -> str:
    if task == "pitch":
        return "high" if _peak_hz(x) > 700 else "low"
    if task == "count":
        env = np.abs(x).reshape(-1, 160).max(axis=1) > 0.05  # 10 ms frames
        return ("one", "two", "three", "four")[int(np.sum(np.diff(env.astype(int)) == 1)
                                                   + env[0]) - 1]
    if task == "noise":
        spec = np.abs(np.fft.rfft(x)) ** 2 + 1e-12
        flatness = np.exp(np.mean(np.log(spec))) / np.mean(spec)
        return "noise" if flatness > 0.1 else "tone"
    half = len(x) // 2
    return "rising" if _peak_hz(x[half:]) > _peak_hz(x[:half]) else "falling"


def test_every_clip_is_answerable_from_its_audio(built):
    _, report, rows = built
    assert report.kept == {"train": 48, "valid": 24} and report.total_skipped == 0
    for row in rows:
        assert decide(row["task"], load_audio(row["audio"])) == row["label"], row["id"]


@pytest.mark.parametrize("task", SYNTHETIC_TASKS)
def test_make_item_is_deterministic_and_class_decidable(task):
    for label in TASKS[task].classes:
        a, pa = make_item(task, label, np.random.default_rng([7, 1]), 1.0)
        b, pb = make_item(task, label, np.random.default_rng([7, 1]), 1.0)
        np.testing.assert_array_equal(a, b)
        assert pa == pb and len(a) == 16000 and 0.15 < np.abs(a).max() <= 0.8
        assert decide(task, a) == label


def test_rows_have_the_exact_prompts_and_targets(built):
    _, _, rows = built
    for row in rows:
        user = row["messages"][1]["content"][1]["text"]
        assert user == fmt.user_prompt(row["question"], row["choices"], variant="semantic",
                                       prepend_instruction=True, length_budget=None)
        target = fmt.parse(row["messages"][2]["content"][0]["text"])
        assert target.well_formed and target.answer == row["answer"]
        assert row["messages"][1]["content"][0]["audio"] == row["audio"]
        if row["question_type"] == "mc_qa":
            assert row["choices"] and sorted(row["choices"]) == sorted(TASKS[row["task"]].classes)
            gold = row["choices"].index(row["label"])
            assert row["answer"] == fmt.mc_answer(row["choices"], gold)
        else:
            assert row["choices"] is None
        if row["question_type"] == "aac":
            assert row["question"] in fmt.CAPTION_PROMPTS


def test_text_is_short_and_carries_no_label(built):
    _, _, rows = built
    questions, letters = collections.defaultdict(set), collections.defaultdict(set)
    for row in rows:
        parts = fmt.parse(row["messages"][2]["content"][0]["text"])
        assert len(parts.think.split()) <= 25
        if row["question_type"] == "mc_qa":
            assert len(row["answer"].split()) <= 2
        questions[(row["task"], row["question_type"])].add(row["question"])
        if row["question_type"] == "mc_qa":
            letters[(row["task"], row["label"])].add(row["answer"][0])
    # the wording comes from a fixed per-task list, whatever the class ...
    for (task, qtype), qs in questions.items():
        allowed = fmt.CAPTION_PROMPTS if qtype == "aac" else TASKS[task].questions
        assert qs <= set(allowed)
    # ... and the gold letter of a class varies (options are shuffled per item)
    assert all(len(v) >= 2 for (task, _), v in letters.items() if task in ("pitch", "noise"))


def test_classes_are_balanced_per_task_and_type(built):
    _, _, rows = built
    counts = collections.Counter((r["task"], r["question_type"], r["label"])
                                 for r in rows if r["id"].startswith("syn-train"))
    for task in SYNTHETIC_TASKS:
        for qtype in ("mc_qa", "qa", "aac"):
            per = [counts[(task, qtype, c)] for c in TASKS[task].classes]
            assert max(per) - min(per) <= 1, (task, qtype, per)


def test_seed_fixes_everything_and_splits_are_independent(tmp_path):
    a = build_dataset("synthetic", tmp_path / "a", n_train=8, n_valid=4, n_test=4, seed=1)
    b = build_dataset("synthetic", tmp_path / "b", n_train=12, n_valid=4, n_test=4, seed=1)
    build_dataset("synthetic", tmp_path / "c", n_train=8, n_valid=4, n_test=4, seed=2)
    assert a.total_kept == 16 and b.total_kept == 20
    read = {k: (p / "valid.jsonl").read_text() for k, p in
            (("a", tmp_path / "a"), ("b", tmp_path / "b"), ("c", tmp_path / "c"))}
    assert read["a"] == read["b"]  # more training items leave validation untouched
    assert read["a"] != read["c"]
    for name in ("syn-valid-00000-pitch-mc_qa.wav", "syn-valid-00001-noise-mc_qa.wav"):
        a_bytes = (tmp_path / "a" / "audio" / name).read_bytes()
        assert a_bytes == (tmp_path / "b" / "audio" / name).read_bytes()


def test_vocabulary_covers_every_emitted_word(built):
    _, _, rows = built
    vocab = set(re.findall(r"\w+", " ".join(vocabulary_text()).lower()))
    for row in rows:
        parts = fmt.parse(row["messages"][2]["content"][0]["text"])
        text = " ".join([row["question"], *(row["choices"] or []), parts.think,
                         parts.semantic_elements, parts.answer])
        text = re.sub(r"^[A-D]\. ", "", text)
        words = set(re.findall(r"\w+", text.lower())) - set(fmt.OPTION_LETTERS.lower())
        category_words = set(re.findall(r"\w+", " ".join(c.name for c in fmt.CATEGORIES).lower()))
        assert words - vocab - category_words == set(), row["id"]


def test_grpo_kind_and_simple_variant(tmp_path):
    build_dataset("synthetic", tmp_path, n_train=4, n_valid=0, n_test=0, kind="grpo",
                  variant="simple", prepend_instruction=False, length_budget=10)
    rows = load_examples(tmp_path / "train.jsonl")
    assert not (tmp_path / "valid.jsonl").exists()
    for row in rows:
        assert "messages" not in row and row["variant"] == "simple"
        assert row["prompt"][1]["content"][1]["text"] == fmt.mc_question(row["question"],
                                                                          row["choices"])


def test_unknown_task_fails_before_writing(tmp_path):
    with pytest.raises(ValueError, match="tasks"):
        build_dataset("synthetic", tmp_path, tasks=["pitch", "loudness"])
    assert not (tmp_path / "train.jsonl").exists()
