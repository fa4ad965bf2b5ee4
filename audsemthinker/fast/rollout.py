"""Fast GRPO rollouts and log-prob passes: merged-LoRA generation, audio dedup/cache.

Torch and PEFT only (no trl), so a benchmark can drive the same code on a bare thinker or a
``PeftModel``. Each piece is exact against the stock path up to float rounding (tested in
``tests/test_fast_grpo.py``):

- :func:`merged_lora`: decode with the LoRA merged into the base weights (no adapter math per
  step), then copy the base weights back from a :class:`LoraSnapshot` taken once. Unmerging
  (``W + BA - BA``) is not used: in bf16 it drifts every step and the drift accumulates.
- :class:`AudioDedup` (installed by :func:`install_audio_dedup`): the thinker's
  ``get_audio_features`` encodes each distinct clip of a batch once and expands the result back
  to the rows in order; with an :class:`AudioEncodingCache` it also reuses a clip's encoding
  across the passes of one GRPO step while no audio-tower parameter is trainable.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

log = logging.getLogger(__name__)

_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


# --------------------------------------------------------------------------------------------
# Merged-LoRA generation
# --------------------------------------------------------------------------------------------
def lora_layers(model: nn.Module) -> list[nn.Module]:
    """PEFT LoRA layers of ``model`` that carry at least one adapter (empty for full FT)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # no peft: nothing can be a LoRA layer
        return []
    return [m for m in model.modules() if isinstance(m, LoraLayer) and len(m.lora_A) > 0]


class LoraSnapshot:
    """A copy of the frozen base weight (and bias) of every LoRA layer, taken once.

    The base weights never train under LoRA, so one copy stays valid for the whole run and
    :meth:`restore` puts them back bit-exactly after any number of merges.
    """

    def __init__(self, model: nn.Module, device: torch.device | str | None = None):
        """Copy the base tensors of ``model``'s LoRA layers.

        Args:
            model: a ``PeftModel`` (or any module holding LoRA layers).
            device: where to keep the copy (default: beside each weight; "cpu" saves GPU
                memory at the cost of a host-to-device copy per restore).

        Raises:
            ValueError: a LoRA variant (DoRA, ...) whose merge changes more than the base
                weight, or a base tensor that trains or is not a plain float tensor.
        """
        self.layers = lora_layers(model)
        self.saved: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        for layer in self.layers:
            if getattr(layer, "lora_variant", None):
                raise ValueError(f"{type(layer).__name__} uses a LoRA variant "
                                 f"{sorted(layer.lora_variant)}: merged rollouts support "
                                 "plain LoRA only")
            base = layer.get_base_layer()
            tensors = [base.weight] + ([base.bias] if getattr(base, "bias", None) is not None
                                       else [])
            for t in tensors:
                if t.requires_grad or not t.is_floating_point() or type(t.data) is not \
                        torch.Tensor:
                    raise ValueError("merged rollouts need frozen plain float base weights; "
                                     f"{type(base).__name__} has a {t.dtype} weight "
                                     f"(requires_grad={t.requires_grad})")
            with torch.no_grad():
                self.saved.append(tuple(t.detach().to(device or t.device, copy=True)
                                        for t in tensors) + (None,) * (2 - len(tensors)))

    def __len__(self) -> int:
        return len(self.layers)

    @torch.no_grad()
    def restore(self) -> None:
        """Unmerge each merged layer and copy the saved base tensors back (bit-exact)."""
        for layer, (weight, bias) in zip(self.layers, self.saved):
            if layer.merged:
                layer.unmerge()  # PEFT's bookkeeping; the copy below undoes its rounding
            base = layer.get_base_layer()
            base.weight.copy_(weight)
            if bias is not None:
                base.bias.copy_(bias)


@contextlib.contextmanager
def merged_lora(model: nn.Module, snapshot: LoraSnapshot | None = None) -> Iterator[nn.Module]:
    """Run the block with every active LoRA adapter merged into its base weight.

    On exit (also on error) the base weights are restored from ``snapshot`` bit-exactly.
    A model without LoRA layers (full fine-tuning) is left alone.

    Args:
        model: the unwrapped model (``PeftModel``), not a DDP/DeepSpeed wrapper; with ZeRO-3 or
            FSDP the weights are sharded and this must not be used.
        snapshot: a :class:`LoraSnapshot` of ``model`` kept across calls; None takes a fresh
            one (a full copy of the targeted weights each call: fine for one-off use).

    Yields:
        ``model``.

    Raises:
        ValueError: a layer already merged (its snapshot would hold merged weights), or a
            snapshot of other layers than ``model``'s.
    """
    layers = lora_layers(model)
    if not layers:
        yield model
        return
    if any(layer.merged for layer in layers):
        raise ValueError("a LoRA layer is already merged: merged_lora needs unmerged weights")
    snapshot = snapshot if snapshot is not None else LoraSnapshot(model)
    if len(snapshot) != len(layers) or any(a is not b for a, b in zip(snapshot.layers, layers)):
        raise ValueError("the snapshot was taken from other LoRA layers than this model's")
    try:
        with torch.no_grad():
            for layer in layers:
                layer.merge()
        yield model
    finally:
        snapshot.restore()


# --------------------------------------------------------------------------------------------
# Audio: one encoding per distinct clip, optionally cached for the step
# --------------------------------------------------------------------------------------------
def audio_model(model: nn.Module) -> nn.Module:
    """The module whose ``forward`` calls ``self.get_audio_features`` (the thinker's inner model).

    Raises:
        ValueError: ``model`` holds no module with an ``audio_tower`` child.
    """
    for m in model.modules():
        if "audio_tower" in m._modules and hasattr(type(m), "get_audio_features"):
            return m
    raise ValueError(f"{type(model).__name__} has no module with an audio_tower and "
                     "get_audio_features: not a Qwen2.5-Omni thinker")


def _bits(x: torch.Tensor) -> torch.Tensor:
    """``x`` reinterpreted as integers: equality is bit equality (no NaN or -0.0 surprises)."""
    return x.contiguous().view(_BITS[x.element_size()]) if x.is_floating_point() else x


def group_equal_rows(*parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group the rows that are bit-identical in every part (rows need not be adjacent).

    Shared by :class:`AudioDedup` (one encoding per distinct clip) and
    :func:`audsemthinker.fast.prefix_share.group_rows` (one forward per distinct prompt).

    Args:
        parts: tensors with the same first dimension ``B`` (any dtype and trailing shape).

    Returns:
        ``(first, inverse)``: ``first[g]`` is the first row of group ``g``, groups numbered in
        order of first appearance; ``inverse[b]`` is the group of row ``b``.
    """
    keys = torch.stack([torch.unique(_bits(p).reshape(p.shape[0], -1).long(), dim=0,
                                     return_inverse=True)[1] for p in parts], dim=1)
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    n, rows = int(inverse.max()) + 1, torch.arange(len(inverse), device=inverse.device)
    first = torch.full((n,), len(inverse), dtype=torch.long, device=inverse.device)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")
    order = torch.argsort(first)  # renumber groups by first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=order.device)
    return first[order], rank[inverse]


class AudioEncodingCache:
    """Tower outputs of distinct clips, keyed by their exact frames (bit equality, no hashing).

    Lookups bucket by (autocast state, frame count, frame sum) and then compare the frames with
    ``torch.equal``, so a clip is never served another clip's encoding. The autocast state is
    part of the key because TRL runs the log-prob passes under autocast and generation without:
    each pass kind gets exactly the encoding its own stock forward would compute.
    """

    def __init__(self):
        self.entries: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        """Drop every entry (a new generation batch starts)."""
        self.entries.clear()

    def __len__(self) -> int:
        return sum(len(v) for v in self.entries.values())

    @staticmethod
    def _bucket(frames: torch.Tensor) -> tuple:
        mode = (torch.is_autocast_enabled(frames.device.type),
                torch.get_autocast_dtype(frames.device.type))
        return mode, tuple(frames.shape), float(frames.float().sum())

    def get(self, frames: torch.Tensor) -> torch.Tensor | None:
        """The encoding stored for exactly these frames, or None."""
        bits = _bits(frames)
        for stored, enc in self.entries.get(self._bucket(frames), ()):
            if stored.dtype == bits.dtype and torch.equal(stored, bits):
                self.hits += 1
                return enc
        self.misses += 1
        return None

    def put(self, frames: torch.Tensor, encoding: torch.Tensor) -> None:
        """Store ``encoding`` (detached: the tower is frozen) for these exact frames."""
        self.entries.setdefault(self._bucket(frames), []).append(
            (_bits(frames).clone(), encoding.detach()))


class AudioDedup:
    """Replacement for an inner thinker's ``get_audio_features`` (installed on the instance).

    Rows whose valid frames are bit-identical are encoded once; the flattened per-row output
    (``last_hidden_state`` [sum of row tokens, hidden], rows in order, as transformers 5.24
    returns it) is rebuilt by indexing, so gradients of shared rows add up as in the stock path.
    With a cache, clips already encoded this step are not encoded again, unless a parameter of
    the tower requires grad (then the cache is bypassed and the reason logged once).
    """

    def __init__(self, inner: nn.Module, cache: AudioEncodingCache | None = None):
        self.inner = inner
        self.func = type(inner).get_audio_features  # unbound: survives deepcopy of the module
        self.cache = cache
        self.calls = 0
        self.rows_in = 0
        self.rows_encoded = 0
        self._warned = False

    def _cache_usable(self) -> bool:
        if self.cache is None:
            return False
        if any(p.requires_grad for p in self.inner.audio_tower.parameters()):
            if not self._warned:
                log.warning("audio_cache off: an audio-tower parameter is trainable, so its "
                            "encoding changes with every update; using audio_dedup only")
                self._warned = True
            return False
        return True

    def __call__(self, input_features, feature_attention_mask=None, audio_feature_lengths=None,
                 **kwargs):
        if (feature_attention_mask is None or input_features.dim() != 3
                or kwargs.get("return_dict") is False or kwargs.get("output_hidden_states")
                or kwargs.get("output_attentions")):
            return self.func(self.inner, input_features, feature_attention_mask,
                             audio_feature_lengths, **kwargs)
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        mask = feature_attention_mask.bool()
        n = input_features.size(0)
        self.calls += 1
        self.rows_in += n
        # Frames the mask hides are zeroed: rows that differ only in padding are one clip.
        first, inverse = group_equal_rows(input_features.masked_fill(~mask[:, None, :], 0), mask)
        reps = first.tolist()  # one row per distinct clip, in order of first appearance
        encodings: list[torch.Tensor | None] = [None] * len(reps)
        frames = [input_features[r][:, mask[r]] for r in reps]  # exactly what the tower reads
        use_cache = self._cache_usable()
        if use_cache:
            encodings = [self.cache.get(f) for f in frames]
        todo = [i for i, e in enumerate(encodings) if e is None]
        if todo:
            rows = torch.tensor([reps[i] for i in todo], device=input_features.device)
            out = self.func(self.inner, input_features[rows], feature_attention_mask[rows],
                            None, **kwargs).last_hidden_state
            self.rows_encoded += len(todo)
            lengths = self.inner.audio_tower._get_feat_extract_output_lengths(
                feature_attention_mask[rows].sum(-1))[1].tolist()
            for i, enc in zip(todo, torch.split(out, lengths)):
                encodings[i] = enc
                if use_cache:
                    self.cache.put(frames[i], enc)
        hidden = torch.cat([encodings[g] for g in inverse.tolist()])
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=hidden)


def install_audio_dedup(model: nn.Module, cache: AudioEncodingCache | None = None) -> AudioDedup:
    """Install :class:`AudioDedup` on ``model``'s inner thinker (idempotent per model).

    Args:
        model: a thinker, a ``PeftModel`` around one, or the inner model itself.
        cache: share this cache (None: dedup within each forward only).

    Returns:
        The installed wrapper (its ``calls``/``rows_in``/``rows_encoded`` count the work).
    """
    inner = audio_model(model)
    current = inner.__dict__.get("get_audio_features")
    if isinstance(current, AudioDedup):
        current.cache = cache
        return current
    wrapper = AudioDedup(inner, cache)
    inner.get_audio_features = wrapper
    return wrapper


def remove_audio_dedup(model: nn.Module) -> None:
    """Restore the class's ``get_audio_features`` on ``model``'s inner thinker."""
    inner = audio_model(model)
    if isinstance(inner.__dict__.get("get_audio_features"), AudioDedup):
        del inner.get_audio_features


@contextlib.contextmanager
def audio_dedup(model: nn.Module, cache: AudioEncodingCache | None = None
                ) -> Iterator[AudioDedup]:
    """:func:`install_audio_dedup` for the block, removed afterwards."""
    wrapper = install_audio_dedup(model, cache)
    try:
        yield wrapper
    finally:
        remove_audio_dedup(model)


def same_tower(a: nn.Module, b: nn.Module) -> bool:
    """Whether two thinkers' audio towers hold bit-identical tensors (one cache may serve both)."""
    sa = audio_model(a).audio_tower.state_dict()
    sb = audio_model(b).audio_tower.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype
        and torch.equal(_bits(sa[k]), _bits(sb[k].to(sa[k].device))) for k in sa)
