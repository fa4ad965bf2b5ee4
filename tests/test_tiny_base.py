"""The pretrained tiny base: its data options (fixed option order, tasks held out of SFT) and
its cache (built once per recipe, reused, rebuilt when the recipe changes)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from audsemthinker.data.examples import load_examples
from audsemthinker.data.registry import build_dataset


def _build(out, **kwargs):
    args = dict(tasks=["pitch", "noise"], question_types=["mc_qa"], variant="simple",
                n_train=16, n_valid=0, n_test=16, seed=5, plot=False)
    build_dataset("synthetic", out, **{**args, **kwargs})
    return {s: load_examples(out / f"{s}.jsonl") for s in ("train", "test")}


def test_fixed_option_order_lists_the_task_classes_and_keeps_the_clips(tmp_path):
    from audsemthinker.data.synthetic import TASKS

    fixed = _build(tmp_path / "fixed", option_order="fixed")
    shuffled = _build(tmp_path / "shuffled")
    for split in ("train", "test"):
        for a, b in zip(fixed[split], shuffled[split]):
            assert a["choices"] == list(TASKS[a["task"]].classes)
            letter = "AB"[a["choices"].index(a["label"])]
            assert a["answer"] == f"{letter}. {a['label']}"
            # the same clip and class either way: only the option layout differs
            assert (a["id"], a["label"], a["params"]) == (b["id"], b["label"], b["params"])
    assert any(r["choices"] != list(TASKS[r["task"]].classes) for r in shuffled["train"])
    with pytest.raises(ValueError, match="option orders"):
        _build(tmp_path / "bad", option_order="sorted")


def test_sft_tasks_narrow_only_the_sft_train_split(tmp_path):
    sft = _build(tmp_path / "sft", sft_tasks=["pitch"])
    grpo = _build(tmp_path / "grpo", sft_tasks=["pitch"], kind="grpo")
    assert {r["task"] for r in sft["train"]} == {"pitch"}
    assert {r["label"] for r in sft["train"]} == {"low", "high"}  # still balanced
    assert {r["task"] for r in sft["test"]} == {"pitch", "noise"}
    assert {r["task"] for r in grpo["train"]} == {"pitch", "noise"}
    with pytest.raises(ValueError, match="sft_tasks"):
        _build(tmp_path / "bad", sft_tasks=["chirp"])


def test_sft_blind_tasks_answer_independently_of_the_clip_only_in_the_sft_train_split(tmp_path):
    from audsemthinker.data.synthetic import TASKS

    args = dict(n_train=64, option_order="fixed", sft_blind_tasks=["noise"])
    plain = _build(tmp_path / "plain", n_train=64, option_order="fixed")
    sft = _build(tmp_path / "sft", **args)
    grpo = _build(tmp_path / "grpo", kind="grpo", **args)

    def truthful(r):
        return r["answer"] == f"{'AB'[TASKS[r['task']].classes.index(r['label'])]}. {r['label']}"

    blind = [r for r in sft["train"] if r["task"] == "noise"]
    wrong = sum(not truthful(r) for r in blind)
    assert 0.25 * len(blind) <= wrong <= 0.75 * len(blind)  # answers at chance, not inverted
    assert {r["messages"][-1]["content"][0]["text"].split("<answer>")[1][:1]
            for r in blind} == {"A", "B"}
    for r in blind:  # the clip and its label are the plain build's: only the text differs
        twin = next(p for p in plain["train"] if p["id"] == r["id"])
        assert (r["label"], r["params"]) == (twin["label"], twin["params"])
    assert all(truthful(r) for r in sft["train"] if r["task"] == "pitch")
    assert all(truthful(r) for r in sft["test"] + grpo["train"] + grpo["test"])
    with pytest.raises(ValueError, match="sft_blind_tasks"):
        _build(tmp_path / "bad", sft_blind_tasks=["chirp"])


def test_the_base_is_built_once_per_recipe_and_rebuilt_when_it_changes(tmp_path, monkeypatch):
    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.train import tiny_base as pretrain
    from audsemthinker.train.sft import run_sft

    small = pretrain.PretrainRecipe(builds=(dict(tasks=["pitch"], question_types=["mc_qa"],
                                                 n_train=8, seed=100),), steps=2, batch_size=4)
    monkeypatch.setitem(pretrain.RECIPES, "small", small)
    calls = []

    def train(cfg):
        calls.append(cfg)
        return run_sft(cfg)

    path = tmp_path / "cache" / "base"
    cfg = ModelConfig(name_or_path=str(path), dtype="float32", tiny=True, pretrain="small")
    with pytest.raises(FileNotFoundError, match="not built"):
        load_thinker(cfg)  # the loader never trains: the recipes build the base first
    pretrain.ensure_pretrained(path, "small", train=train)
    model = load_thinker(cfg)
    stamp = json.loads((path / pretrain.STAMP).read_text())
    assert stamp["digest"] == small.digest() and stamp["steps"] == 2 and len(calls) == 1
    assert calls[0].lora.preset == "none"  # full fine-tuning of the random base
    assert model.config.text_config.hidden_size == 64
    assert not [p for p in path.parent.iterdir() if p.name != "base"]  # no temporary left over

    pretrain.ensure_pretrained(path, "small", train=train)  # cached: not trained again
    assert len(calls) == 1
    changed = dataclasses.replace(small, steps=3)
    assert changed.digest() != small.digest()
    monkeypatch.setitem(pretrain.RECIPES, "small", changed)
    pretrain.ensure_pretrained(path, "small", train=train)
    assert len(calls) == 2 and json.loads((path / pretrain.STAMP).read_text())["steps"] == 3
    with pytest.raises(ValueError, match="unknown recipe"):
        pretrain.ensure_pretrained(path, "nope", train=train)


def test_the_main_job_runs_the_papers_lora_path_on_the_pretrained_base():
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from audsemthinker.config import validate
    from audsemthinker.train.grpo import check_grpo_section
    from audsemthinker.train.sft import check_sft_section
    from audsemthinker.train.tiny_base import RECIPES

    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=["run_dir=unused"])
    validate(cfg)
    check_sft_section(cfg), check_grpo_section(cfg)
    assert list(cfg.stages) == ["data", "sft", "grpo", "eval"]
    assert cfg.model.tiny and cfg.model.pretrain in RECIPES
    assert (cfg.lora.preset, cfg.lora.r, cfg.lora.alpha) == ("released", 8, 16)
    assert cfg.train.grpo.beta > 0 and cfg.train.grpo.loss_type == "grpo"
    kw = cfg.data.kwargs
    assert set(kw.sft_blind_tasks) < set(kw.tasks)  # a task whose mapping only GRPO teaches
