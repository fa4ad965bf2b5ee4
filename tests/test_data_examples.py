"""Row shapes, JSONL round trips with relative audio paths, and the target format round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audsemthinker import format as fmt
from audsemthinker.data.examples import (
    RowError,
    load_examples,
    to_grpo_row,
    to_sft_row,
    write_examples,
)

SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
          "perceiving auditory and visual inputs, as well as generating text and speech.")
ARGS = dict(id="x1", audio="/data/a.wav", task="mc_qa", question="What is heard?",
            choices=["a dog", "rain"], answer="B", think="Wet patter.",
            semantic_elements="- Physical sound sources: rain")


def test_sft_row_has_the_chat_and_the_rendered_target():
    row = to_sft_row(**ARGS, length_budget=25)
    user = fmt.user_prompt("What is heard?", ["a dog", "rain"], variant="semantic",
                           prepend_instruction=True, length_budget=25)
    assert user.endswith("What is heard?\nChoices:\nA. a dog\nB. rain")
    assert "approximately 25 words" in user
    assert row["answer"] == "B. rain"  # letter normalised to the training-data form
    assert row["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "audio", "audio": "/data/a.wav"},
                                     {"type": "text", "text": user}]},
        {"role": "assistant", "content": [{"type": "text", "text": (
            "<think>Wet patter.</think>\n<semantic_elements>- Physical sound sources: rain"
            "</semantic_elements>\n<answer>B. rain</answer>")}]},
    ]
    assert {k: row[k] for k in ("id", "audio", "task", "variant", "question", "choices",
                                "source", "duration")} == {
        "id": "x1", "audio": "/data/a.wav", "task": "mc_qa", "variant": "semantic",
        "question": "What is heard?", "choices": ["a dog", "rain"], "source": "", "duration": None}


def test_grpo_row_has_the_prompt_and_no_target():
    row = to_grpo_row(**ARGS, prepend_instruction=False, variant="simple")
    assert "messages" not in row and row["answer"] == "B. rain"
    assert row["prompt"][1]["content"][1]["text"] == "What is heard?\nChoices:\nA. a dog\nB. rain"
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]


@pytest.mark.parametrize("change,reason", [
    ({"answer": "C. thunder"}, "answer_not_in_choices"),
    ({"answer": "A. rain"}, "answer_not_in_choices"),  # letter and text disagree
    ({"answer": " "}, "empty_answer"),
    ({"question": ""}, "missing_field"),
    ({"semantic_elements": None}, "missing_field"),
    ({"think": ""}, "missing_field"),
    ({"choices": ["only"]}, "bad_choices"),
])
def test_bad_items_raise_a_reason(change, reason):
    with pytest.raises(RowError) as e:
        to_sft_row(**{**ARGS, **change})
    assert e.value.reason == reason


def test_simple_variant_needs_no_elements():
    row = to_sft_row(**{**ARGS, "semantic_elements": None, "choices": None, "answer": "Rain."},
                     variant="simple")
    assert row["messages"][2]["content"][0]["text"] == \
        "<think>Wet patter.</think>\n<answer>Rain.</answer>"


def test_jsonl_stores_relative_paths_and_loads_absolute(tmp_path):
    (tmp_path / "ds" / "audio").mkdir(parents=True)
    clip = tmp_path / "ds" / "audio" / "x1.wav"
    rows = [to_sft_row(**{**ARGS, "audio": str(clip)})]
    write_examples(tmp_path / "ds" / "train.jsonl", rows)
    stored = json.loads((tmp_path / "ds" / "train.jsonl").read_text())
    assert stored["audio"] == "audio/x1.wav"
    assert stored["messages"][1]["content"][0]["audio"] == "audio/x1.wav"
    # the folder moves: paths follow it
    (tmp_path / "ds").rename(tmp_path / "moved")
    back = load_examples(tmp_path / "moved" / "train.jsonl")[0]
    assert back["audio"] == str(tmp_path / "moved" / "audio" / "x1.wav")
    assert back["messages"][1]["content"][0]["audio"] == back["audio"]
    assert back["messages"][2] == rows[0]["messages"][2]


def test_write_is_atomic(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_examples(path, [{"id": "old", "audio": str(tmp_path / "a.wav")}])

    def broken():
        yield {"id": "new", "audio": str(tmp_path / "b.wav")}
        raise RuntimeError("builder died")

    with pytest.raises(RuntimeError):
        write_examples(path, broken())
    assert [r["id"] for r in load_examples(path)] == ["old"]
    assert not (tmp_path / "rows.jsonl.tmp").exists()


def test_load_examples_names_the_bad_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a", "audio": "a.wav"}\n\n{"id": "b", \n')
    with pytest.raises(ValueError, match=r"rows.jsonl:3"):
        load_examples(path)
    path.write_text('[1, 2]\n')
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_examples(path)


_text = st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)),
                min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(think=_text, answer=_text, elements=_text, variant=st.sampled_from(fmt.VARIANTS))
def test_render_target_then_parse_returns_the_parts(think, answer, elements, variant):
    target = fmt.render_target(think, answer, elements, variant=variant)
    parts = fmt.parse(target, variant=variant)
    assert parts.think == think and parts.answer == answer and parts.well_formed
    assert parts.semantic_elements == (elements if variant == "semantic" else None)


@settings(max_examples=200, deadline=None)
@given(question=st.text(min_size=1, max_size=30),
       choices=st.lists(st.text(st.characters(blacklist_characters="\n\r",
                                              blacklist_categories=("Cs", "Zl", "Zp")),
                                min_size=1, max_size=12), min_size=2, max_size=8))
def test_split_mc_question_inverts_mc_question(question, choices):
    assert fmt.split_mc_question(fmt.mc_question(question, choices)) == (question, choices)
