"""Configs compose, and a misspelt key or a wrong type fails at start-up with its name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from audsemthinker.config import ConfigError, validate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _compose(overrides=()):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_root_config_composes_and_validates():
    cfg = _compose()
    validate(cfg)
    assert cfg.model.tiny is True
    assert cfg.lora.preset


@pytest.mark.parametrize("override, key", [
    ("+model.dtyp=float32", "model.dtyp"),
    ("+lora.rank=4", "lora.rank"),
    ("lora.r=eight", "lora.r"),
    ("model.tiny=maybe", "model.tiny"),
    ("+data.kwargs.n_trian=3", "data.kwargs.n_trian"),
    ("+data.stirct=true", "data.stirct"),
])
def test_bad_keys_fail_with_their_name(override, key):
    cfg = _compose([override])
    with pytest.raises(ConfigError, match="^" + re.escape(key)):
        validate(cfg)


def test_misspelt_key_suggests_the_right_one():
    cfg = _compose(["+model.atn_implementation=sdpa"])
    with pytest.raises(ConfigError, match="did you mean 'attn_implementation'"):
        validate(cfg)


@pytest.mark.parametrize("group", ["model", "lora"])
def test_every_member_of_a_schema_group_validates(group):
    for f in sorted((CONFIGS / group).glob("*.yaml")):
        cfg = _compose([f"{group}={f.stem}"])
        validate(cfg)
        assert OmegaConf.select(cfg, group) is not None
