"""Result files, Markdown tables, the bar chart and the paper comparison."""

import json

import pytest

from audsemthinker.eval.paper import PAPER_TABLES, comparison_rows, comparison_table
from audsemthinker.eval.report import mmau_markdown, muchomusic_markdown, plot_task_bars
from audsemthinker.eval.scoring import score_mmau, score_muchomusic_judged
from audsemthinker.files import sha256_file, write_json_atomic, write_text_atomic

CHOICES = ["Man", "Woman", "Child", "Robot"]


def _item(id_, task, difficulty, answer="Man"):
    return {"id": id_, "audio_id": f"./a/{id_}.wav", "question": "who?", "choices": CHOICES,
            "answer": answer, "dataset": "x", "task": task, "split": "test-mini",
            "category": "Reasoning", "sub-category": "Acoustic Source Inference",
            "difficulty": difficulty}


@pytest.fixture
def mmau_result():
    items = [_item("1", "sound", "easy"), _item("2", "sound", "easy"),
             _item("3", "sound", "hard"), _item("4", "music", "hard"),
             _item("5", "speech", "medium")]
    preds = {"1": "man", "2": "man", "3": "woman", "4": "a man", "5": None}
    return score_mmau(items, preds)


def test_write_json_atomic_roundtrip_and_no_leftovers(tmp_path):
    path = tmp_path / "sub" / "result.json"
    write_json_atomic(path, {"a": 1, "b": [None, "é"]})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_failed_json_write_keeps_old_file(tmp_path):
    path = tmp_path / "result.json"
    write_json_atomic(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"nan": float("nan")})
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_write_text_atomic(tmp_path):
    path = tmp_path / "report.md"
    write_text_atomic(path, "# hi\n")
    assert path.read_text() == "# hi\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_sha256_file_known_digest(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert sha256_file(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_mmau_markdown_numbers(mmau_result):
    md = mmau_markdown(mmau_result, title="MMAU test-mini")
    assert md.startswith("## MMAU test-mini\n")
    assert "5 items, 1 skipped" in md
    assert "| total | 75.00 | 3 | 4 | 1 |" in md
    assert "| sound | 66.67 | 2 | 3 | 0 |" in md
    assert "| music | 100.00 | 1 | 1 | 0 |" in md
    assert "| speech | - | 0 | 0 | 1 |" in md
    assert "| hard | 50.00 | 1 | 2 | 0 |" in md
    assert "| Acoustic Source Inference | 75.00 | 3 | 4 | 1 |" in md
    for heading in ("### Per task", "### Per difficulty", "### Per sub-category"):
        assert heading in md


def test_muchomusic_markdown_names_method_and_numbers():
    items = [{"id": "a", "music_knowledge": True, "music_reasoning": False, "dataset": "sdd"},
             {"id": "b", "music_knowledge": False, "music_reasoning": True, "dataset": "sdd"},
             {"id": "c", "music_knowledge": True, "music_reasoning": True,
              "dataset": "musiccaps"}]
    md = muchomusic_markdown(score_muchomusic_judged(items, {"a": 1, "b": 0}))
    assert "LLM judge (0/1)" in md
    assert "| total | 33.33 | - | 1 | 1 | 3 |" in md
    assert "| knowledge | 50.00 | - | 1 | 1 | 2 |" in md
    assert "| sdd | 50.00 | - | 1 | 0 | 2 |" in md


def test_plot_task_bars_writes_png(tmp_path, mmau_result):
    pytest.importorskip("matplotlib")
    path = plot_task_bars(mmau_result, tmp_path / "plots" / "tasks.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["tasks.png"]
    with pytest.raises(ValueError, match="no non-empty group"):
        plot_task_bars(mmau_result, tmp_path / "x.png", group="nope")


def test_comparison_rows_differences():
    ours = {"AudSemThinker (SFT)": {"mmau_test_mini": 60.0},
            "ours: tiny run": {"mmau_test_mini": 30.0, "muchomusic": 25.0}}
    rows = {(r["row"], r["column"]): r for r in comparison_rows(ours, "main")}
    sft = rows[("AudSemThinker (SFT)", "mmau_test_mini")]
    assert sft["paper"] == 62.90 and sft["ours"] == 60.0
    assert sft["diff"] == pytest.approx(-2.90)
    assert rows[("AudSemThinker (SFT)", "mmau_test")] == {
        "row": "AudSemThinker (SFT)", "column": "mmau_test", "paper": 64.41, "ours": None,
        "diff": None}
    assert rows[("ours: tiny run", "muchomusic")]["paper"] is None
    assert len(rows) == 3 * (len(PAPER_TABLES["main"].rows) + 1)


def test_comparison_table_markdown():
    md = comparison_table({"AudSemThinker-QA GRPO": {"mmau_test_mini": 67.2, "muchomusic": 70.0},
                           "mine": {"mmau_test": 50.0}})
    assert "| AudSemThinker-QA GRPO | 66.70 | 67.20 | +0.50 | 66.03 | - | - | 76.66 | 70.00 | " \
           "-6.66 |" in md
    assert "| Audio-CoT | 57.80 | - | - | - | - | - | - | - | - |" in md
    assert "| mine | - | - | - | - | 50.00 | - | - | - | - |" in md
    assert md.splitlines()[-1].startswith("| mine |")


def test_comparison_per_task_and_errors():
    md = comparison_table({"Qwen2.5-Omni-7B": {"sound": 70.0}}, table="per_task")
    assert "| Qwen2.5-Omni-7B | 67.87 | 70.00 | +2.13 | 69.16 | - | - | 59.76 | - | - |" in md
    with pytest.raises(ValueError, match="unknown paper table"):
        comparison_table({}, table="nope")
    with pytest.raises(ValueError, match="not in table"):
        comparison_rows({"x": {"mmau_testmini": 1.0}})
