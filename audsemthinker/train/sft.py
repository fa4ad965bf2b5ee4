"""Supervised fine-tuning of the thinker on TRL's ``SFTTrainer`` with the audio collator.

Stock ``SFTTrainer`` picks its vision-language collator only for ``image(s)`` columns; with audio
messages it would use the text collator, drop the audio and train on the whole sequence
(docs/pitfalls.md). So the trainer gets :class:`~audsemthinker.data.collate.AudioCollator`,
``dataset_kwargs={"skip_prepare_dataset": True}`` and ``remove_unused_columns=False``. The
datasets it sees hold only row indices; the collator looks rows up in a Python list, so rows never
pass through an Arrow table (which rewrites message parts and turns waveforms into lists).

Config (``configs/config.yaml``): ``model`` (loader), ``lora`` (preset; ``none`` = full
fine-tuning), ``data`` (``out_dir`` holds ``train/valid/test.jsonl``), ``train.sft`` (exactly
``trl.SFTConfig`` fields; ``output_dir`` is ``run_dir``), ``eval`` (decoding and batch size of
the held-out accuracy), ``logging`` (wandb), ``resume``.
"""

from __future__ import annotations

import logging
import os
import time

from omegaconf import DictConfig

from audsemthinker.eval.heldout import (  # noqa: F401 (tests patch them here)
    generate_completions,
    heldout_accuracy,
    heldout_record,
)
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
from audsemthinker.train.sft_config import (
    DERIVED,
    FORCED,
    audio_cap,
    check_sft_section,
    sft_args,
)
from audsemthinker.train.sft_data import (
    SKIP_LOG,
    RowLookup,
    index_dataset,
    load_split,
    split_file,
)
from audsemthinker.train.trace import (
    TRACE_ENV,
    local_share,
    trace_callback,
    trace_path,
    trainable_digest,
)

__all__ = [
    "DERIVED",
    "FORCED",
    "RowLookup",
    "SKIP_LOG",
    "TRACE_ENV",
    "audio_cap",
    "build_sft_trainer",
    "check_sft_section",
    "index_dataset",
    "load_model",
    "load_split",
    "local_share",
    "run_sft",
    "sft_args",
    "split_file",
    "trace_callback",
    "trace_path",
    "trainable_digest",
]

log = logging.getLogger(__name__)


def ensure_tiny_base(mcfg) -> None:
    """Build the pretrained tiny base (``model.pretrain``) if it is missing.

    Call it before the run's own training arguments exist: the base's training sets up
    accelerate's process-wide state in float32, and a bf16 run must set it up afterwards.
    """
    if mcfg.tiny and mcfg.pretrain:
        from audsemthinker.train.tiny_base import ensure_pretrained

        ensure_pretrained(mcfg.name_or_path, mcfg.pretrain, train=run_sft)


def load_model(cfg: DictConfig):
    """Thinker + processor + LoRA (or full fine-tuning) as the config says."""
    from audsemthinker.config import to_dataclass
    from audsemthinker.model.loader import ModelConfig, check_token_ids, load_thinker
    from audsemthinker.model.lora import LoraSettings, apply_lora
    from audsemthinker.model.processor import build_processor

    mcfg = to_dataclass(cfg.model, ModelConfig)  # the tiny base is built: build_sft_trainer
    model = load_thinker(mcfg)
    processor = build_processor(mcfg.name_or_path)
    check_token_ids(model, processor.tokenizer)
    model = apply_lora(model, to_dataclass(cfg.lora, LoraSettings))
    return model, processor


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------
# Over 60 lines: the config wired to the trainer in the order each part is validated.
def build_sft_trainer(cfg: DictConfig, audio_override: str | None = None):
    """Build the ``SFTTrainer`` for ``cfg`` (nothing is trained yet).

    Args:
        cfg: the composed root config (validated by the caller).
        audio_override: ``"silence"`` trains on zeros instead of the clips (a control run).

    Returns:
        ``(trainer, info)``; ``info`` holds ``run_dir``, ``processor``, ``collator``,
        ``rows`` (per split), ``trainable`` and ``total`` parameter counts.

    Raises:
        ConfigError: a bad ``train.sft`` section.
        FileNotFoundError: no training rows at ``data.out_dir``.
    """
    from audsemthinker.config import to_dataclass
    from audsemthinker.data.collate import AudioCollator
    from audsemthinker.distributed.sharding import check_sharded, enable_cpu_fsdp
    from audsemthinker.model.loader import ModelConfig
    from audsemthinker.model.lora import count_trainable
    from audsemthinker.schemas import fast_settings
    from audsemthinker.train.sft_fast_trainer import (
        fast_trainer_kwargs,
        prepare_model,
        sft_trainer_class,
        train_collator,
    )
    from audsemthinker.train.skipped_batch import guard_skipped_batches

    fast = fast_settings(cfg).sft  # validated before any work
    ensure_tiny_base(to_dataclass(cfg.model, ModelConfig))
    run_dir = make_run_dir(cfg)
    report_to = configure_wandb(cfg.get("logging"), run_dir)
    args = sft_args(cfg, run_dir, report_to)  # validate before the model is loaded
    enable_cpu_fsdp(args)
    seed_everything(args.seed)
    rows = {s: load_split(cfg, s) for s in ("train", "valid", "test")}
    if not rows["train"]:
        raise FileNotFoundError(f"no training rows at {split_file(cfg, 'train')}; build the "
                                "dataset first (scripts/build_data.py)")
    model, processor = load_model(cfg)
    prepare_model(model, fast)
    collator = AudioCollator(processor, pad_side="right", max_length=args.max_length,
                             audio_override=audio_override, skip_log=run_dir / SKIP_LOG,
                             max_audio_seconds=audio_cap(cfg))
    use_eval = args.eval_strategy != "no" and bool(rows["valid"])
    if args.eval_strategy != "no" and not use_eval:
        log.warning("train.sft.eval_strategy=%s but %s is empty: no eval loss this run",
                    args.eval_strategy, split_file(cfg, "valid"))
        args.eval_strategy = "no"
    n_train = len(rows["train"])
    all_rows = rows["train"] + (rows["valid"] if use_eval else [])
    trainer_class = sft_trainer_class(fast)
    # Packed training batches; eval batches (and held-out generation) stay one row per example.
    packing = {"eval_data_collator": RowLookup(all_rows, collator)} if fast.padding_free else {}
    trainer = trainer_class(
        model=model, args=args, data_collator=RowLookup(all_rows, train_collator(fast, collator)),
        train_dataset=index_dataset(0, n_train),
        eval_dataset=index_dataset(n_train, len(all_rows)) if use_eval else None,
        # The tokenizer, not the processor: Trainer saves processing_class into every
        # checkpoint and ProcessorMixin.save_pretrained refuses our video-less processor;
        # ProcessorSaver writes the remaining processor files.
        processing_class=processor.tokenizer,
        callbacks=[MetricsLogger(run_dir), ProcessorSaver(processor)]
        + ([trace_callback()] if os.environ.get(TRACE_ENV) else []),
        **fast_trainer_kwargs(fast, rows["train"], processor.tokenizer), **packing,
    )
    check_sharded(trainer)
    guard_skipped_batches(trainer)  # a batch whose every row was skipped: zero loss
    trainable, total = count_trainable(model)
    info = dict(run_dir=run_dir, processor=processor, collator=collator, rows=rows,
                trainable=trainable, total=total)
    log.info("SFT: %d train rows, %d eval rows, %s/%s trainable parameters, run_dir=%s",
             n_train, len(all_rows) - n_train, f"{trainable:,}", f"{total:,}", run_dir)
    log.info("SFT fast paths: %s (%s)", fast, trainer_class.__name__)
    return trainer, info


# --------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------
def run_sft(cfg: DictConfig, audio_override: str | None = None) -> dict:
    """Train (resuming when ``cfg.resume`` says so), save, score the held-out split, report.

    Writes ``run_dir/final`` (adapter or full model, plus processor files) and
    ``run_dir/sft_report.json`` (atomically).

    Args:
        cfg: the composed, validated root config.
        audio_override: ``"silence"`` for the silent-audio control run.

    Returns:
        The report dict (``heldout.accuracy`` in percent).
    """
    from audsemthinker.data.collate import read_skip_log
    from audsemthinker.distributed.sharding import heldout_on_all_ranks, save_final
    from audsemthinker.files import write_json_atomic
    from audsemthinker.model.processor import save_processor

    trainer, info = build_sft_trainer(cfg, audio_override=audio_override)
    run_dir = info["run_dir"]
    save_config(cfg, run_dir)
    ckpt = resolve_resume(cfg.get("resume", "auto"), run_dir)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=ckpt)
    train_s = time.perf_counter() - t0
    final = run_dir / "final"
    save_final(trainer, final)
    split = "test" if info["rows"]["test"] else "valid"
    # Sharded weights: every rank generates over its slice of the rows (rank 0 alone would
    # wait forever in the weight gather).
    sharded = rank0_generation_blocker(trainer) is not None
    held = heldout_on_all_ranks(trainer, info["processor"], info["rows"][split], cfg,
                                audio_override=audio_override) if sharded else None
    report = None
    if trainer.is_world_process_zero():
        save_processor(info["processor"], final)
        if not sharded:
            held = heldout_accuracy(trainer.model, info["processor"], info["rows"][split], cfg,
                                    audio_override=audio_override)
        report = json_safe({
            "run_dir": str(run_dir), "final": str(final), "resumed_from": ckpt,
            "global_step": result.global_step, "train_loss": result.training_loss,
            "train_seconds": round(train_s, 2), "train_metrics": result.metrics,
            "lora_preset": str(cfg.lora.preset), "trainable": info["trainable"],
            "total": info["total"], "audio_override": audio_override,
            "collator": dict(info["collator"].stats),  # this process only (see SKIP_LOG)
            "skipped_rows": read_skip_log(run_dir / SKIP_LOG),
            "heldout": {"split": split, **held},
        })
        write_json_atomic(run_dir / "sft_report.json", report)
        log.info("SFT done: held-out %s accuracy %s%% on %d rows -> %s", split,
                 held["accuracy"], held["n"], run_dir / "sft_report.json")
    trainer.accelerator.wait_for_everyone()
    return report or {}
