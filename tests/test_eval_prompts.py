"""Benchmark items are prompted the way the evaluated run was trained: its variant, its length
budget, its instruction wording, read from the run's saved config.yaml (or set in the eval
config), and the settings are recorded in the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_eval_harness import make_cfg, write_mmau, write_mucho

from audsemthinker import format as fmt
from audsemthinker.eval import harness
from audsemthinker.train.common import save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def trained_run(folder: Path, experiment: str) -> Path:
    """A run folder as scripts/grpo.py leaves it: config.yaml, final/ (the adapter)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"experiment={experiment}", f"run_dir={folder}", f"paths.output_dir={folder}"])
    folder.mkdir(parents=True)
    save_config(cfg, folder)
    (folder / "final").mkdir()
    return folder / "final"


class Prompts:
    """Stands in for generation: keeps the user text of every prompt, answers "B"."""

    def __init__(self):
        self.texts = []

    def __call__(self, model, collator, rows, decoding):
        self.texts += [r["prompt"][-1]["content"][-1]["text"] for r in rows]
        return ["<answer>B</answer>"] * len(rows)


@pytest.fixture(scope="module")
def mmau(tmp_path_factory):
    return write_mmau(tmp_path_factory.mktemp("mmau"), n=3)


def _evaluate(tiny_full_dir, tiny_model, tiny_processor, mmau, run_dir, monkeypatch, **over):
    rows_path, meta, rows = mmau
    bench = {"mmau_test_mini": {"scorer": "mmau", "rows": str(rows_path), "metadata": str(meta)}}
    seen = Prompts()
    monkeypatch.setattr(harness, "generate_rows", seen)
    cfg = make_cfg(tiny_full_dir, run_dir, bench, **over)
    result = harness.run_eval(cfg, model=tiny_model, processor=tiny_processor,
                              label="stand-in")["mmau_test_mini"]
    return seen.texts, result, rows


def test_a_simple_variant_run_is_asked_for_think_and_answer_only(
        tiny_full_dir, tiny_model, tiny_processor, mmau, tmp_path, monkeypatch):
    adapter = trained_run(tmp_path / "grpo_simple", "grpo_qa_simple")
    texts, result, rows = _evaluate(tiny_full_dir, tiny_model, tiny_processor, mmau,
                                    tmp_path / "eval", monkeypatch, adapter=str(adapter))
    assert len(texts) == len(rows)
    for text, row in zip(texts, rows):
        assert text == fmt.user_prompt(row["question"], row["choices"], variant="simple",
                                       length_budget=25)
        assert "<semantic_elements>" not in text and "approximately 25 words" in text
    assert result["prompt"]["variant"] == "simple"
    assert result["prompt"]["length_budget"] == 25
    assert result["prompt"]["source"] == str(adapter.parent / "config.yaml")
    assert result["prompt"]["example"] == texts[0]
    saved = json.loads((tmp_path / "eval" / "results" / "mmau_test_mini.json").read_text())
    assert saved["prompt"]["variant"] == "simple"


def test_a_budget_100_run_is_asked_for_100_words(tiny_full_dir, tiny_model, tiny_processor, mmau,
                                                 tmp_path, monkeypatch):
    adapter = trained_run(tmp_path / "grpo_b100", "grpo_qa_budget100")
    texts, result, _ = _evaluate(tiny_full_dir, tiny_model, tiny_processor, mmau,
                                 tmp_path / "eval", monkeypatch, adapter=str(adapter))
    assert texts and all("approximately 100 words" in t and "<semantic_elements>" in t
                         for t in texts)
    assert (result["prompt"]["variant"], result["prompt"]["length_budget"]) == ("semantic", 100)


def test_explicit_settings_win_and_a_run_without_config_gets_the_paper_prompt(
        tiny_full_dir, tiny_model, tiny_processor, mmau, tmp_path, monkeypatch):
    adapter = trained_run(tmp_path / "grpo_b100", "grpo_qa_budget100")
    texts, result, rows = _evaluate(
        tiny_full_dir, tiny_model, tiny_processor, mmau, tmp_path / "eval", monkeypatch,
        adapter=str(adapter), prompt_settings={"length_budget": 0, "instruction": "release"})
    assert texts[0] == fmt.user_prompt(rows[0]["question"], rows[0]["choices"],
                                       instruction="release")
    assert result["prompt"]["length_budget"] is None
    assert result["prompt"]["source"].endswith("config.yaml + eval.prompt_settings")

    texts, result, rows = _evaluate(tiny_full_dir, tiny_model, tiny_processor, mmau,
                                    tmp_path / "eval2", monkeypatch)
    assert texts[0] == rows[0]["prompts"]["audsem"]  # no run config: the paper's prompt
    assert result["prompt"]["source"] == "defaults"


def test_muchomusic_items_follow_the_run_too(tiny_full_dir, tiny_model, tiny_processor,
                                             tmp_path, monkeypatch):
    rows_path, csv_path, rows = write_mucho(tmp_path / "mucho", n=2)
    adapter = trained_run(tmp_path / "grpo_simple", "grpo_qa_simple")
    seen = Prompts()
    monkeypatch.setattr(harness, "generate_rows", seen)
    bench = {"muchomusic": {"scorer": "muchomusic", "rows": str(rows_path)}}
    cfg = make_cfg(tiny_full_dir, tmp_path / "eval", bench, adapter=str(adapter))
    harness.run_eval(cfg, model=tiny_model, processor=tiny_processor, label="stand-in")
    assert seen.texts == [fmt.user_prompt(r["question"].strip(), r["options"], variant="simple",
                                          length_budget=25) for r in rows]


def test_resuming_under_other_prompt_settings_is_refused(tiny_full_dir, tiny_model,
                                                         tiny_processor, mmau, tmp_path,
                                                         monkeypatch):
    _evaluate(tiny_full_dir, tiny_model, tiny_processor, mmau, tmp_path / "eval", monkeypatch)
    with pytest.raises(ValueError):
        _evaluate(tiny_full_dir, tiny_model, tiny_processor, mmau, tmp_path / "eval",
                  monkeypatch, prompt_settings={"variant": "simple"})


def test_unknown_prompt_setting_names_the_key(tiny_full_dir, tmp_path):
    from audsemthinker.config import ConfigError

    cfg = make_cfg(tiny_full_dir, tmp_path, {"x": {"scorer": "accuracy", "rows": "r.jsonl"}})
    section = OmegaConf.to_container(cfg.eval, resolve=True)
    section["prompt_settings"] = {"budget": 100}
    with pytest.raises(ConfigError, match="eval.prompt_settings"):
        harness.eval_settings(section)
