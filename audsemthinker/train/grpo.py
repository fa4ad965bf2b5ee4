"""GRPO of the thinker from a config: policy, reference, rewards, data, train, report.

The trainer is :class:`~audsemthinker.train.grpo_audio.AudioGRPOTrainer` (each prompt's audio in
generation and in every log-probability forward). This module only wires the config to it:

- ``grpo_init`` (root key): the merged SFT export (thinker folder, ``scripts/export.py``) the
  policy starts from; null means ``cfg.model``. LoRA (``lora.preset``) adds a fresh adapter on
  it and the reference is that folder with the adapter disabled; ``lora=none`` trains every
  weight and, with ``beta > 0``, loads the reference from the same folder through
  ``load_thinker`` (full Omni or thinker-only layout).
- ``train.grpo``: exactly ``trl.GRPOConfig`` fields; ``output_dir`` is ``run_dir``,
  ``report_to`` follows ``logging.wandb``, ``reward_weights`` come from ``reward``.
- ``reward.rewards``: the list ``audsemthinker.rewards.build_rewards`` reads; each reward is
  logged under its own name (``rewards/<name>/mean``).
- ``data.out_dir``: ``train.jsonl`` (GRPO rows with ``prompt``, or SFT rows whose assistant turn
  is dropped) and ``test``/``valid`` for the held-out accuracy before and after.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from audsemthinker.train.common import (
    MetricsLogger,
    ProcessorSaver,
    configure_wandb,
    json_safe,
    make_run_dir,
    rank0_generation_blocker,
    read_metrics,
    resolve_resume,
    save_config,
    seed_everything,
)

log = logging.getLogger(__name__)

FORCED = {"remove_unused_columns": False}
"""GRPOConfig values the reward columns need; a config that sets them otherwise is an error."""
DERIVED = {"output_dir": "run_dir", "report_to": "logging.wandb", "reward_weights": "reward"}
"""GRPOConfig fields that come from elsewhere, and where from."""
COLUMNS = ("id", "audio", "task", "variant", "question", "answer", "choices", "question_type",
           "label", "source")
"""Row columns handed to the rewards (besides ``prompt``) when the rows have them."""


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def check_grpo_section(cfg: DictConfig) -> dict:
    """Check ``cfg.train.grpo`` and return it as a plain dict (entry points call it first).

    Raises:
        ConfigError: a key that is not a GRPOConfig field, one this trainer sets itself, or a
            missing ``loss_type`` (TRL's default "dapo" is not the paper's "grpo": say which).
    """
    from trl import GRPOConfig

    from audsemthinker.config import ConfigError, check_trainer_section

    section = OmegaConf.to_container(cfg.train.grpo, resolve=True) or {}
    check_trainer_section(section, GRPOConfig, "train.grpo", DERIVED, FORCED,
                          "the answer/choices columns never reach the rewards")
    if "loss_type" not in section:
        raise ConfigError("train.grpo.loss_type: set it explicitly (the paper: grpo; TRL's "
                          "default is dapo)")
    return section


def grpo_args(cfg: DictConfig, run_dir: Path, report_to: list[str], weights: list[float]):
    """``trl.GRPOConfig`` from ``cfg.train.grpo`` plus run folder, wandb and reward weights.

    Gradient checkpointing follows ``model.gradient_checkpointing`` unless the section sets
    ``activation_checkpointing`` (or its deprecated alias ``gradient_checkpointing``).
    """
    from trl import GRPOConfig

    section = check_grpo_section(cfg)
    if "activation_checkpointing" not in section and "gradient_checkpointing" not in section:
        section["activation_checkpointing"] = bool(cfg.model.get("gradient_checkpointing", False))
    return GRPOConfig(**section, **FORCED, output_dir=str(run_dir), report_to=report_to,
                      reward_weights=list(weights))


def init_model_config(cfg: DictConfig):
    """The ``ModelConfig`` the policy starts from: ``grpo_init`` if set, else ``cfg.model``."""
    from audsemthinker.config import to_dataclass
    from audsemthinker.model.loader import ModelConfig

    mcfg = to_dataclass(cfg.model, ModelConfig)
    init = cfg.get("grpo_init")
    if init:
        if not (Path(str(init)) / "config.json").exists():
            raise FileNotFoundError(f"grpo_init={init}: no config.json there; point it at a "
                                    "merged SFT export (scripts/export.py)")
        mcfg = dataclasses.replace(mcfg, name_or_path=str(init), tiny=False)
    return mcfg


def load_policy(cfg: DictConfig, beta: float):
    """Policy (LoRA or full), reference (full fine-tuning with beta > 0 only) and processor.

    Returns:
        ``(model, ref_model_or_None, processor, model_config)``.
    """
    from audsemthinker.config import to_dataclass
    from audsemthinker.model.loader import check_token_ids, load_thinker
    from audsemthinker.model.lora import LoraSettings, apply_lora
    from audsemthinker.model.processor import build_processor

    mcfg = init_model_config(cfg)
    if mcfg.tiny and mcfg.pretrain:
        from audsemthinker.train.sft import run_sft
        from audsemthinker.train.tiny_base import ensure_pretrained

        ensure_pretrained(mcfg.name_or_path, mcfg.pretrain, train=run_sft)
    model = load_thinker(mcfg)
    tok_dir = mcfg.name_or_path
    if cfg.get("grpo_init") and not (Path(tok_dir) / "tokenizer_config.json").exists():
        log.warning("%s has no tokenizer files; using %s's", tok_dir, cfg.model.name_or_path)
        tok_dir = str(cfg.model.name_or_path)
    processor = build_processor(tok_dir)
    check_token_ids(model, processor.tokenizer)
    lora = to_dataclass(cfg.lora, LoraSettings)
    ref = load_thinker(mcfg) if lora.preset == "none" and beta != 0.0 else None
    return apply_lora(model, lora), ref, processor, mcfg


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def grpo_rows(rows: Sequence[Mapping]) -> list[dict]:
    """Rows as GRPO needs them: ``prompt`` (system + user, audio part) plus the reward columns.

    SFT rows work too: their trailing assistant turn is dropped. ``choices`` stays None on
    rows that are not multiple choice.

    Raises:
        ValueError: a row with neither ``prompt`` nor ``messages``, or without an answer.
    """
    from audsemthinker.data.collate import clean_messages, prompt_of

    keep = [c for c in COLUMNS if any(c in r for r in rows)]
    out = []
    for r in rows:
        if r.get("answer") is None:
            raise ValueError(f"row {r.get('id')!r} has no 'answer': the rewards need one")
        out.append({**{c: r.get(c) for c in keep}, "prompt": clean_messages(prompt_of(r))})
    return out


def drop_unusable_audio(rows: Sequence[Mapping],
                        max_seconds: float | None = None) -> tuple[list[Mapping], dict]:
    """Rows whose every clip loads as training will load it, and the skips.

    A GRPO prompt whose clip cannot load would stop the run mid-step (its group cannot be
    dropped from a generation batch), so each distinct clip is decoded in full before training
    with :func:`audsemthinker.audio.load_audio` and the trainer's cap: a header check alone
    passes a file cut mid-stream, NaN/inf samples, silence and near-silence. Clips are read on
    a few threads (decoding releases the GIL); a clip costs at most ``max_seconds`` of decoding.

    Returns:
        ``(kept_rows, {"rows": n skipped, "by_reason": {...}, "ids": first 20 ids})``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from audsemthinker.audio import AudioError, load_audio
    from audsemthinker.data.collate import audio_paths, prompt_of

    def problem(path: str) -> str | None:
        try:
            load_audio(path, max_seconds=max_seconds)
        except AudioError as e:
            return e.reason
        return None

    paths = [audio_paths(r, prompt_of(r)) for r in rows]
    unique = list(dict.fromkeys(p for ps in paths for p in ps))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        verdict = dict(zip(unique, pool.map(problem, unique)))
    kept, by_reason, ids = [], Counter(), []
    for r, ps in zip(rows, paths):
        reason = next(filter(None, (verdict[p] for p in ps)), None)
        if reason is None:
            kept.append(r)
            continue
        by_reason[f"skipped:audio:{reason}"] += 1
        ids.append(r.get("id"))
    if ids:
        log.warning("GRPO: %d training rows skipped before training, their audio is unusable "
                    "(%s), e.g. %s", len(ids), dict(by_reason), ids[:5])
    return kept, {"rows": len(ids), "by_reason": dict(by_reason), "ids": ids[:20]}


def to_dataset(rows: Sequence[Mapping]):
    from datasets import Dataset

    return Dataset.from_list(list(rows))


def traced_reward(fn):
    """``fn`` that also appends what it scored to ``<TRACE_ENV>.rank<N>.rewards`` (JSON lines).

    The multi-process debug hook (``audsemthinker.train.sft.TRACE_ENV``): a reward function
    runs on the rank that generated the completions, before TRL gathers the rewards, so one
    line per call (``step`` = global step when scored, ``reward`` name, row ``ids`` and
    ``values`` per completion) shows which prompts each rank generated for and what they scored.
    """
    from audsemthinker.train.sft import trace_path

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = fn(*args, **kwargs)
        state = kwargs.get("trainer_state")
        record = {"step": getattr(state, "global_step", None), "reward": fn.__name__,
                  "ids": list(kwargs.get("id") or []),
                  "values": [None if v is None else float(v) for v in values]}
        with trace_path("rewards").open("a") as f:
            f.write(json.dumps(record) + "\n")
        return values

    return wrapper


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------
def sampler_for_run(cfg: DictConfig):
    """``cfg.sampler``, with the mismatch measurement off under FSDP: its extra old-policy pass
    runs the audio tower outside the sharded forward (mixed Tensor / DTensor), so a sharded run
    is not measured (logged) rather than stopped."""
    import dataclasses

    from audsemthinker.schemas import sampler_settings
    from audsemthinker.train.sharding import fsdp_requested

    settings = sampler_settings(cfg)
    if fsdp_requested() and (settings.measure or settings.correction):
        log.warning("sampler/trainer mismatch: not measured under FSDP (sharded weights)")
        settings = dataclasses.replace(settings, measure=False, correction=False)
    return settings


def build_grpo_trainer(cfg: DictConfig):
    """Build the :class:`AudioGRPOTrainer` for ``cfg`` (nothing is trained yet).

    Returns:
        ``(trainer, info)``; ``info`` holds ``run_dir``, ``processor``, ``rows`` (per split),
        ``model_config`` (where the policy started), ``reward_names``.

    Raises:
        ConfigError: a bad ``train.grpo`` section. ValueError: a bad reward list.
        FileNotFoundError: no training rows, or a ``grpo_init`` folder without a model.
    """
    from audsemthinker.rewards import build_rewards
    from audsemthinker.rewards.overlong import overlong_setup
    from audsemthinker.schemas import fast_settings, grpo_options, think_budget
    from audsemthinker.train.grpo_audio import AudioGRPOTrainer
    from audsemthinker.train.grpo_fast_trainer import grpo_trainer_class
    from audsemthinker.train.judge_log import JudgeStatsCallback
    from audsemthinker.train.sft import (
        TRACE_ENV,
        audio_cap,
        load_split,
        split_file,
        trace_callback,
    )
    from audsemthinker.train.sharding import check_sharded, enable_cpu_fsdp

    run_dir = make_run_dir(cfg)
    report_to = configure_wandb(cfg.get("logging"), run_dir)
    reward_spec = OmegaConf.to_container(cfg.reward, resolve=True)["rewards"]
    funcs, weights = build_rewards(reward_spec)
    options = grpo_options(cfg)
    options.stats.think_budget = think_budget(options, reward_spec)
    trace = bool(os.environ.get(TRACE_ENV))  # multi-process debug hook (tests)
    if trace:
        funcs = [traced_reward(f) for f in funcs]
    args = grpo_args(cfg, run_dir, report_to, weights)  # validated before the model loads
    funcs, args.reward_weights, mask = overlong_setup(options.overlong,
                                                      args.max_completion_length, funcs, weights)
    args.mask_truncated_completions = args.mask_truncated_completions or mask
    enable_cpu_fsdp(args)
    seed_everything(args.seed)
    rows = {s: load_split(cfg, s) for s in ("train", "valid", "test")}
    if not rows["train"]:
        raise FileNotFoundError(f"no training rows at {split_file(cfg, 'train')}; build the "
                                "dataset first (scripts/build_data.py data.kwargs.kind=grpo)")
    rows["train"], skipped = drop_unusable_audio(rows["train"], audio_cap(cfg))
    if not rows["train"]:
        raise FileNotFoundError(f"no training row at {split_file(cfg, 'train')} has usable "
                                f"audio: {skipped}")
    model, ref, processor, mcfg = load_policy(cfg, args.beta)
    fast = fast_settings(cfg).grpo
    trainer_class = grpo_trainer_class(fast)
    trainer = trainer_class(
        model=model, reward_funcs=funcs, args=args, ref_model=ref,
        train_dataset=to_dataset(grpo_rows(rows["train"])), processing_class=processor,
        callbacks=[JudgeStatsCallback(funcs), MetricsLogger(run_dir), ProcessorSaver(processor)]
        + ([trace_callback()] if trace else []),
        max_audio_seconds=audio_cap(cfg),
        sampler=sampler_for_run(cfg), options=options,
        **({} if trainer_class is AudioGRPOTrainer else {"fast": fast}))
    check_sharded(trainer)
    info = dict(run_dir=run_dir, processor=processor, rows=rows, model_config=mcfg,
                reward_names=[f.__name__ for f in funcs], skipped_rows=skipped)
    log.info("GRPO: %d train rows from %s, rewards %s (weights %s), lora=%s, beta=%s, run_dir=%s",
             len(rows["train"]), mcfg.name_or_path, info["reward_names"], weights,
             cfg.lora.preset, args.beta, run_dir)
    return trainer, info


# --------------------------------------------------------------------------------------------
# Reward curves
# --------------------------------------------------------------------------------------------
def reward_keys(records: Sequence[Mapping]) -> list[str]:
    """``reward`` (the weighted total) then every ``rewards/<name>/mean`` in the log."""
    keys = sorted({k for r in records for k in r if k.startswith("rewards/") and
                   k.endswith("/mean")})
    return (["reward"] if any("reward" in r for r in records) else []) + keys


def reward_summary(metrics_path: str | Path) -> dict:
    """Per reward: points logged, first/last value, and the mean of the first and last quarter."""
    records = read_metrics(metrics_path)
    out = {}
    for key in reward_keys(records):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if not pts:
            continue
        vals = [v for _, v in pts]
        q = max(1, len(vals) // 4)
        name = "total" if key == "reward" else key.split("/")[1]
        out[name] = {"points": len(vals), "first": vals[0], "last": vals[-1],
                     "first_quarter_mean": sum(vals[:q]) / q,
                     "last_quarter_mean": sum(vals[-q:]) / q, "steps": [s for s, _ in pts],
                     "values": vals}
    return out


def plot_rewards(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """One panel per reward (total first) against the step; None when nothing was logged."""
    records = read_metrics(metrics_path)
    keys = [k for k in reward_keys(records) if any(r.get(k) is not None for r in records)]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        ax.plot(*zip(*pts), marker=".")
        ax.set_title("total reward" if key == "reward" else key.split("/")[1])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)


# --------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------
def run_grpo(cfg: DictConfig) -> dict:
    """Train (resuming when ``cfg.resume`` says so), save, score held-out rows, report.

    Writes ``run_dir/final`` (adapter or model + processor files), ``run_dir/merged`` (a
    standalone thinker folder: the adapter merged into ``grpo_init``), ``metrics.jsonl``,
    ``rewards.png`` (one panel per reward) and ``grpo_report.json`` (atomically).

    Returns:
        The report dict: ``heldout`` (split, accuracy before/after in percent), ``rewards``
        (curve summaries per reward), ``sampler_mismatch`` (``sampling/mismatch/*`` per logged
        step), ``global_step``, ``merged``.
    """
    from audsemthinker.eval.report import write_json_atomic
    from audsemthinker.model.processor import save_processor
    from audsemthinker.train.export import export_merged
    from audsemthinker.train.grpo_stats import plot_grpo_stats
    from audsemthinker.train.sampler_mismatch import mismatch_curves
    from audsemthinker.train.sft import heldout_accuracy
    from audsemthinker.train.sharding import heldout_on_all_ranks, save_final

    trainer, info = build_grpo_trainer(cfg)
    run_dir, processor = info["run_dir"], info["processor"]
    save_config(cfg, run_dir)
    split = "test" if info["rows"]["test"] else "valid"
    held_rows = info["rows"][split]
    ckpt = resolve_resume(cfg.get("resume", "auto"), run_dir)
    # Sharded weights: every rank generates over its slice of the rows (rank 0 alone would
    # wait forever in the weight gather). A fresh LoRA adapter starts as a no-op, so "before"
    # is the init model's accuracy.
    sharded = rank0_generation_blocker(trainer) is not None

    def held_out():
        if not held_rows:
            return None
        if sharded:
            return heldout_on_all_ranks(trainer, processor, held_rows, cfg)
        if trainer.is_world_process_zero():
            return heldout_accuracy(trainer.model, processor, held_rows, cfg)
        return None

    before = held_out()
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=ckpt)
    train_s = time.perf_counter() - t0
    final = run_dir / "final"
    save_final(trainer, final)
    after = held_out()
    report = None
    if trainer.is_world_process_zero():
        save_processor(processor, final)
        merged = export_merged(final, info["model_config"], run_dir / "merged")
        png = plot_rewards(run_dir / "metrics.jsonl", run_dir / "rewards.png")
        stats_png = None if not trainer.options.stats.plot else plot_grpo_stats(
            run_dir / "metrics.jsonl", run_dir / "grpo_stats.png",
            trainer.options.stats.think_budget)
        report = json_safe({
            "run_dir": str(run_dir), "final": str(final), "merged": str(merged),
            "init": info["model_config"].name_or_path, "resumed_from": ckpt,
            "global_step": result.global_step, "train_loss": result.training_loss,
            "train_seconds": round(train_s, 2), "train_metrics": result.metrics,
            "lora_preset": str(cfg.lora.preset), "loss_type": trainer.args.loss_type,
            "beta": trainer.beta, "num_generations": trainer.num_generations,
            "reward_names": info["reward_names"], "skipped_rows": info["skipped_rows"],
            "reward_weights": trainer.reward_weights.tolist(),
            "rewards": reward_summary(run_dir / "metrics.jsonl"),
            "sampler_mismatch": mismatch_curves(run_dir / "metrics.jsonl"),
            "rewards_plot": str(png) if png else None,
            "stats_plot": str(stats_png) if stats_png else None,
            "dynamic_sampling": trainer.dynamic_sampler.totals if trainer.dynamic_sampler
            else None,
            "heldout": {"split": split, "n": len(held_rows),
                        "before": before, "after": after,
                        "accuracy_before": (before or {}).get("accuracy"),
                        "accuracy_after": (after or {}).get("accuracy")},
        })
        write_json_atomic(run_dir / "grpo_report.json", report)
        log.info("GRPO done: held-out %s accuracy %s%% -> %s%%; report %s", split,
                 report["heldout"]["accuracy_before"], report["heldout"]["accuracy_after"],
                 run_dir / "grpo_report.json")
    trainer.accelerator.wait_for_everyone()
    return report or {}
