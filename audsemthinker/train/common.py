"""What every trainer here shares: run folder, seeding, wandb switch, metrics log, resume.

SFT and GRPO both write into one run folder::

    run_dir/
      config.yaml          the resolved config the run started with
      metrics.jsonl        one JSON object per Trainer log event (rank 0 only)
      loss.png             training (and eval) loss against the step, drawn at the end
      checkpoint-N/        every save_steps; resume=auto takes the newest complete one (a
                           readable trainer_state.json, whole weight, optimizer and RNG files)
      final/               the trained adapter (or full model) and processor files

The public release switched wandb on and off inverted; :func:`wandb_mode` is one small,
tested function instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)

WANDB_SETTINGS = ("auto", "on", "off", "offline")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# --------------------------------------------------------------------------------------------
# Run folder, seed, config
# --------------------------------------------------------------------------------------------
def make_run_dir(cfg) -> Path:
    """Create and return ``cfg.run_dir`` (every file of the run goes below it)."""
    run_dir = Path(str(cfg.run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) through ``transformers.set_seed``."""
    from transformers import set_seed

    set_seed(int(seed))


def save_config(cfg, run_dir: str | Path) -> Path:
    """Write the resolved config to ``run_dir/config.yaml`` (export reads the model from it).

    Secrets (``audsemthinker.redact``) are replaced first: a resolved ``${oc.env:...}`` token
    never reaches the disk. Every rank of a multi-process run calls this; each writes through
    its own temporary file, so two ranks never rename one half-written file.
    """
    from omegaconf import OmegaConf

    from audsemthinker.files import write_text_atomic
    from audsemthinker.redact import redact

    clean = redact(OmegaConf.to_container(cfg, resolve=True))
    return write_text_atomic(Path(run_dir) / "config.yaml", OmegaConf.to_yaml(clean))


def json_safe(obj):
    """``obj`` with NaN/inf floats replaced by None (strict JSON refuses them)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# wandb
# --------------------------------------------------------------------------------------------
def wandb_mode(setting: str, environ: Mapping[str, str] | None = None) -> str:
    """Resolve ``logging.wandb`` to ``online``, ``offline`` or ``off``.

    ``auto`` logs online when ``WANDB_API_KEY`` is set and to offline files otherwise (so a
    run without credentials never blocks on a login prompt), and is ``off`` when the
    environment says ``WANDB_MODE=disabled``. ``on`` is online, ``offline`` is offline, ``off``
    is off whatever the environment holds.

    Raises:
        ValueError: an unknown setting.
    """
    env = os.environ if environ is None else environ
    setting = str(setting).lower()
    if setting in ("true", "false"):  # YAML's on/off become booleans when unquoted
        setting = "on" if setting == "true" else "off"
    if setting not in WANDB_SETTINGS:
        raise ValueError(f"logging.wandb must be one of {WANDB_SETTINGS}, got {setting!r}")
    if setting == "auto":
        if env.get("WANDB_MODE", "").lower() == "disabled":
            return "off"
        return "online" if env.get("WANDB_API_KEY") else "offline"
    return {"on": "online", "off": "off", "offline": "offline"}[setting]


def configure_wandb(logging_cfg: Mapping | None, run_dir: str | Path,
                    environ: dict | None = None) -> list[str]:
    """Set the wandb environment for the Trainer and return its ``report_to`` list.

    Args:
        logging_cfg: the ``logging`` section (``wandb``, ``project``, ``entity``).
        run_dir: wandb files go to ``run_dir/wandb``.
        environ: the environment to update (``os.environ`` by default; tests pass a dict).

    Returns:
        ``["wandb"]`` when logging online or offline, ``[]`` when off.
    """
    env = os.environ if environ is None else environ
    logging_cfg = dict(logging_cfg or {})
    mode = wandb_mode(logging_cfg.get("wandb", "auto"), env)
    if mode == "off":
        env["WANDB_MODE"] = "disabled"
        return []
    env["WANDB_MODE"] = mode
    env.setdefault("WANDB_DIR", str(run_dir))
    if logging_cfg.get("project"):
        env["WANDB_PROJECT"] = str(logging_cfg["project"])
    if logging_cfg.get("entity"):
        env["WANDB_ENTITY"] = str(logging_cfg["entity"])
    return ["wandb"]


# --------------------------------------------------------------------------------------------
# Metrics log and loss plot
# --------------------------------------------------------------------------------------------
def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (a torn last line from a killed run is dropped)."""
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_losses(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw ``loss`` (and ``eval_loss``) against the step; None when nothing was logged."""
    records = read_metrics(metrics_path)
    series = {k: [(r["step"], r[k]) for r in records if r.get(k) is not None]
              for k in ("loss", "eval_loss")}
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, points in series.items():
        if points:
            ax.plot(*zip(*points), marker="." if key == "eval_loss" else None, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)


class MetricsLogger(TrainerCallback):
    """Append every Trainer log event to ``run_dir/metrics.jsonl``; draw ``loss.png`` at the end.

    On a resumed run, records past the checkpoint's step (logged by the killed run after its
    last checkpoint) are dropped first, so the file reads as one uninterrupted run.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.png = Path(run_dir) / "loss.png"

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= state.global_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = json_safe({"step": state.global_step, "epoch": state.epoch, **logs})
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_losses(self.path, self.png)


class ProcessorSaver(TrainerCallback):
    """Write the processor files (tokenizer, feature extractor, chat template) into every
    checkpoint, so a checkpoint folder exports and evaluates on its own."""

    def __init__(self, processor):
        self.processor = processor

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from audsemthinker.model.processor import save_processor

            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                save_processor(self.processor, ckpt)


# --------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------


def find_resume_checkpoint(run_dir: str | Path) -> str | None:
    """The complete ``checkpoint-N`` folder of ``run_dir`` with the largest N, or None.

    An incomplete newer one (killed while saving, a file cut or missing) is passed over with
    a warning naming what is wrong, and the previous complete one is taken.
    """
    from audsemthinker.integrity import checkpoint_problem

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    found = []
    for p in run_dir.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        log.warning("ignoring incomplete checkpoint %s: %s", path, problem)
    return None


def resolve_resume(resume, run_dir: str | Path) -> str | None:
    """Turn the top-level ``resume`` setting into a checkpoint path for ``trainer.train``.

    Args:
        resume: ``auto`` (the newest complete checkpoint in ``run_dir``, or a fresh start when
            there is none), ``false``/None (fresh start), or a checkpoint folder.
        run_dir: the run folder.

    Raises:
        ValueError: a named checkpoint that is missing or incomplete.
    """
    if resume is None or resume is False or str(resume).lower() in ("false", "no", "none"):
        return None
    if str(resume).lower() in ("auto", "true"):
        ckpt = find_resume_checkpoint(run_dir)
        log.info("resume=auto: %s", f"continuing from {ckpt}" if ckpt else "fresh start")
        return ckpt
    from audsemthinker.integrity import checkpoint_problem

    problem = checkpoint_problem(resume)
    if problem:
        raise ValueError(f"resume={resume!r} is not a complete checkpoint folder ({problem})")
    return str(resume)


# --------------------------------------------------------------------------------------------
# Held-out generation after training
# --------------------------------------------------------------------------------------------
def rank0_generation_blocker(trainer) -> str | None:
    """Why rank 0 cannot generate alone in this run (None when it can).

    The held-out accuracy after SFT/GRPO (and GRPO's before-training one) runs ``generate`` on
    rank 0 only, while the other ranks wait. Under DeepSpeed ZeRO-3 or FSDP each forward
    gathers weight shards from every rank, so rank 0 alone would block forever in that gather
    (after the final weights are saved, but without a report). Those runs generate on every
    rank instead (``audsemthinker.distributed.sharding.heldout_on_all_ranks``).
    """
    acc = trainer.accelerator
    if acc.num_processes <= 1:
        return None
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is not None and getattr(plugin, "zero_stage", None) == 3:
        return "DeepSpeed ZeRO-3 shards the weights across ranks"
    if getattr(trainer, "is_fsdp_enabled", False):
        return "FSDP shards the weights across ranks"
    return None
