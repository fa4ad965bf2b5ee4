"""The SFT config checked and turned into TRL's arguments, and the audio cap it reads."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

FORCED = {"remove_unused_columns": False}
"""SFTConfig values the audio path needs; a config that sets them otherwise is an error."""
DERIVED = {"output_dir": "run_dir", "report_to": "logging.wandb"}
"""SFTConfig fields that come from elsewhere, and where from."""


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------
def check_sft_section(cfg: DictConfig) -> dict:
    """Check ``cfg.train.sft`` (keys are ``trl.SFTConfig`` fields; none this trainer sets) and
    return it as a plain dict. Entry points call it at start-up, before any data or model work.

    Raises:
        ConfigError: a key that is not an SFTConfig field, or one this trainer sets itself.
    """
    from trl import SFTConfig

    from audsemthinker.config import ConfigError, check_trainer_section

    section = OmegaConf.to_container(cfg.train.sft, resolve=True) or {}
    check_trainer_section(section, SFTConfig, "train.sft", DERIVED, FORCED,
                          "the audio columns are dropped before the collator sees them")
    if section.get("padding_free"):
        raise ConfigError("train.sft.padding_free is TRL's switch for its own text collator, "
                          "which this audio path does not use; set fast.sft.padding_free=true")
    if (section.get("dataset_kwargs") or {}).get("skip_prepare_dataset") is False:
        raise ConfigError("train.sft.dataset_kwargs.skip_prepare_dataset must stay true: TRL's "
                          "preparation would tokenise the text without the audio")
    return section


def sft_args(cfg: DictConfig, run_dir: Path, report_to: list[str]):
    """Build ``trl.SFTConfig`` from ``cfg.train.sft`` plus the values the audio path forces.

    Gradient checkpointing follows ``model.gradient_checkpointing`` unless the section sets
    ``activation_checkpointing`` (or its deprecated alias ``gradient_checkpointing``).

    Raises:
        ConfigError: see :func:`check_sft_section`.
    """
    from trl import SFTConfig

    section = check_sft_section(cfg)
    section["dataset_kwargs"] = {**(section.get("dataset_kwargs") or {}),
                                 "skip_prepare_dataset": True}
    if "activation_checkpointing" not in section and "gradient_checkpointing" not in section:
        section["activation_checkpointing"] = bool(cfg.model.get("gradient_checkpointing", False))
    return SFTConfig(**section, **FORCED, output_dir=str(run_dir), report_to=report_to)


def audio_cap(cfg: DictConfig) -> float | None:
    """Seconds of each clip training reads: the cap the data was built with
    (``data.audio.max_seconds``, which configs take from the root ``max_audio_seconds``)."""
    cap = OmegaConf.select(cfg, "data.audio.max_seconds", default=None)
    if cap is None:
        cap = OmegaConf.select(cfg, "max_audio_seconds", default=None)
    return None if cap is None else float(cap)
