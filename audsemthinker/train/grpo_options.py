"""The ``grpo`` config group: GRPO choices that are not ``trl.GRPOConfig`` fields.

``train.grpo`` holds exactly TRL's fields (TRL checks them); what this codebase adds on top
lives here, each part documented in its own module:

- ``dynamic_sampling`` (``train/dynamic_sampling.py``): drop groups whose rewards all agree
  and refill the generation batch from fresh prompts; off by default (the paper's recipe).
- ``overlong`` (``rewards/overlong.py``): mask truncated completions from the loss, or DAPO's
  soft overlong penalty; ``none`` by default.
- ``stats`` (``train/grpo_stats.py``): think-word statistics against the budget, and the
  ``grpo_stats.png`` figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from audsemthinker.rewards.overlong import Overlong
from audsemthinker.train.dynamic_sampling import DynamicSampling
from audsemthinker.train.grpo_stats import StatsSettings

if TYPE_CHECKING:
    from omegaconf import DictConfig


@dataclass
class GRPOOptions:
    """The whole ``grpo`` group."""

    dynamic_sampling: DynamicSampling = field(default_factory=DynamicSampling)
    overlong: Overlong = field(default_factory=Overlong)
    stats: StatsSettings = field(default_factory=StatsSettings)


PARTS = {"dynamic_sampling": DynamicSampling, "overlong": Overlong, "stats": StatsSettings}


def grpo_options(cfg: DictConfig | None) -> GRPOOptions:
    """``cfg.grpo`` as :class:`GRPOOptions`; the defaults when the config has none.

    Raises:
        ConfigError: an unknown key (by its full name) or a bad value.
    """
    from omegaconf import DictConfig, OmegaConf

    from audsemthinker.config import ConfigError, check_fields

    section = None if cfg is None else cfg.get("grpo")
    if section is None:
        return GRPOOptions()
    data = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) \
        else dict(section)
    check_fields(data, GRPOOptions, "grpo")
    out = {}
    for key, schema in PARTS.items():
        check_fields(data.get(key) or {}, schema, f"grpo.{key}")
        out[key] = schema(**(data.get(key) or {}))
    options = GRPOOptions(**out)
    try:
        options.dynamic_sampling.check()
        grpo = cfg.get("train", {}).get("grpo") or {}
        options.overlong.check(int(grpo.get("max_completion_length") or 512))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return options


def think_budget(options: GRPOOptions, rewards: list[dict]) -> float | None:
    """``grpo.stats.think_budget``, else the ``length`` reward's ``budget``, else None."""
    if options.stats.think_budget is not None:
        return float(options.stats.think_budget)
    for entry in rewards:
        if entry.get("name") == "length":
            return float(entry.get("budget", 25))
    return None
