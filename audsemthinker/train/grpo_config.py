"""The GRPO config checked and turned into TRL's arguments and the policy to train."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


FORCED = {"remove_unused_columns": False}
"""GRPOConfig values the reward columns need; a config that sets them otherwise is an error."""
DERIVED = {"output_dir": "run_dir", "report_to": "logging.wandb", "reward_weights": "reward"}
"""GRPOConfig fields that come from elsewhere, and where from."""
COLUMNS = ("id", "audio", "task", "variant", "question", "answer", "choices", "question_type",
           "label", "source")
"""Row columns handed to the rewards (besides ``prompt``) when the rows have them."""


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def check_grpo_section(cfg: DictConfig) -> dict:
    """Check ``cfg.train.grpo`` and return it as a plain dict (entry points call it first).

    Raises:
        ConfigError: a key that is not a GRPOConfig field, one this trainer sets itself, or a
            missing ``loss_type`` (TRL's default "dapo" is not the paper's "grpo": say which).
    """
    from trl import GRPOConfig

    from audsemthinker.config import ConfigError, check_trainer_section

    section = OmegaConf.to_container(cfg.train.grpo, resolve=True) or {}
    check_trainer_section(section, GRPOConfig, "train.grpo", DERIVED, FORCED,
                          "the answer/choices columns never reach the rewards")
    if "loss_type" not in section:
        raise ConfigError("train.grpo.loss_type: set it explicitly (the paper: grpo; TRL's "
                          "default is dapo)")
    return section


def grpo_args(cfg: DictConfig, run_dir: Path, report_to: list[str], weights: list[float]):
    """``trl.GRPOConfig`` from ``cfg.train.grpo`` plus run folder, wandb and reward weights.

    Gradient checkpointing follows ``model.gradient_checkpointing`` unless the section sets
    ``activation_checkpointing`` (or its deprecated alias ``gradient_checkpointing``).
    """
    from trl import GRPOConfig

    section = check_grpo_section(cfg)
    if "activation_checkpointing" not in section and "gradient_checkpointing" not in section:
        section["activation_checkpointing"] = bool(cfg.model.get("gradient_checkpointing", False))
    return GRPOConfig(**section, **FORCED, output_dir=str(run_dir), report_to=report_to,
                      reward_weights=list(weights))


def init_model_config(cfg: DictConfig):
    """The ``ModelConfig`` the policy starts from: ``grpo_init`` if set, else ``cfg.model``."""
    from audsemthinker.config import to_dataclass
    from audsemthinker.model.loader import ModelConfig

    mcfg = to_dataclass(cfg.model, ModelConfig)
    init = cfg.get("grpo_init")
    if init:
        if not (Path(str(init)) / "config.json").exists():
            raise FileNotFoundError(f"grpo_init={init}: no config.json there; point it at a "
                                    "merged SFT export (scripts/export.py)")
        mcfg = dataclasses.replace(mcfg, name_or_path=str(init), tiny=False)
    return mcfg


def load_policy(cfg: DictConfig, beta: float):
    """Policy (LoRA or full), reference (full fine-tuning with beta > 0 only) and processor.

    Returns:
        ``(model, ref_model_or_None, processor, model_config)``.
    """
    from audsemthinker.config import to_dataclass
    from audsemthinker.model.loader import check_token_ids, load_thinker
    from audsemthinker.model.lora import LoraSettings, apply_lora
    from audsemthinker.model.processor import build_processor

    mcfg = init_model_config(cfg)  # the tiny base is built: build_grpo_trainer
    model = load_thinker(mcfg)
    tok_dir = mcfg.name_or_path
    if cfg.get("grpo_init") and not (Path(tok_dir) / "tokenizer_config.json").exists():
        log.warning("%s has no tokenizer files; using %s's", tok_dir, cfg.model.name_or_path)
        tok_dir = str(cfg.model.name_or_path)
    processor = build_processor(tok_dir)
    check_token_ids(model, processor.tokenizer)
    lora = to_dataclass(cfg.lora, LoraSettings)
    ref = load_thinker(mcfg) if lora.preset == "none" and beta != 0.0 else None
    return apply_lora(model, lora), ref, processor, mcfg
