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

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

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

log = logging.getLogger(__name__)

TRACE_ENV = "AUDSEM_LOG_BATCH_IDS"
"""Debug hook for multi-process checks: when set to a path, each rank appends the row indices
it collates to ``<path>.rank<N>`` and a hash of its trainable weights to
``<path>.rank<N>.weights_begin`` at train start (after a resumed checkpoint is loaded) and to
``<path>.rank<N>.weights`` at train end (and the share of trainable elements the rank holds to
``<path>.rank<N>.share``); GRPO also appends each reward call to
``<path>.rank<N>.rewards`` (``audsemthinker.train.grpo.traced_reward``)."""

def trace_path(suffix: str = "") -> Path:
    """This rank's file of the ``TRACE_ENV`` debug hook: ``<path>.rank<N>[.<suffix>]``."""
    return Path(f"{os.environ[TRACE_ENV]}.rank{os.environ.get('RANK', '0')}"
                + (f".{suffix}" if suffix else ""))


SKIP_LOG = "skipped_rows.jsonl"
"""Rows the training collator skipped (bad audio, over max_length), one JSON line each, from
every DataLoader worker and rank; the report's ``skipped_rows`` totals it."""

FORCED = {"remove_unused_columns": False}
"""SFTConfig values the audio path needs; a config that sets them otherwise is an error."""
DERIVED = {"output_dir": "run_dir", "report_to": "logging.wandb"}
"""SFTConfig fields that come from elsewhere, and where from."""


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------
def check_sft_section(cfg: DictConfig) -> dict:
    """Check ``cfg.train.sft`` (keys are ``trl.SFTConfig`` fields; none this trainer sets) and
    return it as a plain dict. Entry points call it at start-up, before any data or model work.

    Raises:
        ConfigError: a key that is not an SFTConfig field, or one this trainer sets itself.
    """
    from trl import SFTConfig

    from audsemthinker.config import ConfigError, check_trainer_section

    section = OmegaConf.to_container(cfg.train.sft, resolve=True) or {}
    check_trainer_section(section, SFTConfig, "train.sft", DERIVED, FORCED,
                          "the audio columns are dropped before the collator sees them")
    if section.get("padding_free"):
        raise ConfigError("train.sft.padding_free is TRL's switch for its own text collator, "
                          "which this audio path does not use; set fast.sft.padding_free=true")
    if (section.get("dataset_kwargs") or {}).get("skip_prepare_dataset") is False:
        raise ConfigError("train.sft.dataset_kwargs.skip_prepare_dataset must stay true: TRL's "
                          "preparation would tokenise the text without the audio")
    return section


def sft_args(cfg: DictConfig, run_dir: Path, report_to: list[str]):
    """Build ``trl.SFTConfig`` from ``cfg.train.sft`` plus the values the audio path forces.

    Gradient checkpointing follows ``model.gradient_checkpointing`` unless the section sets
    ``activation_checkpointing`` (or its deprecated alias ``gradient_checkpointing``).

    Raises:
        ConfigError: see :func:`check_sft_section`.
    """
    from trl import SFTConfig

    section = check_sft_section(cfg)
    section["dataset_kwargs"] = {**(section.get("dataset_kwargs") or {}),
                                 "skip_prepare_dataset": True}
    if "activation_checkpointing" not in section and "gradient_checkpointing" not in section:
        section["activation_checkpointing"] = bool(cfg.model.get("gradient_checkpointing", False))
    return SFTConfig(**section, **FORCED, output_dir=str(run_dir), report_to=report_to)


def split_file(cfg: DictConfig, split: str) -> Path:
    """``<data.out_dir>/<split>.jsonl``."""
    return Path(str(cfg.data.out_dir)) / f"{split}.jsonl"


def load_split(cfg: DictConfig, split: str) -> list[dict]:
    """Rows of one split (empty list when the split file does not exist)."""
    from audsemthinker.data.examples import load_examples

    path = split_file(cfg, split)
    return load_examples(path) if path.exists() else []


class RowLookup:
    """Data collator over index datasets: ``[{"row": i}, ...]`` -> ``collator([rows[i], ...])``.

    A batch whose every row is skipped does not stop the run: it is replaced by a stand-in
    (the last batch that collated here, or the first row that collates) with every label
    ignored, which the trainer turns into a zero loss that still runs the forward and backward
    (``train.skipped_batch.guard_skipped_batches``), so a data-parallel rank never leaves the
    others waiting in the gradient all-reduce. The stand-in is counted in the skip log as
    ``batch:all_rows_skipped``.
    """

    def __init__(self, rows: Sequence[Mapping], collator):
        self.rows, self.collator = rows, collator
        self._last_good: list[int] | None = None

    def __call__(self, items):
        from audsemthinker.data.collate import AllRowsSkipped

        ids = [int(it["row"]) for it in items]
        if os.environ.get(TRACE_ENV):
            with trace_path().open("a") as f:
                f.write(" ".join(map(str, ids)) + "\n")
        try:
            batch = self.collator([self.rows[i] for i in ids])
        except AllRowsSkipped as e:
            return self._stand_in(e)
        self._last_good = ids
        return batch

    def _stand_in(self, error: Exception) -> dict:
        from audsemthinker.data.collate import IGNORE_INDEX, AllRowsSkipped

        candidates = [self._last_good] if self._last_good else [[i] for i in range(len(self.rows))]
        for ids in candidates:
            try:
                batch = self.collator([self.rows[i] for i in ids])
            except AllRowsSkipped:
                continue
            batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
            log.warning("%s: a zero-loss stand-in batch keeps this step (and the other ranks) "
                        "going", error)
            log_file = getattr(self.collator, "skip_log", None)
            if log_file is not None:
                with Path(log_file).open("a") as f:
                    f.write(json.dumps({"id": None, "reason": "batch:all_rows_skipped"}) + "\n")
            return batch
        raise error


def trainable_digest(model) -> str:
    """sha256 over the trainable parameters (name, then bytes), in name order: equal on every
    rank of a data-parallel run after each optimizer step. FSDP shards (DTensors) are gathered
    first, a collective: every rank must call this at the same point."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            full = p.full_tensor() if hasattr(p, "full_tensor") else p
            h.update(name.encode())
            h.update(full.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def local_share(model) -> float:
    """The fraction of the trainable elements this rank holds: 1.0 unsharded, about
    1/world_size under FSDP."""
    local = total = 0
    for p in model.parameters():
        if p.requires_grad:
            local += p.to_local().numel() if hasattr(p, "to_local") else p.numel()
            total += p.numel()
    return local / max(total, 1)


def trace_callback():
    """A callback writing :func:`trainable_digest` at train start and end (see ``TRACE_ENV``)."""
    from transformers import TrainerCallback

    class WeightTrace(TrainerCallback):
        @staticmethod
        def _write(suffix: str, model) -> None:
            trace_path(suffix).write_text(trainable_digest(model) + "\n")

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._write("weights_begin", model)  # Trainer loads a resumed checkpoint before this
            trace_path("share").write_text(f"{local_share(model)}\n")

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self._write("weights", model)

    return WeightTrace()


def index_dataset(start: int, stop: int):
    from datasets import Dataset

    return Dataset.from_dict({"row": list(range(start, stop))})


def audio_cap(cfg: DictConfig) -> float | None:
    """Seconds of each clip training reads: the cap the data was built with
    (``data.audio.max_seconds``, which configs take from the root ``max_audio_seconds``)."""
    cap = OmegaConf.select(cfg, "data.audio.max_seconds", default=None)
    if cap is None:
        cap = OmegaConf.select(cfg, "max_audio_seconds", default=None)
    return None if cap is None else float(cap)


def load_model(cfg: DictConfig):
    """Thinker + processor + LoRA (or full fine-tuning) as the config says."""
    from audsemthinker.config import to_dataclass
    from audsemthinker.model.loader import ModelConfig, check_token_ids, load_thinker
    from audsemthinker.model.lora import LoraSettings, apply_lora
    from audsemthinker.model.processor import build_processor

    mcfg = to_dataclass(cfg.model, ModelConfig)
    if mcfg.tiny and mcfg.pretrain:
        from audsemthinker.train.tiny_base import ensure_pretrained

        ensure_pretrained(mcfg.name_or_path, mcfg.pretrain, train=run_sft)
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
    from audsemthinker.data.collate import AudioCollator
    from audsemthinker.model.lora import count_trainable
    from audsemthinker.schemas import fast_settings
    from audsemthinker.train.sft_fast_trainer import (
        fast_trainer_kwargs,
        prepare_model,
        sft_trainer_class,
        train_collator,
    )
    from audsemthinker.train.sharding import check_sharded, enable_cpu_fsdp
    from audsemthinker.train.skipped_batch import guard_skipped_batches

    fast = fast_settings(cfg).sft  # validated before any work
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
    from audsemthinker.eval.report import write_json_atomic
    from audsemthinker.model.processor import save_processor
    from audsemthinker.train.sharding import heldout_on_all_ranks, save_final

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
