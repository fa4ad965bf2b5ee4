"""Regional compilation of the thinker's decoder layers (``fast.sft.compile_layers``).

Compiling the whole thinker would trace the audio tower, PEFT's wrappers and the data-dependent
audio scatter (graph breaks, recompiles per clip length). The decoder layers are where the
element-wise work that eager mode runs as separate kernels sits (RMSNorm, rotary, SwiGLU, the
LoRA adapters' scaling and adds), and each layer is a fixed-signature block: compiling each one
with dynamic shapes fuses that work once for every sequence length.
"""

from __future__ import annotations

from torch import nn

from audsemthinker.model.unwrap import unwrap


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The language model's decoder layers of a thinker (or a PEFT model around one).

    transformers 5.24 keeps them at ``thinker.model.language_model.layers``; earlier 5.x
    releases at ``thinker.model.layers``.

    Raises:
        ValueError: a model with neither layout.
    """
    inner = unwrap(model, peft=True, wrappers=False)
    backbone = getattr(inner, "model", None)
    text = getattr(backbone, "language_model", backbone)
    layers = getattr(text, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(inner).__name__} has no decoder layers at model.layers or "
                         "model.language_model.layers: not a Qwen2.5-Omni thinker")
    return layers


def compile_decoder_layers(model: nn.Module, backend: str | None = None) -> int:
    """``torch.compile`` each decoder layer of the thinker's language model, in place.

    Each layer is traced once, with dynamic shapes, and reused for every sequence length, so
    only the first step compiles (one graph per layer: each traces its own ``layer_idx``;
    identical graphs hit inductor's cache). The audio tower, the LM head and the loss stay
    eager. Gradient checkpointing wraps the compiled layer as it wraps the eager one.

    Args:
        model: the thinker or a PEFT model around it.
        backend: a ``torch.compile`` backend (None: inductor); tests pass a cheap one.

    Returns:
        The number of layers compiled.
    """
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True, **({} if backend is None else {"backend": backend}))
    return len(layers)
