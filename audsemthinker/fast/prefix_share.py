"""Score G completions of one prompt with ONE forward of that prompt.

GRPO scores every sampled completion twice per step (reference pass without gradients, policy
pass with them). The stock forward runs the whole ``[prompt + completion]`` row for each of the
G completions of a prompt, so a ~316-token prompt (text + 250 audio placeholders) is run G
times next to a ~128-token completion. :func:`shared_prompt_logps` runs each distinct prompt
once (audio tower included), keeps its KV cache, copies the cache to the prompt's rows, and runs
only the completion tokens on top: about 2.6x fewer tokens at G=8.

Why it is exact (checked against transformers 5.24 ``modeling_qwen2_5_omni``):

- attention is causal, so the hidden state of prompt column ``t`` depends only on columns
  ``<= t``: the prompt pass reproduces every prompt column of the stock forward, including the
  last one, whose output predicts the first completion token;
- with no image or video grid, ``Qwen2_5OmniPreTrainedModelForConditionalGeneration
  .get_rope_index`` gives every row plain positions ``cumsum(attention_mask) - 1`` (padding set
  to 1), identical in its 3 mrope dimensions, audio placeholders included. We compute those
  positions once over the full mask and pass the prompt and completion slices explicitly, so
  the thinker's stateful ``rope_deltas`` (which assume ``repeat_interleave`` row order) is
  neither read nor written;
- the completion pass attends to the expanded cache under the full ``[prompt + completion]``
  mask, as the stock forward's completion columns do.

Refused with a clear error, never answered wrongly: a model that is not the Qwen2.5-Omni thinker
(or a PEFT wrapper of one: DDP / FSDP / DeepSpeed wrappers are refused), image or video tokens,
audio placeholders inside the completion, more than one clip per row, sliding-window attention,
and gradient checkpointing while gradients are recorded in training mode (transformers then drops
the cache: ``GradientCheckpointingLayer`` sets ``cache=None``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from audsemthinker.fast.rollout import group_equal_rows
from audsemthinker.model.unwrap import unwrap_thinker


def _check_supported(thinker: nn.Module) -> None:
    backbone = getattr(thinker, "model", None)
    if not (hasattr(backbone, "get_audio_features") and hasattr(backbone, "language_model")):
        import transformers

        raise NotImplementedError(
            f"transformers {transformers.__version__}: the thinker's backbone "
            f"({type(backbone).__name__}) does not scatter the audio itself (transformers 5.24, "
            "the pinned version, has Qwen2_5OmniThinkerModel for that); use the stock forward")
    text_cfg = thinker.config.get_text_config()
    if "sliding_attention" in (getattr(text_cfg, "layer_types", None) or ()):
        raise NotImplementedError("sliding-window attention layers are not supported")
    if thinker.training and torch.is_grad_enabled() and any(  # the audio tower may checkpoint
            getattr(m, "gradient_checkpointing", False)
            for m in thinker.model.language_model.modules()):
        raise NotImplementedError(
            "gradient checkpointing drops the KV cache in training mode with gradients "
            "(transformers sets cache=None); disable it or use the stock forward")


def group_rows(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
               input_features: torch.Tensor | None = None,
               feature_attention_mask: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Group rows whose prompt ids, prompt mask and audio features are all identical.

    Rows of a group need not be adjacent. Features are compared bit for bit (padding
    included), so two clips that differ anywhere are never merged.

    Args:
        prompt_ids: ``[B, P]`` prompt columns.
        prompt_mask: ``[B, P]`` their attention mask.
        input_features: ``[B, mels, T]`` one clip per row, or None (text only).
        feature_attention_mask: ``[B, T]``, or None.

    Returns:
        ``(first, inverse)``: ``first[g]`` is the first row of group ``g`` (groups in order of
        first appearance), ``inverse[b]`` the group of row ``b``.
    """
    parts = [prompt_ids, prompt_mask]
    parts += [x for x in (input_features, feature_attention_mask) if x is not None]
    return group_equal_rows(*parts)


def _check_inputs(thinker, input_ids, attention_mask, logits_to_keep, input_features,
                  feature_attention_mask, temperature) -> int:
    """Validate shapes and content; return the prompt width ``P``."""
    if input_ids.ndim != 2 or attention_mask is None or attention_mask.shape != input_ids.shape:
        raise ValueError(f"input_ids must be [B, L] with an attention_mask of the same shape, got "
                         f"{tuple(input_ids.shape)} and "
                         f"{None if attention_mask is None else tuple(attention_mask.shape)}")
    prompt_len = input_ids.shape[1] - int(logits_to_keep)
    if not 0 < logits_to_keep or prompt_len < 1:
        raise ValueError(f"logits_to_keep must be in [1, {input_ids.shape[1] - 1}], "
                         f"got {logits_to_keep}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    audio = input_ids[:, prompt_len:] == thinker.config.audio_token_id
    if bool((audio & attention_mask[:, prompt_len:].bool()).any()):
        raise ValueError("a completion holds the audio placeholder token; it has no features "
                         "(suppress placeholder tokens when sampling)")
    check_media(thinker, input_ids, input_features, feature_attention_mask)
    return prompt_len


def check_media(thinker, input_ids: torch.Tensor, input_features: torch.Tensor | None,
                feature_attention_mask: torch.Tensor | None) -> None:
    """Audio only, one clip per row, batch-first: the layout the shared paths assume.

    Raises:
        NotImplementedError: image or video tokens in the rows.
        ValueError: features without their mask (or the reverse), or not one clip per row.
    """
    for name in ("image_token_id", "video_token_id"):
        tok = getattr(thinker.config, name, None)
        if tok is not None and bool((input_ids == tok).any()):
            raise NotImplementedError(f"rows hold {name}={tok}: images and video are not supported")
    if (input_features is None) != (feature_attention_mask is None):
        raise ValueError("pass input_features and feature_attention_mask together")
    if input_features is not None and (input_features.shape[0] != input_ids.shape[0]
                                       or feature_attention_mask.shape[0] != input_ids.shape[0]):
        raise ValueError(f"features must be batch-first, one clip per row: {input_ids.shape[0]} "
                         f"rows but features for {input_features.shape[0]}")


def _expand_cache(cache, index: torch.Tensor, config):
    """A new DynamicCache whose row ``b`` is row ``index[b]`` of ``cache`` (differentiable)."""
    out = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.index_select(0, index), layer.values.index_select(0, index), i)
    return out


def selected_logps(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` gathered at ``ids``, without a second vocabulary-sized tensor.

    Single and double precision use ``gather - logsumexp``; half precision goes row by row
    through ``log_softmax``, whose float32 accumulation keeps it accurate.
    """
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    return torch.stack([row.log_softmax(-1).gather(-1, i.unsqueeze(-1)).squeeze(-1)
                        for row, i in zip(logits, ids)])


def shared_prompt_blocker(model: nn.Module) -> str | None:
    """Why :func:`shared_prompt_hidden` cannot run on ``model`` in the current mode (None: it can).

    The same checks the scoring functions raise on, as a reason a caller can log before falling
    back to the stock forward.
    """
    try:
        _check_supported(unwrap_thinker(model))
    except NotImplementedError as err:
        return str(err)
    return None


def shared_prompt_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         logits_to_keep: int, input_features: torch.Tensor | None = None,
                         feature_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Final hidden states that predict each completion token, each distinct prompt run once.

    Row ``b``, column ``j`` is the stock forward's ``last_hidden_state[b, P - 1 + j]`` (``P`` the
    prompt width): the state whose LM-head output scores completion token ``j``. Callers apply
    their own head (:func:`shared_prompt_logps`, or TRL's chunked log-prob kernel in the trainer).

    Args: as :func:`shared_prompt_logps`, without the temperature.

    Returns:
        ``[B, logits_to_keep, hidden]`` in the backbone's dtype.

    Raises:
        NotImplementedError: an unsupported model or setting (see the module docstring).
        ValueError: malformed inputs (shapes, audio tokens in a completion).
    """
    thinker = unwrap_thinker(model)
    _check_supported(thinker)
    prompt_len = _check_inputs(thinker, input_ids, attention_mask, logits_to_keep,
                               input_features, feature_attention_mask, 1.0)
    backbone, text_cfg = thinker.model, thinker.config.get_text_config()
    # The stock positions for audio/text-only rows (get_rope_index, no image/video grid).
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.masked_fill(attention_mask == 0, 1)
    positions = positions.unsqueeze(0).expand(3, -1, -1)

    first, inverse = group_rows(input_ids[:, :prompt_len], attention_mask[:, :prompt_len],
                                input_features, feature_attention_mask)
    audio = {}
    if input_features is not None:
        audio = dict(input_features=input_features[first],
                     feature_attention_mask=feature_attention_mask[first])
    cache = DynamicCache(config=text_cfg)
    prompt_out = backbone(input_ids=input_ids[first, :prompt_len],
                          attention_mask=attention_mask[first, :prompt_len],
                          position_ids=positions[:, first, :prompt_len], cache=cache,
                          use_cache=True, **audio)
    if prompt_out.cache is None or prompt_out.cache.get_seq_length() != prompt_len:
        raise RuntimeError("the backbone returned no prompt cache; is gradient checkpointing or "
                           "use_cache=False forced on?")
    last_prompt = prompt_out.last_hidden_state[:, -1:].index_select(0, inverse)

    completion_out = backbone(input_ids=input_ids[:, prompt_len:], attention_mask=attention_mask,
                              position_ids=positions[:, :, prompt_len:],
                              cache=_expand_cache(prompt_out.cache, inverse, text_cfg),
                              use_cache=True)
    return torch.cat([last_prompt, completion_out.last_hidden_state[:, :-1]], dim=1)


def shared_prompt_logps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        logits_to_keep: int, input_features: torch.Tensor | None = None,
                        feature_attention_mask: torch.Tensor | None = None,
                        temperature: float = 1.0) -> torch.Tensor:
    """Per-token log-probabilities of the completion tokens, each distinct prompt run once.

    Equals the stock computation (the thinker's full forward on every row, logits
    ``[:, -logits_to_keep-1:-1] / temperature``, log-softmax, gather the completion ids) to
    float rounding, gradients included, at every completion column (padding columns too).

    Args:
        model: the Qwen2.5-Omni thinker or a PEFT model around it, in any mode.
        input_ids: ``[B, L]`` prompt ids (left-padded) followed by completion ids
            (right-padded), as TRL's ``prompt_completion_ids``.
        attention_mask: ``[B, L]``.
        logits_to_keep: completion width ``C``; the last ``C`` columns are the completion.
        input_features: ``[B, mels, T]`` one clip per row (batch-first), or None.
        feature_attention_mask: ``[B, T]``, or None.
        temperature: the sampling temperature the logits are divided by.

    Returns:
        ``[B, logits_to_keep]`` log-probabilities in the logits' dtype.

    Raises:
        NotImplementedError: an unsupported model or setting (see the module docstring).
        ValueError: malformed inputs (shapes, audio tokens in a completion, bad temperature).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    hidden = shared_prompt_hidden(model, input_ids, attention_mask, logits_to_keep,
                                  input_features, feature_attention_mask)
    logits = unwrap_thinker(model).lm_head(hidden)
    if temperature != 1.0:
        logits = logits / temperature
    return selected_logps(logits, input_ids[:, input_ids.shape[1] - int(logits_to_keep):])
