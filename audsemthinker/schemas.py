"""Every config section's schema, in one module that imports neither torch nor the package.

Dataclasses for the sections we own (``model``, ``lora``, ``fast``, ``sampler``, ``eval``) and
the two checks every section goes through: an unknown key fails naming its full dotted path and
the closest valid name (:func:`check_fields`); a value that cannot work raises
:class:`ConfigError`. :mod:`audsemthinker.config` composes these into ``validate``; the modules
that use a section import its dataclass from here, so reading or checking a config never loads
torch and nothing here imports back.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value that cannot work; the message starts with the full key."""


def _suggest(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_fields(section: dict | DictConfig | None, schema: type, where: str,
                 extra: tuple[str, ...] = ()) -> None:
    """Fail if ``section`` has a key that is not a field of dataclass ``schema``.

    Args:
        section: the mapping to check (may be None: nothing to check).
        schema: a dataclass, e.g. ``trl.SFTConfig``.
        where: dotted path of the section, for the message (``train.sft``).
        extra: keys accepted besides the dataclass fields.

    Raises:
        ConfigError: naming ``where.key`` and the closest valid name.
    """
    if section is None:
        return
    names = {f.name for f in dataclasses.fields(schema)} | set(extra)
    for key in section:
        if key not in names:
            raise ConfigError(f"{where}.{key}: not a field of {schema.__name__}"
                              f"{_suggest(str(key), names)}")


DATA_KEYS = ("builder", "out_dir", "strict", "kwargs", "audio", "tokenizer", "report_name")


# model and lora

@dataclass
class ModelConfig:
    """The ``model`` config group (see ``configs/model/*.yaml``)."""

    name_or_path: str = "Qwen/Qwen2.5-Omni-7B"
    dtype: str = "bfloat16"
    attn_implementation: str = "auto"
    trust_remote_code: bool = False
    revision: str | None = None
    tiny: bool = False  # build the tiny random checkpoint at name_or_path if it is missing
    pretrain: str | None = None  # with tiny: pretrain it first (audsemthinker.train.tiny_base)
    gradient_checkpointing: bool = False


@dataclass
class LoraSettings:
    """The ``lora`` config group. ``preset: none`` means full fine-tuning."""

    preset: str = "released"
    target_modules: list[str] = field(default_factory=list)  # regexes; used when preset=custom
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    bias: str = "none"
    freeze_audio_encoder: bool = False
    freeze_vision: bool = True


# fast: switches for the fast training paths (``audsemthinker/fast``)

@dataclass
class SFTFast:
    """SFT switches (``fast.sft``)."""

    chunked_ce: bool = False
    """Loss from the final hidden states, in chunks of label tokens: the [tokens, 152k] float
    logits of the whole batch are never materialised, and prompt/audio positions cost nothing."""
    ce_chunk_tokens: int = 2048
    """Label tokens per cross-entropy chunk (peak extra memory ~ chunk x vocab x 4 bytes)."""
    length_grouped: bool = False
    """Batch rows of similar length together, so less of each batch is padding."""
    compile_layers: bool = False
    """``torch.compile`` each decoder layer (regional, dynamic shapes: compiled in the first
    step, never again for new lengths), fusing the norm / rotary / SwiGLU / LoRA element-wise
    work. Exact to
    float rounding. Off until timed on a GPU (``bench/train_speed.py`` has the row): the first
    step pays the compilation."""
    padding_free: bool = False
    """Train on packed batches: the rows of a batch concatenated into one row without padding
    (``fast/packing.py``), the row boundaries given by ``position_ids``. Exact (same loss and
    gradients) with every attention implementation, but off by default: with sdpa/eager the
    packed row attends through a [T, T] block mask, so attention cost grows with the square of
    the summed row lengths instead of the sum of their squares; it pays with flash-attention 2's
    varlen kernel (a GPU), which skips the padding and the cross-row blocks alike."""


@dataclass
class GRPOFast:
    """GRPO switches (``fast.grpo``)."""

    merged_rollouts: bool = True
    """Generate with the LoRA merged into the base weights (no adapter math per decode step);
    the base weights are restored bit-exactly from a snapshot afterwards."""
    audio_dedup: bool = True
    """Encode each distinct clip once per forward: the G samples of a prompt share it."""
    audio_cache: bool = True
    """With a frozen audio encoder (no trainable parameter in it), reuse a clip's encoding
    across the step's passes (generation, old policy, reference, policy)."""
    decode_loop: bool = True
    """Rollouts sampled by our loop (``fast/decode.py``) instead of ``generate``: each distinct
    prompt + clip prefilled once and its KV cache copied to its G rows; the same sampling
    (transformers' own logits processors, one multinomial draw over all rows per step, so a seed
    gives generate's tokens). Settings the loop does not implement fall back to ``generate``."""
    static_cache: bool = False
    """Decode into a pre-allocated static KV cache (fixed shapes per step). Off: on its own it
    only pays together with ``compile_decode``."""
    compile_decode: bool = False
    """``torch.compile`` the one-token decode step (CUDA graphs on GPU; needs ``static_cache``).
    Off until timed on a GPU (``bench/train_speed.py``): the first call compiles, and each new
    prompt width recompiles."""
    group_batches: bool = True
    """Cut the generation batch into micro-batches with each prompt's G rows kept together
    (prompts in random order) instead of TRL's row-by-row shuffle, so the policy pass can run
    each prompt once (``shared_prompt``). The optimizer step's gradient is the same: every loss
    TRL normalises per sequence, per generation batch or by a constant sums to the same value
    over any split into equal micro-batches. Used only where the policy pass can share (no
    gradient checkpointing, one process) and exact (not ``bnpo``, which normalises per
    micro-batch; one optimizer step per generation batch)."""
    shared_prompt: bool = True
    """Log-prob passes run each distinct prompt (+ clip) once and only the completions on its
    copied KV cache. Used where it is exact and possible: the no-gradient passes (reference,
    old policy) always; the policy pass when it is not DDP-wrapped and gradient checkpointing
    is off (transformers drops the cache under checkpointing)."""


@dataclass
class FastSettings:
    """The whole ``fast`` group."""

    sft: SFTFast = field(default_factory=SFTFast)
    grpo: GRPOFast = field(default_factory=GRPOFast)


def _nested_section(cfg, key: str, schema: type):
    """``cfg.<key>`` as ``schema``, a dataclass whose every field is a dataclass part, each part's
    keys checked by its full name; None when the config has no such section."""
    section = None if cfg is None else cfg.get(key)
    if section is None:
        return None
    data = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) \
        else dict(section)
    check_fields(data, schema, key)
    parts = {}
    for f in dataclasses.fields(schema):
        part = f.default_factory
        check_fields(data.get(f.name) or {}, part, f"{key}.{f.name}")
        parts[f.name] = part(**(data.get(f.name) or {}))
    return schema(**parts)


def fast_settings(cfg: DictConfig | None) -> FastSettings:
    """``cfg.fast`` as :class:`FastSettings`; the defaults when the config has no ``fast``.

    Raises:
        ConfigError: an unknown key (by its full name) or a bad value.
    """
    out = _nested_section(cfg, "fast", FastSettings)
    if out is None:
        return FastSettings()
    grpo = out.grpo
    if grpo.compile_decode and not (grpo.decode_loop and grpo.static_cache):
        raise ConfigError("fast.grpo.compile_decode needs fast.grpo.decode_loop and "
                          "fast.grpo.static_cache (the compiled step decodes into a static cache)")
    if out.sft.ce_chunk_tokens < 1:
        raise ConfigError(f"fast.sft.ce_chunk_tokens={out.sft.ce_chunk_tokens}: must be >= 1")
    return out


# sampler: the sampler/trainer mismatch (``train/sampler_mismatch.py``)

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
    options = _nested_section(cfg, "grpo", GRPOOptions)
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


# eval

@dataclass
class BenchmarkSpec:
    """One entry of ``eval.benchmarks``.

    Attributes:
        scorer: ``mmau`` (official token-set rule), ``muchomusic`` (official letter/text pick)
            or ``accuracy`` (our rows: option match against the row's gold).
        rows: the JSONL of rows to evaluate (the benchmark builders' output, or e.g. the
            synthetic test split).
        metadata: the official metadata file (MMAU JSON / MuchoMusic CSV) whose sha256 every
            result records; the rows file is hashed when unset. The MMAU submission copies its
            items verbatim when it is a JSON file.
        version: benchmark version recorded in results ("original", "v05.15.25", ...).
        split: e.g. "test-mini" or "test" (recorded; the MMAU test split has no answers and
            gets a submission file instead of a score).
        submission: also write the MMAU submission file when answers are present.
        template: prompt template for this benchmark (default ``eval.prompt``).
        limit: evaluate only the first N rows (quick checks).
        judge: MuchoMusic only: also score with an LLM judge, AudioBench's protocol
            (``eval/judge.py``), reported beside the official score. The keys of
            ``audsemthinker.judge.JudgeClient`` (``base_url``, ``model``, ``api_key_env``,
            ``timeout_s``, ``max_retries``, ``backoff_s``, ``concurrency``,
            ``on_unavailable``) plus ``protocol`` (``binary``).
    """

    scorer: str = "mmau"
    rows: str = ""
    metadata: str | None = None
    version: str = "original"
    split: str | None = None
    submission: bool = False
    template: str | None = None
    limit: int | None = None
    judge: dict | None = None


@dataclass
class EvalSettings:
    """The ``eval`` section (see ``configs/eval/paper.yaml`` for every field in use).

    ``prompt_from`` / ``prompt_settings``: where the ``audsem`` prompt's settings come from
    (:mod:`audsemthinker.eval.run_prompt`). ``heldout_limit``: rows of the in-run held-out
    evaluation after SFT / GRPO (None: all).
    """

    benchmarks: dict[str, BenchmarkSpec] = field(default_factory=dict)
    prompt: str = "audsem"
    system_prompt: bool = True
    adapter: str | None = None
    merge_adapter: bool = False
    batch_size: int = 8
    decoding: dict = field(default_factory=dict)
    max_audio_seconds: float | None = None
    device: str = "auto"
    output_dir: str | None = None
    plot: bool = True
    prompt_from: str | None = "auto"
    prompt_settings: dict = field(default_factory=dict)
    heldout_limit: int | None = None
