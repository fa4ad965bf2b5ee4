"""The ``grpo`` group: GRPO choices that are not ``trl.GRPOConfig`` fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from audsemthinker.schemas.checks import ConfigError, nested_section

# The ``grpo`` config group: GRPO choices that are not ``trl.GRPOConfig`` fields.
#
# ``train.grpo`` holds exactly TRL's fields (TRL checks them); what this codebase adds on top
# is checked here; each part is documented where it acts:
#
# - ``dynamic_sampling`` (``train/dynamic_sampling.py``): drop groups whose rewards all agree
#   and refill the generation batch from fresh prompts; off by default (the paper's recipe).
# - ``overlong`` (``rewards/overlong.py``): mask truncated completions from the loss, or DAPO's
#   soft overlong penalty; ``none`` by default.
# - ``stats`` (``train/grpo_stats.py``): think-word statistics against the budget, and the
#   ``grpo_stats.png`` figure.

OVERLONG_MODES = ("none", "mask", "soft_penalty")


@dataclass
class Overlong:
    """``grpo.overlong``."""

    mode: str = "none"
    """``none``, ``mask`` (truncated completions out of the loss) or ``soft_penalty``."""
    buffer: int = 64
    """``soft_penalty``: the last ``buffer`` tokens before the limit are penalised linearly
    (DAPO used 4096 of 20480, a fifth; 64 of the paper's 512 is an eighth)."""
    weight: float = 1.0
    """``soft_penalty``: the weight of the ``overlong`` reward in the total."""

    def check(self, max_length: int) -> None:
        """Raises: ValueError for an unknown mode or a buffer outside [1, max_length]."""
        if self.mode not in OVERLONG_MODES:
            raise ValueError(f"grpo.overlong.mode={self.mode!r}: expected one of "
                             f"{OVERLONG_MODES}")
        if self.mode == "soft_penalty" and not 1 <= int(self.buffer) <= int(max_length):
            raise ValueError(f"grpo.overlong.buffer={self.buffer}: must be in [1, "
                             f"max_completion_length={max_length}]")


@dataclass
class DynamicSampling:
    """``grpo.dynamic_sampling``: drop zero-variance groups and refill (off by default)."""

    enabled: bool = False
    """Off: the paper's recipe, every group trains (zero-variance ones with zero advantage)."""
    max_rounds: int = 3
    """Extra generation rounds per generation batch at most (DAPO's ``max_num_gen_batches``,
    ms-swift's ``max_resample_times``). When they run out the batch is topped up with dropped
    groups masked from the loss."""
    tolerance: float = 1e-6
    """Rewards within this distance count as equal."""

    def check(self) -> None:
        """Raises: ValueError on a negative cap or tolerance."""
        if self.max_rounds < 0:
            raise ValueError(f"grpo.dynamic_sampling.max_rounds={self.max_rounds}: must be >= 0")
        if not (self.tolerance >= 0):
            raise ValueError(f"grpo.dynamic_sampling.tolerance={self.tolerance}: must be >= 0")


@dataclass
class StatsSettings:
    """``grpo.stats``."""

    plot: bool = True
    """Draw ``grpo_stats.png`` in the run folder at the end."""
    think_budget: float | None = None
    """Word budget the think-word statistics compare against; null: the ``length`` reward's
    ``budget`` when the reward set has one."""


@dataclass
class GRPOOptions:
    """The whole ``grpo`` group."""

    dynamic_sampling: DynamicSampling = field(default_factory=DynamicSampling)
    overlong: Overlong = field(default_factory=Overlong)
    stats: StatsSettings = field(default_factory=StatsSettings)


def grpo_options(cfg: DictConfig | None) -> GRPOOptions:
    """``cfg.grpo`` as :class:`GRPOOptions`; the defaults when the config has none.

    Raises:
        ConfigError: an unknown key (by its full name) or a bad value.
    """
    options = nested_section(cfg, "grpo", GRPOOptions)
    if options is None:
        return GRPOOptions()
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
