"""LoRA presets resolved against the loaded module tree, and full fine-tuning.

Module names differ across transformers versions (``model.language_model.layers.N...`` in 5.x,
``model.layers.N...`` in older ones, ``thinker.`` in the hub file) and PEFT's suffix matching of
``["q_proj", "v_proj"]`` silently also hits the audio encoder. So presets are rules over the
*loaded* tree that return exact module names, and a rule that matches nothing is an error that
lists what exists.

Presets (``configs/lora/*.yaml``):
    released           q_proj, v_proj in language model and audio encoder (the public checkpoints)
    lm_attn            language model q/k/v/o
    audio_proj         audio_tower.proj (the 1280->3584 output projection)
    lm_attn+audio_proj the two above
    all_linear         every Linear of the language model and audio encoder (not lm_head, vision)
"""

from __future__ import annotations

import logging
import re

from torch import nn

from audsemthinker.schemas import LoraSettings

log = logging.getLogger(__name__)


def _part(name: str) -> str:
    """Which part of the thinker a module belongs to: audio, vision, lm_head or lm."""
    if "audio_tower" in name:
        return "audio"
    if re.search(r"(^|\.)visual(\.|$)", name):
        return "vision"
    if name.endswith("lm_head"):
        return "lm_head"
    return "lm"


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _attn(names, part, projs):
    pattern = re.compile(r"\.({})$".format("|".join(projs)))
    return [n for n in names if _part(n) == part and "attn" in n and pattern.search(n)]


PRESETS = {
    "released": lambda names: _attn(names, "lm", ["q_proj", "v_proj"])
    + _attn(names, "audio", ["q_proj", "v_proj"]),
    "lm_attn": lambda names: _attn(names, "lm", ["q_proj", "k_proj", "v_proj", "o_proj"]),
    "audio_proj": lambda names: [n for n in names if re.search(r"audio_tower\.proj$", n)],
    "all_linear": lambda names: [n for n in names if _part(n) in ("lm", "audio")],
}
PRESETS["lm_attn+audio_proj"] = lambda names: PRESETS["lm_attn"](names) + PRESETS["audio_proj"](
    names)


def available_modules(model: nn.Module) -> list[str]:
    """Distinct Linear module names with layer numbers folded (``...layers.*.self_attn.q_proj``)."""
    return sorted({re.sub(r"\.\d+\.", ".*.", n) for n in _linear_names(model)})


def resolve_targets(model: nn.Module, preset: str, custom: list[str] | None = None,
                    freeze_audio_encoder: bool = False) -> list[str]:
    """Exact module names the preset (or the custom regex list) selects.

    Raises:
        ValueError: unknown preset, or a selection that matches no module (the message names
            the modules that exist).
    """
    names = _linear_names(model)
    if preset == "custom":
        if not custom:
            raise ValueError("lora.preset=custom needs lora.target_modules (regexes)")
        targets = []
        for pat in custom:
            hit = [n for n in names if re.search(pat, n)]
            if not hit:
                raise ValueError(f"lora target {pat!r} matches no Linear module; available: "
                                 f"{available_modules(model)}")
            targets += hit
    elif preset in PRESETS:
        targets = PRESETS[preset](names)
    else:
        raise ValueError(f"unknown lora preset {preset!r}; choose one of "
                         f"{sorted(PRESETS) + ['custom', 'none']}")
    if freeze_audio_encoder:
        targets = [t for t in targets if _part(t) != "audio"]
    targets = sorted(dict.fromkeys(targets))
    if not targets:
        raise ValueError(f"lora preset {preset!r} matches no module in this model"
                         f"{' once the audio encoder is frozen' if freeze_audio_encoder else ''}; "
                         f"available: {available_modules(model)}")
    return targets


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def apply_lora(model: nn.Module, cfg: LoraSettings) -> nn.Module:
    """Wrap ``model`` with LoRA per ``cfg`` (or prepare full fine-tuning when preset is none).

    Returns:
        A ``peft.PeftModel`` for LoRA presets, else ``model`` with ``requires_grad`` set.
    """
    if cfg.preset == "none":
        for name, p in model.named_parameters():
            part = _part(name.rsplit(".", 1)[0])
            p.requires_grad = not ((part == "audio" and cfg.freeze_audio_encoder)
                                   or (part == "vision" and cfg.freeze_vision))
        wrapped = model
    else:
        from peft import LoraConfig, get_peft_model

        targets = resolve_targets(model, cfg.preset, cfg.target_modules, cfg.freeze_audio_encoder)
        lcfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias=cfg.bias,
                          target_modules=targets, task_type="CAUSAL_LM")
        wrapped = get_peft_model(model, lcfg)
    trainable, total = count_trainable(wrapped)
    log.info("trainable parameters: %s / %s (%.4f%%), preset=%s", f"{trainable:,}",
             f"{total:,}", 100 * trainable / max(total, 1), cfg.preset)
    return wrapped


