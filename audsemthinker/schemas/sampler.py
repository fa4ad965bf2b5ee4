"""The ``sampler`` section: measuring and correcting the sampler/trainer mismatch."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import OmegaConf

from audsemthinker.schemas.checks import ConfigError, check_fields

SAMPLER_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
"""TRL 1.16's ``vllm_importance_sampling_mode`` values."""


@dataclass
class SamplerSettings:
    """The ``sampler`` config section."""

    measure: bool = True
    """Record the sampler's per-token log-probs and log the mismatch each generation batch
    (costs one no-gradient old-policy pass where TRL would not run one anyway)."""
    threshold: float = 0.1
    """``sampling/mismatch/share_above_threshold`` counts tokens with |log-prob diff| above
    this (0.1 nats: a probability ratio outside about [0.90, 1.11])."""
    correction: bool = False
    """Multiply each token's loss by the truncated importance ratio (needs ``measure``)."""
    mode: str = "token_truncate"
    """How the ratio is formed and capped (TRL's ``vllm_importance_sampling_mode``)."""
    cap: float = 2.0
    """Upper bound of the ratio (truncate modes) or of the kept ratios (mask modes)."""

    def __post_init__(self):
        if self.mode not in SAMPLER_MODES:
            raise ConfigError(f"sampler.mode={self.mode!r}: must be one of {list(SAMPLER_MODES)}")
        if not self.cap > 0:
            raise ConfigError(f"sampler.cap={self.cap}: must be > 0")
        if not self.threshold >= 0:
            raise ConfigError(f"sampler.threshold={self.threshold}: must be >= 0")
        if self.correction and not self.measure:
            raise ConfigError("sampler.correction needs sampler.measure (the ratio is built "
                              "from the recorded sampler log-probs)")


def sampler_settings(cfg) -> SamplerSettings:
    """``cfg.sampler`` as :class:`SamplerSettings`; the defaults when the config has none.

    Raises:
        ConfigError: an unknown key (by its full name) or a bad value.
    """
    section = None if cfg is None else cfg.get("sampler")
    if section is None:
        return SamplerSettings()
    data = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) \
        else dict(section)
    check_fields(data, SamplerSettings, "sampler")
    return SamplerSettings(**data)
