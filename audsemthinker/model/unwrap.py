"""The one place that reaches the thinker through DDP/accelerate and PEFT wrappers."""

from __future__ import annotations

from torch import nn

THINKER_CLASS = "Qwen2_5OmniThinkerForConditionalGeneration"


def unwrap(model: nn.Module, *, peft: bool = False, wrappers: bool = True) -> nn.Module:
    """The model inside DDP / accelerate wrappers (``.module``) and, with ``peft``, inside PEFT.

    LoRA layers are injected into the base model's modules in place, so running the PEFT base
    directly keeps the adapter (and PEFT's ``disable_adapter`` context) in effect.

    Args:
        model: a model, possibly wrapped.
        peft: also step inside a PEFT wrapper (``get_base_model``).
        wrappers: step through ``.module`` wrappers (off where a wrapper must be refused).
    """
    while wrappers and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    if peft and hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def unwrap_thinker(model: nn.Module) -> nn.Module:
    """The thinker inside ``model`` (itself, or the base model of a PEFT wrapper).

    Raises:
        NotImplementedError: anything but a thinker or a PEFT model around one.
    """
    inner = unwrap(model, peft=True, wrappers=False)
    if type(inner).__name__ != THINKER_CLASS:
        raise NotImplementedError(
            f"this path supports {THINKER_CLASS} or a PEFT model around it, got "
            f"{type(model).__name__} (wrapping {type(inner).__name__}); unwrap DDP/FSDP first or "
            "use the stock forward")
    return inner
