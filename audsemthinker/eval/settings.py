"""The ``eval`` config section as dataclasses, checked at start-up, and the benchmark rows.

``configs/eval/*.yaml`` compose into one section; a misspelt key (``eval.decodng``,
``eval.benchmarks.mmau_test_mini.scorr``) fails before any model is loaded, naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from audsemthinker.eval.generate import TEMPLATES, decoding_from
from audsemthinker.eval.run_prompt import SETTING_KEYS
from audsemthinker.schemas import BenchmarkSpec, ConfigError, EvalSettings, check_fields

SCORERS = ("mmau", "muchomusic", "accuracy")


def eval_settings(section: DictConfig | Mapping) -> EvalSettings:
    """Check and convert the ``eval`` config section.

    Raises:
        ConfigError: an unknown key (with its full name), an unknown scorer or template, a
            benchmark without rows, a non-positive batch size, or bad decoding settings.
    """
    data = (OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig)
            else dict(section))
    check_fields(data, EvalSettings, "eval")
    benches = {}
    for name, spec in (data.pop("benchmarks", None) or {}).items():
        where = f"eval.benchmarks.{name}"
        check_fields(spec, BenchmarkSpec, where)
        b = BenchmarkSpec(**spec)
        if b.scorer not in SCORERS:
            raise ConfigError(f"{where}.scorer: {b.scorer!r} is not one of {SCORERS}")
        if not b.rows:
            raise ConfigError(f"{where}.rows: a rows JSONL path is required")
        if b.template is not None and b.template not in TEMPLATES:
            raise ConfigError(f"{where}.template: {b.template!r} is not one of {TEMPLATES}")
        if b.judge is not None:
            _check_judge(b, where)
        benches[name] = b
    s = EvalSettings(benchmarks=benches, **data)
    if not benches:
        raise ConfigError("eval.benchmarks: nothing to evaluate")
    if s.prompt not in TEMPLATES:
        raise ConfigError(f"eval.prompt: {s.prompt!r} is not one of {TEMPLATES}")
    s.prompt_settings = dict(s.prompt_settings or {})
    unknown = sorted(set(s.prompt_settings) - set(SETTING_KEYS))
    if unknown:
        raise ConfigError(f"eval.prompt_settings: unknown keys {unknown}; known: "
                          f"{list(SETTING_KEYS)}")
    if s.heldout_limit is not None and int(s.heldout_limit) < 1:
        raise ConfigError(f"eval.heldout_limit: must be >= 1 or null, got {s.heldout_limit}")
    if int(s.batch_size) < 1:
        raise ConfigError(f"eval.batch_size: must be >= 1, got {s.batch_size}")
    try:
        decoding_from(s.decoding)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"eval.decoding: {e}") from None
    return s


_JUDGE_KEYS = ("base_url", "model", "api_key_env", "timeout_s", "max_retries", "backoff_s",
               "concurrency", "on_unavailable", "max_tokens", "protocol")


def _check_judge(b: BenchmarkSpec, where: str) -> None:
    if b.scorer != "muchomusic":
        raise ConfigError(f"{where}.judge: an LLM judge is supported for the muchomusic scorer "
                          f"only, not {b.scorer!r}")
    if not isinstance(b.judge, Mapping):
        raise ConfigError(f"{where}.judge: expected a mapping of judge settings")
    unknown = sorted(set(b.judge) - set(_JUDGE_KEYS))
    if unknown:
        raise ConfigError(f"{where}.judge: unknown keys {unknown}; known: {list(_JUDGE_KEYS)}")
    if not b.judge.get("base_url") or not b.judge.get("model"):
        raise ConfigError(f"{where}.judge: base_url and model are required")


def ensure_rows(spec: BenchmarkSpec, name: str) -> Path:
    """The rows file of a benchmark, which must have been built.

    Raises:
        FileNotFoundError: naming the file and the build command.
    """
    path = Path(spec.rows)
    if not path.is_file():
        raise FileNotFoundError(
            f"eval.benchmarks.{name}.rows: {path} does not exist; build the rows first, e.g. "
            "`python scripts/build_data.py data=mmau_test_mini` (configs/data/ has one config "
            "per benchmark), or point the rows key at the built JSONL")
    return path


def load_rows(path: str | Path, limit: int | None = None) -> list[dict]:
    """Read a rows JSONL (``data.examples.load_examples``: audio paths resolved against the
    file's folder), keep the first ``limit`` rows, and check that ids are unique.

    Raises:
        ValueError: a damaged line, a row without ``id``, or a duplicate id (predictions are
            keyed by id, so duplicates would silently merge).
    """
    from audsemthinker.data.examples import load_examples

    rows, seen = [], set()
    for n, row in enumerate(load_examples(path), 1):
        if row.get("id") in (None, ""):
            raise ValueError(f"{path}: row {n} has no 'id'")
        row["id"] = str(row["id"])
        if row["id"] in seen:
            raise ValueError(f"{path}: row {n} repeats id {row['id']!r}")
        seen.add(row["id"])
        rows.append(row)
    return rows if limit is None else rows[:limit]
