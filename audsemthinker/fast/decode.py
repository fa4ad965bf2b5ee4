"""Sample GRPO rollouts with each distinct prompt prefilled once.

A GRPO rollout samples G completions per prompt (~316 prompt tokens: text + 250 audio
placeholders). ``model.generate`` on the G copies runs the audio tower and the prompt G times and
pays transformers' per-step Python overhead. :func:`sample_shared` is a drop-in for the call TRL
1.16 makes (``model.generate(input_ids=, attention_mask=, input_features=,
feature_attention_mask=, generation_config=)``) that

1. prefills each distinct (prompt ids, mask, clip) once, copies its KV cache to its G rows and
   takes the first token from the last prompt hidden state (only that position meets
   ``lm_head``);
2. decodes in its own loop with explicit positions, optionally into a pre-allocated
   ``StaticCache`` so the one-token step has fixed shapes and can be ``torch.compile``d
   (CUDA graphs with ``mode="reduce-overhead"``).

Why the tokens equal ``generate``'s (checked against transformers 5.24):

- positions: with no image/video grid the thinker's mrope positions of a row are
  ``cumsum(mask) - 1`` in all 3 dims (see :mod:`audsemthinker.fast.prefix_share`); the token fed
  at decode step ``t`` sits at ``len(prompt) + t``. We pass them explicitly to the backbone
  (``thinker.model``), so its stateful ``rope_deltas`` is neither read nor written;
- sampling: the generation config is completed from the model's own defaults by the same
  method ``generate`` uses, the logits processors are transformers' public classes in the order
  ``GenerationMixin._get_logits_processor`` applies them, and tokens come from
  ``softmax`` + ``torch.multinomial`` (or ``argmax``) over all rows, finished ones included, as
  ``GenerationMixin._sample`` does: with no shared prompt, the same seed gives the same tokens;
- finished rows get ``pad_token_id``; the loop stops when every row has emitted an EOS or at
  ``max_new_tokens``.

Anything else ``generate`` can do is refused by :func:`decode_blocker` rather than approximated.
Imports torch / transformers only (no TRL): the GPU benchmark runs it without TRL.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessorList,
    MinPLogitsWarper,
    StaticCache,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation import GenerationMode

from audsemthinker.fast.prefix_share import (
    _check_supported,
    _expand_cache,
    check_media,
    group_rows,
)
from audsemthinker.model.unwrap import unwrap_thinker

# Config fields whose processors or modes the loop does not implement, with the value that
# means "off" (None also means off for every one of them).
_OFF = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
        "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "sequence_bias": None,
        "guidance_scale": 1.0, "min_length": 0, "min_new_tokens": 0, "forced_bos_token_id": None,
        "forced_eos_token_id": None, "remove_invalid_values": False,
        "exponential_decay_length_penalty": None, "begin_suppress_tokens": None, "top_h": None,
        "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "watermarking_config": None,
        "renormalize_logits": False, "num_return_sequences": 1, "max_time": None,
        "stop_strings": None, "return_dict_in_generate": False, "output_scores": False,
        "output_logits": False, "output_attentions": False, "output_hidden_states": False}

_COMPILED: dict[tuple[str | None, str | None], object] = {}  # (mode, backend) -> compiled step


def _resolved_config(thinker: nn.Module, generation_config: GenerationConfig) -> GenerationConfig:
    """``generation_config`` completed as ``generate`` completes it (model defaults, then global).

    Calls the model's own ``_prepare_generation_config`` so unset fields (``top_k`` -> 50, ...)
    take exactly the values ``generate`` would use.
    """
    return thinker._prepare_generation_config(generation_config)[0]  # deep-copies


def decode_blocker(model: nn.Module, generation_config: GenerationConfig) -> str | None:
    """Why :func:`sample_shared` cannot reproduce ``model.generate`` here, or None if it can.

    Args:
        model: the policy as TRL holds it (the thinker or a PEFT model around it).
        generation_config: the config TRL passes to ``generate``.

    Returns:
        A one-line reason (fall back to ``generate``), or None.
    """
    try:
        thinker = unwrap_thinker(model)
        _check_supported(thinker)
        cfg = _resolved_config(thinker, generation_config)
    except (NotImplementedError, AttributeError, TypeError) as err:
        return str(err)
    mode = cfg.get_generation_mode()
    if mode not in (GenerationMode.SAMPLE, GenerationMode.GREEDY_SEARCH):
        return f"generation mode {mode.value} is not implemented (only sampling and greedy)"
    for name, off in _OFF.items():
        value = getattr(cfg, name, None)
        if value is not None and value != off:
            return f"generation_config.{name}={value!r} is not implemented (must be {off!r})"
    if cfg.max_new_tokens is None and cfg.max_length is None:
        return "neither max_new_tokens nor max_length is set"
    if cfg.eos_token_id is None and cfg.pad_token_id is None:
        return "neither eos_token_id nor pad_token_id is set"
    return None


def _processors(cfg: GenerationConfig, device: torch.device) -> LogitsProcessorList:
    """The processors ``_get_logits_processor`` builds for a config that passed the blocker."""
    out = LogitsProcessorList()
    if cfg.suppress_tokens is not None:
        out.append(SuppressTokensLogitsProcessor(cfg.suppress_tokens, device=device))
    if cfg.do_sample:
        if cfg.temperature is not None and cfg.temperature != 1.0:
            out.append(TemperatureLogitsWarper(cfg.temperature))
        if cfg.top_k is not None and cfg.top_k != 0:
            out.append(TopKLogitsWarper(top_k=cfg.top_k, min_tokens_to_keep=1))
        if cfg.top_p is not None and cfg.top_p < 1.0:
            out.append(TopPLogitsWarper(top_p=cfg.top_p, min_tokens_to_keep=1))
        if cfg.min_p is not None:
            out.append(MinPLogitsWarper(min_p=cfg.min_p, min_tokens_to_keep=1))
    return out


def _check_inputs(thinker, input_ids, attention_mask, input_features,
                  feature_attention_mask) -> None:
    if input_ids.ndim != 2 or attention_mask is None or attention_mask.shape != input_ids.shape:
        raise ValueError(f"input_ids must be [B, P] with an attention_mask of the same shape, got "
                         f"{tuple(input_ids.shape)} and "
                         f"{None if attention_mask is None else tuple(attention_mask.shape)}")
    if not bool(attention_mask[:, -1].bool().all()):
        raise ValueError("prompts must be left-padded (the last column of every row is a token)")
    check_media(thinker, input_ids, input_features, feature_attention_mask)


def _one_token_step(backbone: nn.Module, lm_head: nn.Module, ids: torch.Tensor,
                    positions: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
    """Float32 next-token logits ``[B, V]`` for one new token per row (the compiled unit)."""
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                      use_cache=True).last_hidden_state
    return lm_head(hidden[:, -1]).float()


def _compiled_step(backend: str | None):
    """``_one_token_step`` compiled once per process and backend (dynamo guards per model)."""
    mode = "reduce-overhead" if backend is None else None
    key = (mode, backend)
    if key not in _COMPILED:
        kwargs = {"mode": mode} if backend is None else {"backend": backend}
        _COMPILED[key] = torch.compile(_one_token_step, **kwargs)
    return _COMPILED[key]


def _prefill(thinker, input_ids, attention_mask, positions, input_features,
             feature_attention_mask, static_len: int | None):
    """Run each distinct prompt once; return (``[B, V]`` float32 logits, cache over B rows)."""
    text_cfg = thinker.config.get_text_config()
    first, inverse = group_rows(input_ids, attention_mask, input_features, feature_attention_mask)
    audio = {}
    if input_features is not None:
        audio = dict(input_features=input_features[first],
                     feature_attention_mask=feature_attention_mask[first])
    out = thinker.model(input_ids=input_ids[first], attention_mask=attention_mask[first],
                        position_ids=positions[:, first], cache=DynamicCache(config=text_cfg),
                        use_cache=True, **audio)
    if out.cache is None or out.cache.get_seq_length() != input_ids.shape[1]:
        raise RuntimeError("the backbone returned no prompt cache; is use_cache=False forced on?")
    logits = thinker.lm_head(out.last_hidden_state[:, -1]).float().index_select(0, inverse)
    if static_len is None:
        return logits, _expand_cache(out.cache, inverse, text_cfg)
    cache = StaticCache(config=text_cfg, max_cache_len=static_len)
    for i, layer in enumerate(out.cache.layers):  # lazily allocates [B, heads, static_len, dim]
        cache.update(layer.keys.index_select(0, inverse), layer.values.index_select(0, inverse), i)
        layer.keys = layer.values = None  # free the distinct-prompt copy as we go
    return logits, cache


# Over 60 lines: prefill, then one decode loop whose state splitting would only pass around.
def sample_shared(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  generation_config: GenerationConfig, input_features: torch.Tensor | None = None,
                  feature_attention_mask: torch.Tensor | None = None, static_cache: bool = False,
                  compile: bool = False, compile_backend: str | None = None,
                  return_logprobs: bool = False):
    """``model.generate(...)`` for left-padded audio/text prompts, each distinct one prefilled once.

    Args:
        model: the Qwen2.5-Omni thinker or a PEFT model around it (the adapter stays in effect).
            Run in eval mode without gradients; its ``training`` flag is restored.
        input_ids: ``[B, P]`` left-padded prompt ids (rows of a prompt need not be adjacent).
        attention_mask: ``[B, P]``.
        generation_config: as for ``generate``; must pass :func:`decode_blocker`.
        input_features: ``[B, mels, T]`` one clip per row (batch-first), or None.
        feature_attention_mask: ``[B, T]``, or None.
        static_cache: decode into a ``StaticCache`` of ``P + max_new_tokens`` columns (fixed
            shapes per step).
        compile: ``torch.compile`` the one-token step (needs ``static_cache``); compiled once per
            process and reused across calls.
        compile_backend: None compiles with ``mode="reduce-overhead"`` (CUDA graphs on GPU);
            a backend name (``"eager"``, ``"aot_eager"``) is for cheap checks on CPU.
        return_logprobs: also return, per new token, its log-probability under the distribution
            it was drawn from (the processed scores: temperature, top-k/p, suppressed tokens),
            in float32: what the sampler believes, for the sampler/trainer mismatch
            (:mod:`audsemthinker.train.sampler_mismatch`).

    Returns:
        ``[B, P + n]`` prompt columns then ``n <= max_new_tokens`` new tokens; a row holds
        ``pad_token_id`` after its first EOS; ``n`` stops at the step where every row is done.
        With ``return_logprobs``: ``(sequences, [B, n] log-probs)`` (a finished row's entries
        after its EOS are meaningless).

    Raises:
        NotImplementedError: a setting :func:`decode_blocker` refuses, images or video.
        ValueError: malformed inputs (shapes, right padding, features not batch-first), or
            ``compile`` without ``static_cache``.
    """
    reason = decode_blocker(model, generation_config)
    if reason is not None:
        raise NotImplementedError(f"sample_shared cannot reproduce generate: {reason}")
    if compile and not static_cache:
        raise ValueError("compile=True needs static_cache=True (fixed shapes per step)")
    thinker = unwrap_thinker(model)
    _check_inputs(thinker, input_ids, attention_mask, input_features, feature_attention_mask)
    cfg = _resolved_config(thinker, generation_config)
    batch, width = input_ids.shape
    device = input_ids.device
    max_new = cfg.max_new_tokens if cfg.max_new_tokens is not None else cfg.max_length - width
    if max_new < 1:
        raise ValueError(f"nothing to generate: max_length {cfg.max_length} <= prompt width "
                         f"{width}")
    eos = cfg.eos_token_id
    eos = None if eos is None else torch.tensor(eos, device=device).reshape(-1)
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else int(eos[0])
    processors = _processors(cfg, device)

    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1).unsqueeze(0).expand(3, -1, -1)
    next_position = mask.sum(-1)  # [B]: the position of each row's first new token
    out = torch.full((batch, width + max_new), pad, dtype=input_ids.dtype, device=device)
    out[:, :width] = input_ids
    full_mask = torch.cat([mask, mask.new_ones(batch, max_new)], dim=1)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    step = _compiled_step(compile_backend) if compile else _one_token_step
    logprobs = []

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits, cache = _prefill(thinker, input_ids, mask, positions, input_features,
                                     feature_attention_mask,
                                     width + max_new if static_cache else None)
            length = width
            while True:
                scores = processors(out[:, :length], logits)
                if cfg.do_sample:
                    tokens = torch.multinomial(scores.softmax(-1), num_samples=1).squeeze(1)
                else:
                    tokens = scores.argmax(-1)
                if return_logprobs:
                    logprobs.append(scores.log_softmax(-1).gather(1, tokens[:, None]).squeeze(1))
                if eos is not None:
                    tokens = torch.where(unfinished, tokens, torch.full_like(tokens, pad))
                    unfinished &= ~torch.isin(tokens, eos)
                out[:, length] = tokens
                length += 1
                if length == width + max_new or not bool(unfinished.any()):
                    break
                pos = (next_position + (length - width - 1)).view(1, batch, 1).expand(3, -1, -1)
                step_mask = full_mask if static_cache else full_mask[:, :length]
                logits = step(thinker.model, thinker.lm_head, tokens[:, None], pos,
                              step_mask, cache)
                if compile:
                    logits = logits.clone()  # CUDA-graph outputs are overwritten by the next replay
    finally:
        model.train(was_training)
    if return_logprobs:
        return out[:, :length], torch.stack(logprobs, dim=1)
    return out[:, :length]
