"""Merge a trained LoRA adapter into the thinker and write a standalone thinker folder.

The folder holds ``config.json`` (``Qwen2_5OmniThinkerConfig``), ``model.safetensors``, the
generation config and the processor files (tokenizer, feature extractor, chat template). Both
:func:`audsemthinker.model.loader.load_thinker` and stock
``Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained`` load it; it has no talker, so the
full Omni class (which needs ``spk_dict.pt``) does not (docs/pitfalls.md, Checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from audsemthinker.folders import staged_folder
from audsemthinker.integrity import weights_fingerprint

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
SHARDED_DIR = "pytorch_model_fsdp_0"
"""Where an FSDP checkpoint (``SHARDED_STATE_DICT``) keeps the model: a
``torch.distributed.checkpoint`` folder, one file per rank."""
EXPORT_MARKER = "export_complete.json"
"""Written last into an export (source, base, and the fingerprints of the trained and the
exported weights); a folder without it is not a finished export (:func:`export_problem`)."""


def find_trained(path: str | Path) -> tuple[Path, str]:
    """Locate what a run trained: an adapter folder or a full-model folder.

    Looks at ``path`` itself, then ``path/final``, then the newest complete checkpoint.

    Returns:
        ``(folder, kind)`` with kind ``adapter``, ``full`` or ``sharded`` (an FSDP checkpoint:
        the adapter, or all weights, in ``pytorch_model_fsdp_0/``).

    Raises:
        FileNotFoundError: none of those folders holds an adapter or model weights.
    """
    from audsemthinker.train.common import find_resume_checkpoint

    path = Path(path)
    candidates = [path, path / "final"]
    ckpt = find_resume_checkpoint(path)
    if ckpt:
        candidates.append(Path(ckpt))
    for folder in candidates:
        if (folder / "adapter_config.json").exists():
            return folder, "adapter"
        if (folder / SHARDED_DIR).is_dir():
            return folder, "sharded"
        if (folder / "config.json").exists() and any((folder / f).exists()
                                                     for f in WEIGHT_FILES):
            return folder, "full"
    raise FileNotFoundError(f"no adapter_config.json or model weights in {path}, {path}/final "
                            "or its newest checkpoint")


def read_sharded(folder: str | Path) -> dict:
    """The full state dict of an FSDP checkpoint's model, read in one process (any number of
    ranks wrote it): an adapter's tensors under LoRA, every weight under full fine-tuning.

    ``dcp_to_torch_save`` is PyTorch's own converter; it goes through one temporary file
    (the full weights, once, on the local disk).
    """
    import tempfile

    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(str(Path(folder) / SHARDED_DIR), f"{tmp}/model.pt")
        state = torch.load(f"{tmp}/model.pt", map_location="cpu", weights_only=True)
    return state["model"]


def load_sharded(folder: str | Path, mcfg, lora_cfg=None):
    """The thinker a sharded checkpoint holds: ``mcfg``'s base with the checkpoint's adapter
    (``lora_cfg``: the run's ``lora`` section) or, under full fine-tuning, its weights.

    Raises:
        ValueError: an adapter checkpoint without ``lora_cfg``, or tensors that do not fit the
            model (a different base or LoRA preset).
    """
    from audsemthinker.config import to_dataclass
    from audsemthinker.model.loader import load_thinker
    from audsemthinker.model.lora import LoraSettings, apply_lora

    state = read_sharded(folder)
    model = load_thinker(mcfg)
    if not any("lora_" in k for k in state):
        model.load_state_dict(state, strict=True)
        return model
    if lora_cfg is None:
        raise ValueError(f"{folder} holds a LoRA adapter: pass the run's lora section "
                         "(scripts/export.py reads it from the run's config.yaml)")
    from peft import set_peft_model_state_dict

    settings = lora_cfg if isinstance(lora_cfg, LoraSettings) else \
        to_dataclass(lora_cfg, LoraSettings)
    model = apply_lora(model, settings)
    result = set_peft_model_state_dict(model, state)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise ValueError(f"{folder} does not fit lora preset {settings.preset!r}: unexpected "
                         f"{result.unexpected_keys[:5]}, missing {missing[:5]}")
    return model


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").exists()


# Over 60 lines: the documented export steps in order, written atomically.
def export_merged(adapter_or_run_dir: str | Path, base_cfg, out_dir: str | Path,
                  lora_cfg=None) -> Path:
    """Merge the adapter of a run into its base thinker and save a thinker-only folder.

    Args:
        adapter_or_run_dir: an adapter folder, a run folder (its ``final/`` is used) or a
            full fine-tuning output (re-saved as is, thinker only).
        base_cfg: the base model (``ModelConfig`` or the ``model`` config section) the adapter
            was trained on. Its folder must exist: a missing tiny checkpoint is not re-created
            here, so an adapter is never merged into a different random base.
        out_dir: the folder to write.
        lora_cfg: the run's ``lora`` section; needed for an FSDP checkpoint of a LoRA run
            (it holds the adapter's tensors without ``adapter_config.json``).

    Returns:
        ``out_dir``, built under a temporary name and renamed into place (an existing folder
        is replaced) with :data:`EXPORT_MARKER` inside. Its ``export_info.json`` records the
        source, base and dtype and, for an adapter, ``merge_gap``: how far the merged
        weights' log-probs are from the adapter's on a fixed probe batch
        (``audsemthinker.train.merge_gap``).

    Raises:
        FileNotFoundError: nothing trained at ``adapter_or_run_dir``.
    """
    from audsemthinker.config import to_dataclass
    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.processor import build_processor, save_processor

    src, kind = find_trained(adapter_or_run_dir)
    mcfg = base_cfg if isinstance(base_cfg, ModelConfig) else to_dataclass(base_cfg, ModelConfig)
    mcfg = dataclasses.replace(mcfg, tiny=False)
    processor = build_processor(str(src) if _has_tokenizer(src) else mcfg.name_or_path)
    gap = None
    if kind == "adapter":
        from peft import PeftModel

        from audsemthinker.train.merge_gap import merge_gap, probe_batch, token_logps

        recorded = json.loads((src / "adapter_config.json").read_text()).get(
            "base_model_name_or_path")
        if recorded and Path(str(recorded)).name != Path(mcfg.name_or_path).name:
            log.warning("adapter %s was trained on %s; merging into %s", src, recorded,
                        mcfg.name_or_path)
        adapter = PeftModel.from_pretrained(load_thinker(mcfg), str(src))
        probe = probe_batch(processor)
        before = token_logps(adapter, probe)
        model = adapter.merge_and_unload()
        gap = merge_gap(before, token_logps(model, probe), probe)
        log.info("merged vs adapter log-probs on the probe batch: %s", gap)
    elif kind == "sharded":
        model = load_sharded(src, mcfg, lora_cfg)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
    else:
        model = load_thinker(dataclasses.replace(mcfg, name_or_path=str(src)))
    out = Path(out_dir)
    with staged_folder(out) as tmp:  # ``out`` appears whole, marker included, or not at all
        model.save_pretrained(str(tmp))
        save_processor(processor, tmp)
        (tmp / "export_info.json").write_text(json.dumps({
            "source": str(src), "kind": kind, "base": mcfg.name_or_path, "dtype": mcfg.dtype,
            "merge_gap": gap}, indent=2))
        (tmp / EXPORT_MARKER).write_text(json.dumps({
            "source": str(src), "kind": kind, "base": mcfg.name_or_path, "dtype": mcfg.dtype,
            "source_weights": weights_fingerprint(src), "weights": weights_fingerprint(tmp)},
            indent=2))
    log.info("exported %s (%s) merged into %s -> %s", src, kind, mcfg.name_or_path, out)
    return out


def export_problem(out_dir: str | Path, source: str | Path | None = None,
                   base: str | None = None) -> str | None:
    """Why ``out_dir`` is not a finished export of ``source`` into ``base``, or None.

    Finished means: the marker :data:`EXPORT_MARKER` (written last) is readable, the weight
    files still match the fingerprint it recorded, and, when given, the trained weights now at
    ``source`` (a run folder or an adapter folder) and the ``base`` model are the ones it was
    made from. A folder holding ``config.json`` but not the rest, or an export of an earlier
    training run in the same folder, is not finished.
    """
    out = Path(out_dir)
    try:
        info = json.loads((out / EXPORT_MARKER).read_text())
    except (OSError, ValueError):
        return f"no readable {EXPORT_MARKER}"
    if weights_fingerprint(out) != info.get("weights"):
        return "its weight files differ from those the export wrote"
    if base is not None and str(info.get("base")) != str(base):
        return f"merged into {info.get('base')!r}, not {str(base)!r}"
    if source is not None:
        try:
            src, _ = find_trained(source)
        except FileNotFoundError as e:
            return str(e)
        if weights_fingerprint(src) != info.get("source_weights"):
            return f"the trained weights at {src} changed since the export (retrained?)"
    return None
