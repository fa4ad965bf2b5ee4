"""Config validation: a misspelt key or a wrong type fails at start-up, naming the key.

Hydra composes plain YAML; nothing checks it until a value is read, maybe an hour into a run.
Every entry point calls :func:`validate` right after composing. Groups with a schema here are
checked against it (unknown keys, types); trainer groups hold exactly TRL config fields and are
checked against the TRL dataclass itself (:func:`check_fields`), so TRL stays the authority on
its own options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from audsemthinker.eval.settings import eval_settings
from audsemthinker.schemas import (
    DATA_KEYS,
    ConfigError,
    LoraSettings,
    ModelConfig,
    check_fields,
    fast_settings,
    grpo_options,
    sampler_settings,
)
from audsemthinker.schemas.checks import _suggest

__all__ = ["ConfigError", "check_fields", "check_trainer_section", "register_schema",
           "to_dataclass", "validate"]


SCHEMAS: dict[str, type] = {}


def register_schema(key: str, schema: type) -> None:
    """Check the top-level config section ``key`` against dataclass ``schema``."""
    SCHEMAS[key] = schema


def _default_schemas() -> None:
    SCHEMAS.setdefault("model", ModelConfig)
    SCHEMAS.setdefault("lora", LoraSettings)


def _validate_data(section: DictConfig) -> None:
    """The data node: known keys, a registered builder, kwargs that bind to its signature."""
    from audsemthinker.data.registry import check_kwargs, get_builder

    for key in section:
        if key not in DATA_KEYS:
            raise ConfigError(f"data.{key}: not a data config key{_suggest(str(key), DATA_KEYS)}"
                              f" (keys: {list(DATA_KEYS)})")
    try:
        builder = get_builder(section.builder)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"data.builder: {e}") from None
    kwargs = OmegaConf.to_container(section.get("kwargs") or {}, resolve=False)
    try:
        check_kwargs(builder, kwargs)
    except TypeError as e:
        import inspect

        params = inspect.signature(builder).parameters
        bad = next((k for k in kwargs if k not in params),
                   next((k for k in kwargs if f"{k!r}" in str(e)), "?"))
        raise ConfigError(f"data.kwargs.{bad}: {e}") from None


def _check_one_budget(cfg: DictConfig) -> None:
    """The prompt's "approximately N words" and the length reward's budget must be one number
    (both read the top-level ``length_budget`` in the shipped configs)."""
    prompt = OmegaConf.select(cfg, "data.kwargs.length_budget", default=None)
    rewards = OmegaConf.select(cfg, "reward.rewards", default=None) or []
    budgets = {r.get("budget") for r in rewards
               if isinstance(r, Mapping) and r.get("name") == "length"}
    if prompt is not None and budgets and budgets != {prompt}:
        raise ConfigError(f"data.kwargs.length_budget={prompt} but the length reward's budget "
                          f"is {sorted(budgets, key=str)}: set the top-level length_budget "
                          "instead, which feeds both")


def check_trainer_section(section: dict, schema: type, where: str, derived: dict[str, str],
                          forced: dict[str, Any], forced_why: str) -> dict:
    """Check a trainer group (``train.sft`` / ``train.grpo``) against its TRL config class.

    Args:
        section: the group as a plain dict.
        schema: ``trl.SFTConfig`` or ``trl.GRPOConfig``.
        where: dotted name for messages.
        derived: fields the trainer sets itself -> where their value comes from.
        forced: fields the audio path needs at a fixed value.
        forced_why: what goes wrong otherwise (for the message).

    Raises:
        ConfigError: an unknown field, a derived field set in the config, or a forced field
            set to another value.
    """
    check_fields(section, schema, where)
    for key, source in derived.items():
        if key in section:
            raise ConfigError(f"{where}.{key}: set by the trainer from {source}; remove it")
    for key, value in forced.items():
        if key in section and section[key] != value:
            raise ConfigError(f"{where}.{key}={section[key]!r}: must be {value!r}, or "
                              f"{forced_why}")
    return section


def validate(cfg: DictConfig) -> DictConfig:
    """Check every section that has a schema; return ``cfg`` unchanged when it is valid.

    Raises:
        ConfigError: the first bad key, by its full dotted name.
    """
    _default_schemas()
    for key, schema in SCHEMAS.items():
        if key not in cfg or cfg[key] is None:
            continue
        section = cfg[key]
        check_fields(section, schema, key)
        try:
            OmegaConf.merge(OmegaConf.structured(schema), section)
        except OmegaConfBaseException as e:
            bad = getattr(e, "full_key", None) or getattr(e, "key", "?")
            raise ConfigError(f"{key}.{bad}: {e.msg if hasattr(e, 'msg') else e}") from None
    if "data" in cfg and cfg.data is not None:
        _validate_data(cfg.data)
        _check_one_budget(cfg)
    if "eval" in cfg and cfg.eval is not None:
        eval_settings(cfg.eval)  # raises ConfigError naming the key
    if cfg.get("fast") is not None:
        fast_settings(cfg)
    if cfg.get("sampler") is not None:
        sampler_settings(cfg)
    if cfg.get("grpo") is not None:
        grpo_options(cfg)
    return cfg


def to_dataclass(section: DictConfig | dict, schema: type) -> Any:
    """Build ``schema`` from a config section (after :func:`validate`)."""
    data = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) \
        else dict(section)
    return schema(**data)
