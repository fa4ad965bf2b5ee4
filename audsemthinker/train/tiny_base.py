"""A tiny base that behaves like a pretrained model, so the paper's LoRA presets can learn on it.

LoRA trains a few low-rank deltas and freezes everything else: embeddings, LM head, norms, MLPs
and (under ``released``) most of the audio encoder. On the random tiny thinker those frozen parts
map nothing to anything, and a LoRA run stays flat (docs/tiny_base.md has the measurements). So
the tiny base used for LoRA runs is the random thinker after a short *full* fine-tuning on
synthetic audio tasks (the recipe below): its audio tower then separates the synthetic sounds
and its LM already writes the answer format. A later LoRA run only has to remap what the base
hears onto a new task's answers, which is what LoRA does on a real pretrained model.

The result is cached: the folder holds ``pretrain_recipe.json`` with the recipe and its digest,
and is rebuilt only when the recipe (or the tiny sizes) change. Building writes into a temporary
sibling folder and renames it into place, so a killed build leaves nothing half-written and
concurrent builders (test workers) end with one complete folder.

Recipes are a registry (:data:`RECIPES`, :func:`register_recipe`); ``model.pretrain`` names one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STAMP = "pretrain_recipe.json"


@dataclass(frozen=True)
class PretrainRecipe:
    """How the tiny base is pretrained.

    Attributes:
        builds: synthetic builds (keyword arguments of the ``synthetic`` builder) whose train
            rows are mixed and shuffled; each has its own ``seed`` so no clip repeats a later
            run's data (the pipeline's synthetic data use seed 0).
        steps, learning_rate, batch_size: the full fine-tuning (AdamW, constant rate).
        seed: of the random initialisation and of the training run.
        sizes: overrides of ``audsemthinker.model.tiny.TINY_SIZES``.
    """

    builds: tuple[dict, ...]
    steps: int = 200
    learning_rate: float = 3e-3
    batch_size: int = 8
    seed: int = 0
    sizes: dict = field(default_factory=dict)

    def digest(self) -> str:
        """Hash of the recipe and the tiny sizes it starts from (the cache key)."""
        from audsemthinker.model.tiny import TINY_SIZES

        blob = json.dumps({"recipe": dataclasses.asdict(self),
                           "sizes": {**TINY_SIZES, **self.sizes}}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


RECIPES: dict[str, PretrainRecipe] = {
    # Words for pitch and noise-vs-tone (sentence answers), multiple choice on chirps: the base
    # hears all three contrasts and writes the <think>/<answer> format with option letters, but
    # has never answered a pitch or noise question by letter. Those are the LoRA tasks.
    "synthetic_audio": PretrainRecipe(builds=(
        dict(tasks=["pitch", "noise"], question_types=["qa"], n_train=384, seed=100),
        dict(tasks=["chirp"], question_types=["mc_qa"], n_train=192, seed=101,
             option_order="fixed"),
    )),
}


def register_recipe(name: str, recipe: PretrainRecipe) -> None:
    """Add a recipe ``model.pretrain`` can name."""
    RECIPES[name] = recipe


def get_recipe(name: str) -> PretrainRecipe:
    if name not in RECIPES:
        raise ValueError(f"model.pretrain: unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name]


def is_current(path: str | Path, recipe: PretrainRecipe) -> bool:
    """True when ``path`` holds a finished build of ``recipe``."""
    stamp = Path(path) / STAMP
    if not stamp.exists() or not (Path(path) / "config.json").exists():
        return False
    return json.loads(stamp.read_text()).get("digest") == recipe.digest()


def _mix(recipe: PretrainRecipe, out: Path) -> Path:
    """Build every synthetic part and write their shuffled train rows to ``out/train.jsonl``."""
    from audsemthinker.data.examples import load_examples, write_examples
    from audsemthinker.data.registry import build_dataset

    rows = []
    for i, build in enumerate(recipe.builds):
        part = out / f"part{i}"
        kwargs = dict(variant="simple", n_valid=0, n_test=0, **build)
        build_dataset("synthetic", part, plot=False, **kwargs)
        rows += load_examples(part / "train.jsonl")
    random.Random(recipe.seed).shuffle(rows)
    write_examples(out / "train.jsonl", rows)
    return out


def _train_config(random_dir: Path, data_dir: Path, run_dir: Path, recipe: PretrainRecipe):
    """The root config ``run_sft`` reads, for a full fine-tuning of the random base."""
    from omegaconf import OmegaConf

    return OmegaConf.create({
        "seed": recipe.seed, "run_dir": str(run_dir), "resume": False, "max_audio_seconds": 60,
        "logging": {"wandb": "off"},
        "model": {"name_or_path": str(random_dir), "dtype": "float32", "tiny": False,
                  "attn_implementation": "sdpa"},
        "lora": {"preset": "none"},
        "data": {"out_dir": str(data_dir)},
        "train": {"sft": {
            "learning_rate": recipe.learning_rate, "max_steps": recipe.steps,
            "per_device_train_batch_size": recipe.batch_size, "optim": "adamw_torch",
            "lr_scheduler_type": "constant", "max_grad_norm": 1.0, "seed": recipe.seed,
            "bf16": False, "use_cpu": True, "activation_checkpointing": False,
            "max_length": 512, "logging_steps": 10, "save_strategy": "no",
            "eval_strategy": "no", "dataloader_num_workers": 0, "disable_tqdm": True}},
        "eval": {"batch_size": 8, "decoding": {"max_new_tokens": 8}},
    })


def ensure_pretrained(path: str | Path, name: str, train) -> Path:
    """The pretrained tiny base at ``path``, built first when missing or of another recipe.

    ``train`` is :func:`audsemthinker.train.sft.run_sft`, passed in by the recipes that call
    this (so this module does not import them back).

    Returns:
        ``path`` (a thinker-only folder with tokenizer and processor files, plus the stamp).
    """
    from audsemthinker.model.tiny import write_tiny_checkpoint

    recipe, path = get_recipe(name), Path(path)
    if is_current(path, recipe):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("pretraining the tiny base %r (%d steps of full fine-tuning) into %s", name,
             recipe.steps, path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        tmp = Path(tmp)
        random_dir = write_tiny_checkpoint(tmp / "random", layout="thinker", seed=recipe.seed,
                                           sizes=recipe.sizes or None)
        report = train(_train_config(random_dir, _mix(recipe, tmp / "data"), tmp / "run",
                                       recipe))
        final = tmp / "run" / "final"
        (final / STAMP).write_text(json.dumps({
            "recipe": name, "digest": recipe.digest(), **dataclasses.asdict(recipe),
            "train_loss": report.get("train_loss"), "steps": report.get("global_step"),
            "train_seconds": report.get("train_seconds")}, indent=2))
        if is_current(path, recipe):  # another process finished first
            return path
        if path.exists():  # an older recipe's build: move it aside, then replace
            shutil.rmtree(path.with_name(path.name + ".old"), ignore_errors=True)
            os.replace(path, path.with_name(path.name + ".old"))
        try:
            os.replace(final, path)
        except OSError:
            if not is_current(path, recipe):
                raise
    shutil.rmtree(path.with_name(path.name + ".old"), ignore_errors=True)
    return path
