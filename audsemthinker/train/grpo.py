"""GRPO of the thinker from a config: policy, reference, rewards, data, train, report.

The trainer is :class:`~audsemthinker.train.grpo_audio.AudioGRPOTrainer` (each prompt's audio in
generation and in every log-probability forward), or its fast subclass when a ``fast.grpo``
switch is on (``grpo_fast_trainer.grpo_trainer_class``). This module only wires the config to it:

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

import logging
import os
import time

from omegaconf import DictConfig, OmegaConf

from audsemthinker.train.common import (
    MetricsLogger,
    ProcessorSaver,
    configure_wandb,
    json_safe,
    make_run_dir,
    rank0_generation_blocker,
    resolve_resume,
    save_config,
    seed_everything,
)
from audsemthinker.train.grpo_config import (
    COLUMNS,
    DERIVED,
    FORCED,
    check_grpo_section,
    grpo_args,
    init_model_config,
    load_policy,
)
from audsemthinker.train.grpo_curves import (
    plot_rewards,
    reward_keys,
    reward_summary,
)
from audsemthinker.train.grpo_data import (
    drop_unusable_audio,
    grpo_rows,
    to_dataset,
    traced_reward,
)

__all__ = [
    "COLUMNS",
    "DERIVED",
    "FORCED",
    "build_grpo_trainer",
    "check_grpo_section",
    "drop_unusable_audio",
    "grpo_args",
    "grpo_rows",
    "init_model_config",
    "load_policy",
    "plot_rewards",
    "reward_keys",
    "reward_summary",
    "run_grpo",
    "sampler_for_run",
    "to_dataset",
    "traced_reward",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------
def sampler_for_run(cfg: DictConfig):
    """``cfg.sampler``, with the mismatch measurement off under FSDP: its extra old-policy pass
    runs the audio tower outside the sharded forward (mixed Tensor / DTensor), so a sharded run
    is not measured (logged) rather than stopped."""
    import dataclasses

    from audsemthinker.distributed.sharding import fsdp_requested
    from audsemthinker.schemas import sampler_settings

    settings = sampler_settings(cfg)
    if fsdp_requested() and (settings.measure or settings.correction):
        log.warning("sampler/trainer mismatch: not measured under FSDP (sharded weights)")
        settings = dataclasses.replace(settings, measure=False, correction=False)
    return settings


# Over 60 lines: the config wired to the trainer in the order each part is validated.
def build_grpo_trainer(cfg: DictConfig):
    """Build the :class:`AudioGRPOTrainer` for ``cfg`` (nothing is trained yet).

    Returns:
        ``(trainer, info)``; ``info`` holds ``run_dir``, ``processor``, ``rows`` (per split),
        ``model_config`` (where the policy started), ``reward_names``.

    Raises:
        ConfigError: a bad ``train.grpo`` section. ValueError: a bad reward list.
        FileNotFoundError: no training rows, or a ``grpo_init`` folder without a model.
    """
    from audsemthinker.distributed.sharding import check_sharded, enable_cpu_fsdp
    from audsemthinker.rewards import build_rewards
    from audsemthinker.rewards.overlong import overlong_setup
    from audsemthinker.schemas import fast_settings, grpo_options, think_budget
    from audsemthinker.train.grpo_audio import AudioGRPOTrainer
    from audsemthinker.train.grpo_fast_trainer import grpo_trainer_class
    from audsemthinker.train.judge_log import JudgeStatsCallback
    from audsemthinker.train.sft import (
        TRACE_ENV,
        audio_cap,
        ensure_tiny_base,
        load_split,
        split_file,
        trace_callback,
    )

    ensure_tiny_base(init_model_config(cfg))  # before this run's arguments (see there)
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
# Run
# --------------------------------------------------------------------------------------------
# Over 60 lines: the run's stages in order (held-out, train, save, report), rank-aware.
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
    from audsemthinker.distributed.sharding import heldout_on_all_ranks, save_final
    from audsemthinker.files import write_json_atomic
    from audsemthinker.model.processor import save_processor
    from audsemthinker.train.export import export_merged
    from audsemthinker.train.grpo_stats import plot_grpo_stats
    from audsemthinker.train.sampler_mismatch import mismatch_curves
    from audsemthinker.train.sft import heldout_accuracy

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
