"""Every config section's schema, in one package that imports neither torch nor the rest of ours.

Dataclasses for the sections we own (``model``, ``lora``, ``fast``, ``sampler``, ``eval``) and
the two checks every section goes through: an unknown key fails naming its full dotted path and
the closest valid name (:func:`check_fields`); a value that cannot work raises
:class:`ConfigError`. :mod:`audsemthinker.config` composes these into ``validate``; the modules
that use a section import its dataclass from here, so reading or checking a config never loads
torch and nothing here imports back.
"""

from audsemthinker.schemas.checks import (
    ConfigError,
    check_fields,
    nested_section,
)
from audsemthinker.schemas.eval import (
    BenchmarkSpec,
    EvalSettings,
)
from audsemthinker.schemas.fast import (
    FastSettings,
    GRPOFast,
    SFTFast,
    fast_settings,
)
from audsemthinker.schemas.grpo import (
    OVERLONG_MODES,
    DynamicSampling,
    GRPOOptions,
    Overlong,
    StatsSettings,
    grpo_options,
    think_budget,
)
from audsemthinker.schemas.model import (
    DATA_KEYS,
    LoraSettings,
    ModelConfig,
)
from audsemthinker.schemas.sampler import (
    SAMPLER_MODES,
    SamplerSettings,
    sampler_settings,
)

__all__ = [
    "BenchmarkSpec",
    "ConfigError",
    "DATA_KEYS",
    "DynamicSampling",
    "EvalSettings",
    "FastSettings",
    "GRPOFast",
    "GRPOOptions",
    "LoraSettings",
    "ModelConfig",
    "OVERLONG_MODES",
    "Overlong",
    "SAMPLER_MODES",
    "SFTFast",
    "SamplerSettings",
    "StatsSettings",
    "check_fields",
    "fast_settings",
    "grpo_options",
    "nested_section",
    "sampler_settings",
    "think_budget",
]
