"""Every experiment config (one per paper row) composes, validates and builds its TRL config,
on the real model's settings and with the tiny overrides its header gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from audsemthinker.config import validate
from audsemthinker.rewards import build_rewards

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _tiny_overrides(name: str) -> list[str]:
    """The overrides the experiment's own header documents for a run here."""
    text = (CONFIGS / "experiment" / f"{name}.yaml").read_text()
    m = re.search(r"here, on the tiny model:\s+python scripts/\w+\.py (.*)", text)
    return m.group(1).split() if m else [f"experiment={name}"]


def _check(cfg):
    from trl import GRPOConfig, SFTConfig

    from audsemthinker.train.grpo import check_grpo_section
    from audsemthinker.train.sft import check_sft_section

    validate(cfg)
    cpu = {"bf16": False, "use_cpu": True}  # this CI machine has no bf16 GPU
    SFTConfig(output_dir="unused", **{**check_sft_section(cfg), **cpu})
    GRPOConfig(output_dir="unused", **{**check_grpo_section(cfg), **cpu})
    funcs, weights = build_rewards(OmegaConf.to_container(cfg.reward, resolve=True))
    assert funcs and len(funcs) == len(weights)


def test_there_is_one_experiment_per_paper_row():
    assert {"sft_semantic", "sft_simple", "sft_full_ft", "grpo_qa_budget25", "grpo_qa_budget100",
            "grpo_qa_budget150", "grpo_qa_simple", "tiny"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_on_the_real_model(name):
    cfg = _compose([f"experiment={name}"])
    _check(cfg)
    if name != "tiny":
        assert cfg.model.name_or_path == "Qwen/Qwen2.5-Omni-7B" and not cfg.model.tiny


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_its_tiny_overrides(name):
    cfg = _compose(_tiny_overrides(name))
    _check(cfg)
    assert cfg.model.tiny and cfg.data.builder == "synthetic"


def test_paper_grpo_row_has_the_paper_recipe():
    cfg = _compose(["experiment=grpo_qa_budget25"])
    g = cfg.train.grpo
    assert (g.learning_rate, g.beta, g.loss_type, g.num_generations) == (1e-6, 0.01, "grpo", 4)
    assert (g.temperature, g.top_p, g.top_k, g.epsilon) == (0.9, 1.0, 50, 0.2)
    lengths = [r for r in cfg.reward.rewards if r.name == "length"]
    assert lengths[0].budget == 25 and cfg.data.kwargs.length_budget == 25
