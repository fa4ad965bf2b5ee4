"""The prompt a model was trained with, rendered again for every benchmark item at evaluation.

A GRPO run trained on "approximately 100 words", or a simple-variant ablation, must be evaluated
with the prompt it learned, not with one fixed benchmark prompt. The settings that shape the
``audsem`` prompt (variant, length budget, whether the instruction is prepended, and which
instruction wording) are read from the trained run's saved ``config.yaml`` (its
``data.kwargs``), which every SFT / GRPO run writes to its run folder; the model evaluated is
``eval.adapter`` (``<run>/final``) or ``model.name_or_path`` (``<run>/merged``), so the config is
found beside it or one folder up. Keys set in ``eval.prompt_settings`` win over the run's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from audsemthinker import format as fmt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptSettings:
    """What the ``audsem`` template renders from an item (see :func:`format.user_prompt`).

    Attributes:
        variant: ``semantic`` or ``simple``.
        length_budget: the "approximately N words" of the instruction (None: not asked).
        prepend_instruction: put the instruction before the question.
        instruction: the wording, ``audsem`` (ours) or ``release`` (the public release's).
        source: where the settings came from (a run's ``config.yaml``, or ``defaults``).
    """

    variant: str = "semantic"
    length_budget: int | None = None
    prepend_instruction: bool = True
    instruction: str = "audsem"
    source: str = "defaults"

    def record(self) -> dict:
        return asdict(self)


SETTING_KEYS = tuple(f.name for f in fields(PromptSettings) if f.name != "source")


def find_run_config(*model_paths: str | None) -> Path | None:
    """The ``config.yaml`` of the run that produced one of ``model_paths``, or None.

    Each path may be a run folder, or a folder inside one (``final``, ``merged``, a checkpoint).
    """
    for p in model_paths:
        if not p:
            continue
        folder = Path(str(p))
        for cand in (folder / "config.yaml", folder.parent / "config.yaml",
                     folder if folder.name.endswith((".yaml", ".yml")) else None):
            if cand is not None and cand.is_file():
                return cand
    return None


def settings_from_config(path: str | Path) -> dict:
    """The prompt settings a saved run config trained with (its ``data.kwargs``)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(str(path))
    kwargs = OmegaConf.select(cfg, "data.kwargs", default=None) or {}
    return {k: kwargs[k] for k in SETTING_KEYS if k in kwargs}


def resolve_prompt_settings(prompt_from: str | None, explicit: Mapping | None,
                            model_paths: tuple[str | None, ...] = ()) -> PromptSettings:
    """The settings every ``audsem`` prompt of this evaluation is rendered with.

    Args:
        prompt_from: ``auto`` (the run config found beside ``model_paths``; defaults when there
            is none, e.g. a released checkpoint), a ``config.yaml`` or run folder, or None
            (defaults).
        explicit: ``eval.prompt_settings``; keys that are set (not None) win. A
            ``length_budget`` of 0 means "no budget" (None means "not set here").
        model_paths: the adapter and the model folder evaluated.

    Raises:
        FileNotFoundError: ``prompt_from`` names a path without a ``config.yaml``.
        ValueError: an unknown variant or instruction, or an unknown key in ``explicit``.
    """
    values: dict = {}
    source = "defaults"
    if prompt_from and str(prompt_from) != "auto":
        path = find_run_config(str(prompt_from))
        if path is None:
            raise FileNotFoundError(f"eval.prompt_from: no config.yaml at or in {prompt_from}")
    else:
        path = find_run_config(*model_paths) if prompt_from == "auto" else None
    if path is not None:
        values.update(settings_from_config(path))
        source = str(path)
    unknown = sorted(set(explicit or {}) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"eval.prompt_settings: unknown keys {unknown}; known: {SETTING_KEYS}")
    set_here = {k: v for k, v in (explicit or {}).items() if v is not None}
    if set_here:
        values.update(set_here)
        source = f"{source} + eval.prompt_settings" if path is not None else "eval.prompt_settings"
    if values.get("length_budget") in (0, "0"):
        values["length_budget"] = None
    settings = PromptSettings(**values, source=source)
    fmt.check_variant(settings.variant)
    if settings.instruction not in fmt.INSTRUCTIONS:
        raise ValueError(f"instruction {settings.instruction!r} is not one of {fmt.INSTRUCTIONS}")
    log.info("eval prompt settings (%s): %s", source,
             {k: getattr(settings, k) for k in SETTING_KEYS})
    return settings


def render_audsem(row: Mapping, settings: PromptSettings) -> str:
    """The ``audsem`` user text of a benchmark item under ``settings``."""
    options = list(row.get("options") or row.get("choices") or [])
    question = str(row["question"])  # as the builders pass it (MuchoMusic's stripped)
    if row.get("benchmark") == "muchomusic":
        question = question.strip()
    return fmt.user_prompt(question, options or None,
                           variant=settings.variant,
                           prepend_instruction=bool(settings.prepend_instruction),
                           length_budget=settings.length_budget,
                           instruction=settings.instruction)
