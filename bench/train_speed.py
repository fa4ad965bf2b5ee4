"""Training speed, stock path against ours in the same run: SFT, rollouts, one GRPO step.

    python bench/train_speed.py                 # CPU size: a narrow thinker, real vocabulary
    python bench/train_speed.py --size 7b       # the Qwen2.5-Omni-7B thinker shape, on a GPU
    OUT=/some/dir python bench/train_speed.py   # also writes train_speed.json there

It needs torch, transformers and peft only (no trl, hydra, omegaconf or librosa), so it runs as
it is on a bare GPU machine from the repository root (``PYTHONPATH=.``). Weights are random:
speed does not depend on them. The workload is docs/gpu_baseline.md's: each sample is 64 text
tokens, a 10 s clip (250 audio tokens between audio bos/eos) and 192 more text tokens; LoRA r=8 on
the language model's q/k/v/o plus ``audio_tower.proj`` (the ``lm_attn+audio_proj`` preset).

Rows, each as stock | ours | ratio:

- SFT: one LoRA fwd+bwd step of 8 (CPU: 2) such samples; tokens/s, TFLOP/s counted as 4N per
  token (N = language-model parameters; frozen base, no recomputation), peak memory. Stock is
  PEFT's forward with ``labels`` (full logits, float upcast); ours is the ``fast.sft`` loss.
- Rollout: P prompts x G samples x T new tokens, sampled; new tokens/s and ms per decode step.
  Stock is ``generate`` on the PEFT-wrapped model (what TRL does). Ours merges the LoRA for the
  rollout and encodes each clip once (``fast.grpo``), then samples with ``generate`` and with our
  decode loop (``fast/decode.py``: each prompt prefilled once; dynamic cache, static cache,
  and on CUDA static cache + ``torch.compile``).
- GRPO step (paper settings: beta > 0, num_iterations 1, so TRL runs the reference pass but no
  old-policy pass): generate / reward / reference log-probs / policy fwd+bwd, each timed. The
  phases are the calls TRL's GRPOTrainer makes, run on the bare model so that no trl is needed:
  PEFT ``generate``; decode + the paper's rewards; a no-grad forward with the adapter disabled
  and the LM head on the completion positions only (as TRL's fused head; the thinker's forward
  ignores ``logits_to_keep``); the policy forward with grad and the GRPO loss (ratio 1, group
  advantages) over micro-batches of the shuffled generation batch (TRL shuffles rows). Ours runs
  the trainer's default fast paths: the decode loop, shared-prompt scoring
  (``fast/prefix_share.py``: each prompt once for the rows of a micro-batch that share it;
  log-probs checked against the full forward's) and micro-batches that keep each prompt's rows
  together (``group_batches``; the trainer does that without gradient checkpointing).

With ``--size 7b`` on one H200 the stock rows reproduce docs/gpu_baseline.md (compare them first:
a mismatch means the card or the versions differ, not that we are faster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

AUDIO, AUDIO_BOS, AUDIO_EOS = 151646, 151647, 151648  # the hub's ids
LORA_TARGETS = (r"^(?!.*(audio_tower|visual)).*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|"
                r"o_proj)$|.*audio_tower\.proj$")

SIZES = {
    # The real thinker (8.93B parameters with the vision tower the checkpoint carries).
    "7b": dict(text={}, audio={}, vision=dict(depth=32, hidden_size=1280, intermediate_size=3420,
                                              num_heads=16, out_hidden_size=3584,
                                              fullatt_block_indexes=[7, 15, 23, 31]),
               sft_batch=8, rollout=(8, 8, 128), seconds=10.0),
    # Narrow and shallow, with the real 152k vocabulary (the logits are what chunked CE saves).
    "cpu": dict(text=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2),
                audio=dict(d_model=128, encoder_layers=2, encoder_attention_heads=2,
                           encoder_ffn_dim=256, output_dim=256),
                vision=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2,
                            out_hidden_size=256, fullatt_block_indexes=[0]),
                sft_batch=2, rollout=(2, 4, 16), seconds=10.0),
    # Seconds, for the test that keeps this script working (tests/test_bench.py).
    "smoke": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2),
                  audio=dict(d_model=32, encoder_layers=1, encoder_attention_heads=2,
                             encoder_ffn_dim=64, output_dim=64),
                  vision=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2,
                              out_hidden_size=64, fullatt_block_indexes=[0]),
                  sft_batch=2, rollout=(2, 2, 4), seconds=1.0),
}


# --------------------------------------------------------------------------------------------
# Model and inputs
# --------------------------------------------------------------------------------------------
def build_model(size: str, device: str, dtype: torch.dtype, attn: str, tokenizer=None):
    """A random thinker of ``size`` with LoRA (``lm_attn+audio_proj``), and N (LM params).

    ``tokenizer``: take the special-token ids from it (e.g. the tiny tokenizer, whose ids are
    not the hub's) instead of the hub's; the vocabulary stays the real 152k."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
    )

    s = SIZES[size]
    ids = {}
    if tokenizer is not None:
        tid = tokenizer.convert_tokens_to_ids
        ids = dict(audio_token_index=tid("<|AUDIO|>"), image_token_index=tid("<|IMAGE|>"),
                   video_token_index=tid("<|VIDEO|>"), audio_start_token_id=tid("<|audio_bos|>"),
                   audio_end_token_id=tid("<|audio_eos|>"))
    cfg = Qwen2_5OmniThinkerConfig(vision_config=s["vision"], **ids)
    for k, v in s["text"].items():
        setattr(cfg.text_config, k, v)
    for k, v in s["audio"].items():
        setattr(cfg.audio_config, k, v)
    if size != "7b":  # mrope sections must sum to head_dim / 2
        half = cfg.text_config.hidden_size // cfg.text_config.num_attention_heads // 2
        t = half // 4
        rope = dict(cfg.text_config.rope_parameters or {})
        rope["mrope_section"] = [t, (half - t) // 2, half - t - (half - t) // 2]
        cfg.text_config.rope_parameters = rope
    cfg.vision_start_token_id, cfg.vision_end_token_id = 151652, 151653
    if tokenizer is not None:
        cfg.vision_start_token_id = tokenizer.convert_tokens_to_ids("<|vision_bos|>")
        cfg.vision_end_token_id = tokenizer.convert_tokens_to_ids("<|vision_eos|>")
        cfg.text_config.pad_token_id = tokenizer.pad_token_id
        cfg.text_config.eos_token_id = tokenizer.eos_token_id
    cfg.text_config.use_cache = True
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
            cfg, dtype=dtype, attn_implementation=attn)
    n_lm = sum(p.numel() for name, p in model.named_parameters()
               if "audio_tower" not in name and "visual" not in name)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS)
    return get_peft_model(model, lora), n_lm


def make_batch(rows: int, seconds: float, before: int, after: int, device: str,
               dtype: torch.dtype, seed: int = 0, vocab: int = 151000) -> dict:
    """``rows`` samples: ``before`` text ids, one clip's placeholders, ``after`` text ids."""
    g = torch.Generator().manual_seed(seed)
    frames = int(seconds * 100)
    n_audio = ((frames - 1) // 2 + 1 - 2) // 2 + 1
    ids = torch.randint(0, vocab, (rows, before + n_audio + 2 + after), generator=g)
    ids[:, before] = AUDIO_BOS
    ids[:, before + 1: before + 1 + n_audio] = AUDIO
    ids[:, before + 1 + n_audio] = AUDIO_EOS
    feats = torch.randn(rows, 128, frames, generator=g)
    return dict(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                input_features=feats.to(device, dtype),
                feature_attention_mask=torch.ones(rows, frames, dtype=torch.long).to(device))


def repeat_rows(batch: dict, times: int) -> dict:
    """Each row ``times`` times in a row (a prompt's G samples), as TRL lays groups out."""
    return {k: v.repeat_interleave(times, dim=0) for k, v in batch.items()}


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, warm: int = 1, reps: int = 3) -> tuple[float, object]:
    """Median seconds of ``reps`` calls after ``warm`` untimed ones, and the last result."""
    out = None
    for _ in range(warm):
        out = fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], out


@contextlib.contextmanager
def peak_memory(device: str, into: dict):
    """Peak allocated GiB inside the block (CUDA only; ``None`` elsewhere)."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    yield
    into["peak_gib"] = (torch.cuda.max_memory_allocated() / 2**30
                        if device.startswith("cuda") else None)


# --------------------------------------------------------------------------------------------
# SFT
# --------------------------------------------------------------------------------------------
def sft_labels(batch: dict, before: int) -> torch.Tensor:
    """Loss on the text after the clip only, as the SFT collator masks the prompt."""
    labels = batch["input_ids"].clone()
    n_prompt = before + 2 + int((labels[0] == AUDIO).sum())
    labels[:, :n_prompt] = -100
    return labels


def trl_fused_loss(model, batch: dict, labels: torch.Tensor) -> torch.Tensor:
    """TRL's own fused LM head (``trl.kernels``), what trl 1.16's SFTTrainer runs by default:
    hidden states of labelled positions through the head in tiles. None when trl is absent."""
    from trl.kernels import ChunkedLogProbFunction
    from trl.kernels.chunked_logprob import _use_triton

    from audsemthinker.fast.lm_loss import capture_final_hidden, lm_head_of, shifted_targets

    with capture_final_hidden(model) as store:
        model(**{**batch, "use_cache": False})
    hidden, targets = shifted_targets(store["hidden"], labels)
    mask = targets != -100
    head = lm_head_of(model)
    compact = _use_triton(hidden.device)
    logp = ChunkedLogProbFunction.apply(
        hidden[mask] if compact else hidden.reshape(-1, hidden.size(-1)), head.weight, head.bias,
        targets[mask] if compact else targets.clamp(min=0).reshape(-1), 1.0, 4096, None, 1.0,
        ("log_probs",))[0]
    if not compact:
        logp = logp.view(mask.shape)[mask]
    return -logp.sum() / mask.sum()


def sft_step_row(pm, loss_fn, phase: str, path: str, tokens: int, n_lm: int, device: str,
                 reps: int) -> dict:
    """Time one fwd+bwd of ``loss_fn()`` (median of ``reps`` after a warm-up): a table row with
    tokens/s and TFLOP/s over ``tokens`` (4N per token), peak GiB and the loss."""
    def step():
        loss = loss_fn()
        loss.backward()
        pm.zero_grad(set_to_none=True)
        return loss.detach().item()
    mem: dict = {}
    with peak_memory(device, mem):
        t, loss = timed(step, device, warm=1, reps=reps)
    return dict(phase=phase, path=path, seconds=t, tok_per_s=tokens / t,
                tflops=4 * n_lm * tokens / t / 1e12, peak_gib=mem["peak_gib"], loss=loss)


def bench_sft(pm, n_lm: int, size: str, device: str, dtype, reps: int) -> list[dict]:
    """One LoRA fwd+bwd step: stock (full logits), TRL's fused head, ours (chunked CE)."""
    from audsemthinker.fast.lm_loss import chunked_lm_loss, stock_lm_loss

    s = SIZES[size]
    batch = make_batch(s["sft_batch"], s["seconds"], 64, 192, device, dtype)
    labels = sft_labels(batch, 64)
    tokens = batch["input_ids"].numel()
    pm.train()
    paths = {"stock: PEFT forward with labels (full logits)":
             lambda: stock_lm_loss(pm, batch, labels),
             "ours: chunked CE (fast.sft.chunked_ce)":
             lambda: chunked_lm_loss(pm, batch, labels, chunk_tokens=2048)}
    try:  # the kernel's backward imports trl.trainer.utils, which needs datasets
        import trl.kernels  # noqa: F401
        import trl.trainer.utils  # noqa: F401
        paths["TRL 1.16 fused LM head (trl.kernels)"] = lambda: trl_fused_loss(pm, batch, labels)
    except ImportError as e:
        print(f"trl not importable ({e}): the fused-LM-head row is left out", flush=True)
    rows = [sft_step_row(pm, loss_fn, "SFT step", name, tokens, n_lm, device, reps)
            for name, loss_fn in paths.items()]
    print(f"SFT losses (must agree): {[r['loss'] for r in rows]}", flush=True)
    return rows


def mixed_batch(rows: int, device: str, dtype: torch.dtype) -> tuple[dict, torch.Tensor]:
    """``rows`` samples of mixed length (2-10 s clips, 32-192 answer tokens), right-padded as
    the SFT collator pads them, and their labels (the text after the clip)."""
    parts = [make_batch(1, 2.0 + 8.0 * i / max(rows - 1, 1), 64, 32 + (160 * i * 7 // 3) % 161,
                        device, dtype, seed=10 + i) for i in range(rows)]
    width = max(p["input_ids"].size(1) for p in parts)
    frames = max(p["input_features"].size(2) for p in parts)

    def pad(x, size, value=0):
        return torch.nn.functional.pad(x, (0, size - x.size(-1)), value=value)
    batch = dict(input_ids=torch.cat([pad(p["input_ids"], width) for p in parts]),
                 attention_mask=torch.cat([pad(p["attention_mask"], width) for p in parts]),
                 input_features=torch.cat([pad(p["input_features"], frames) for p in parts]),
                 feature_attention_mask=torch.cat([pad(p["feature_attention_mask"], frames)
                                                   for p in parts]))
    labels = sft_labels(batch, 64).masked_fill(batch["attention_mask"] == 0, -100)
    return batch, labels


def bench_packed(pm, n_lm: int, size: str, device: str, reps: int, dtype) -> list[dict]:
    """One SFT step on a batch of mixed lengths: padded (stock) against packed into one row
    (``fast.sft.padding_free``), both with the chunked loss; tokens/s counts real tokens."""
    from audsemthinker.fast.lm_loss import chunked_lm_loss
    from audsemthinker.fast.packing import pack_batch

    batch, labels = mixed_batch(SIZES[size]["sft_batch"], device, dtype)
    packed = pack_batch({**batch, "labels": labels})
    packed_labels = packed.pop("labels")
    real = int(batch["attention_mask"].sum())
    pm.train()
    phase = f"SFT step, mixed lengths ({real} of {batch['input_ids'].numel()} tokens real)"
    rows = [sft_step_row(pm, lambda i=inputs, t=target: chunked_lm_loss(pm, i, t), phase, name,
                         real, n_lm, device, reps)
            for name, (inputs, target) in {
                "stock: padded batch": (batch, labels),
                "ours: packed, no padding (fast.sft.padding_free)": (packed, packed_labels),
            }.items()]
    print(f"padded / packed losses (must agree): {[r['loss'] for r in rows]}", flush=True)
    return rows


def bench_compiled(pm, n_lm: int, size: str, device: str, dtype, reps: int) -> list[dict]:
    """The SFT step with every decoder layer compiled (``fast.sft.compile_layers``) against the
    same loss eager. Run last: the layers stay compiled afterwards."""
    from audsemthinker.fast.compile import compile_decoder_layers
    from audsemthinker.fast.lm_loss import chunked_lm_loss

    s = SIZES[size]
    batch = make_batch(s["sft_batch"], s["seconds"], 64, 192, device, dtype)
    labels = sft_labels(batch, 64)
    tokens = batch["input_ids"].numel()
    pm.train()

    def loss_fn():
        return chunked_lm_loss(pm, batch, labels)
    rows = [sft_step_row(pm, loss_fn, "SFT step, compiled", "stock: eager layers (chunked CE)",
                         tokens, n_lm, device, reps)]
    t0 = time.perf_counter()
    compile_decoder_layers(pm)
    loss_fn().backward()
    pm.zero_grad(set_to_none=True)
    sync(device)
    print(f"compiled layers: first step {time.perf_counter() - t0:.0f} s", flush=True)
    rows.append(sft_step_row(pm, loss_fn, "SFT step, compiled",
                             "ours: compiled layers (fast.sft.compile_layers, chunked CE)",
                             tokens, n_lm, device, reps))
    print(f"eager / compiled losses (must agree): {[r['loss'] for r in rows]}", flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# Rollouts and the GRPO step
# --------------------------------------------------------------------------------------------
def sampling_config(new: int):
    """The paper's sampling (T 0.9, top-k 50), exactly ``new`` tokens: no EOS can stop a row."""
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=True, max_new_tokens=new, temperature=0.9, top_k=50,
                            top_p=1.0, pad_token_id=0, eos_token_id=None)


def generate(pm, prompt: dict, group: int, new: int, loop: dict | None = None) -> torch.Tensor:
    """Sampled completions, ``group`` per prompt, exactly ``new`` tokens each.

    ``loop``: None runs ``generate`` (``num_return_sequences``: what TRL does); else the keyword
    arguments of :func:`audsemthinker.fast.decode.sample_shared` (our decode loop: each prompt
    prefilled once), run on the prompts repeated ``group`` times as TRL lays them out."""
    cfg = sampling_config(new)
    with torch.no_grad():
        if loop is None:
            out = pm.generate(**prompt, generation_config=cfg, num_return_sequences=group)
        else:
            from audsemthinker.fast.decode import sample_shared

            out = sample_shared(pm, generation_config=cfg, **repeat_rows(prompt, group), **loop)
    return out[:, prompt["input_ids"].size(1):]


def shares_a_prompt(part: dict, new: int) -> bool:
    """Whether two rows of ``part`` have the same prompt and clip (else nothing to share)."""
    from audsemthinker.fast.prefix_share import group_rows

    _, inverse = group_rows(part["input_ids"][:, :-new], part["attention_mask"][:, :-new],
                            part["input_features"], part["feature_attention_mask"])
    return int(inverse.max()) + 1 < inverse.numel()


def completion_logps(pm, seqs: dict, new: int, micro: int, grad: bool,
                     shared: bool = False) -> torch.Tensor:
    """Per-token log-probs of the last ``new`` tokens, in micro-batches (as TRL scores them).

    ``shared``: :func:`audsemthinker.fast.prefix_share.shared_prompt_logps` on micro-batches
    where two rows share a prompt (each prompt once, the completions on its cache), the full
    forward elsewhere: what ``fast.grpo.shared_prompt`` does in the trainer."""
    from audsemthinker.fast.lm_loss import capture_final_hidden, lm_head_of
    from audsemthinker.fast.prefix_share import shared_prompt_logps

    out = []
    for i in range(0, seqs["input_ids"].size(0), micro):
        part = {k: v[i:i + micro] for k, v in seqs.items()}
        with torch.set_grad_enabled(grad):
            if shared and shares_a_prompt(part, new):
                out.append(shared_prompt_logps(
                    pm, part["input_ids"], part["attention_mask"], new,
                    input_features=part["input_features"],
                    feature_attention_mask=part["feature_attention_mask"]).float())
                continue
            # The LM head on the completion positions only, as TRL's fused head does (the
            # thinker's forward takes no logits_to_keep: it would be ignored).
            with capture_final_hidden(pm) as store:
                pm(**part, use_cache=False)
            logits = lm_head_of(pm)(store["hidden"][:, -(new + 1):-1]).float()
            ids = part["input_ids"][:, -new:]
            out.append(torch.gather(logits.log_softmax(-1), 2, ids[..., None])[..., 0])
    return torch.cat(out)


def scoring_times(pm, seqs: dict, adv: torch.Tensor, new: int, micro: int, shared: bool,
                  device: str, reps: int, group: int) -> tuple[float, float, float | None]:
    """Seconds of the reference pass (adapter off, no grad, rows in generation order) and of
    the policy fwd+bwd (GRPO loss at ratio 1) over micro-batches of the shuffled generation
    batch; and the policy pass's peak GiB. Stock shuffles rows (TRL); with ``shared`` the
    prompt groups of ``group`` rows are shuffled whole (``fast.grpo.group_batches``)."""
    rows = seqs["input_ids"].size(0)
    g = torch.Generator().manual_seed(0)
    if shared:
        order = (torch.randperm(rows // group, generator=g)[:, None] * group
                 + torch.arange(group)).flatten().to(adv.device)
    else:
        order = torch.randperm(rows, generator=g).to(adv.device)
    shuffled = {k: v[order] for k, v in seqs.items()}

    def reference():
        with pm.disable_adapter():
            return completion_logps(pm, seqs, new, micro, grad=False, shared=shared)

    def policy():
        pm.train()
        for i in range(0, rows, micro):
            part = {k: v[i:i + micro] for k, v in shuffled.items()}
            logp = completion_logps(pm, part, new, micro, grad=True, shared=shared)
            (-(adv[order][i:i + micro] * logp).sum() / (rows * new)).backward()
        pm.zero_grad(set_to_none=True)
    t_ref, _ = timed(reference, device, warm=0, reps=reps)
    mem: dict = {}
    with peak_memory(device, mem):
        t_pol, _ = timed(policy, device, warm=0, reps=reps)
    return t_ref, t_pol, mem["peak_gib"]


def rewards_of(completions: torch.Tensor, tokenizer, reward_funcs) -> list[float]:
    """Decode (ids folded into the small tokenizer's range) and score with the paper's rewards."""
    texts = tokenizer.batch_decode(completions.remainder(len(tokenizer)).tolist(),
                                   skip_special_tokens=True)
    cols = dict(answer=["A. low"] * len(texts), choices=[["low", "high"]] * len(texts),
                task=["pitch"] * len(texts))
    per = [f(texts, **cols) for f in reward_funcs]
    return [sum(v) for v in zip(*per)]


def loop_variants(compiled: bool) -> dict[str, dict | None]:
    """Rollout paths of ours, by row label: ``generate``, then our decode loop's variants.

    The GRPO step uses the dynamic-cache loop (the trainer's default), or ``generate`` where the
    loop cannot run (``rollout_rows``)."""
    out = {"merged LoRA + audio dedup, HF generate": None,
           "+ shared-prefill decode loop (fast default)": dict(),
           "+ decode loop, static cache": dict(static_cache=True)}
    if compiled:  # CUDA graphs (default on CUDA; on CPU compiling only costs time)
        out["+ decode loop, static cache + torch.compile"] = dict(static_cache=True, compile=True)
    return out


def rollout_rows(pm, prompt: dict, shape: tuple, snapshot, device: str, reps: int,
                 compiled: bool):
    """The rollout timed for each of our paths (LoRA merged, clips encoded once); returns the
    rows and the completions of the trainer's default path (None if the loop cannot run)."""
    from audsemthinker.fast.decode import decode_blocker
    from audsemthinker.fast.rollout import merged_lora

    P, G, T = shape
    rows, default = [], None
    for label, loop in loop_variants(compiled).items():
        if loop is not None:
            why = decode_blocker(pm, sampling_config(T))
            if why:
                print(f"decode loop left out: {why}", flush=True)
                break

        def rollout(loop=loop):
            pm.eval()
            with merged_lora(pm, snapshot):
                return generate(pm, prompt, G, T, loop)
        warm = 2 if loop and loop.get("compile") else 1  # compiling, then CUDA-graph capture
        t_gen, completions = timed(rollout, device, warm=warm, reps=reps)
        rows.append(dict(phase=f"rollout {P}x{G}x{T}", path=f"ours: {label}", seconds=t_gen,
                         new_tok_per_s=P * G * T / t_gen, ms_per_step=t_gen / T * 1000))
        if loop == {} or default is None:
            default = (t_gen, completions)
    return rows, default


@contextlib.contextmanager
def fast_paths(pm, on: bool):
    """Ours: each distinct clip encoded once, one encoding per clip per step (``fast.grpo``)."""
    from audsemthinker.fast.rollout import AudioEncodingCache, audio_dedup

    if not on:
        yield None
        return
    cache = AudioEncodingCache()
    with audio_dedup(pm, cache) as dedup:
        yield dict(cache=cache, dedup=dedup)


def grpo_arm(pm, on: bool, prompt: dict, shape: tuple, snapshot, tokenizer, funcs,
             device: str, reps: int, micro: int, compiled: bool) -> list[dict]:
    """One arm (stock or ours): the rollout timed alone, then a GRPO step phase by phase."""
    P, G, T = shape
    arm = "ours" if on else "stock"
    rows = []
    with fast_paths(pm, on) as fast:
        if on:
            rows, (t_gen, completions) = rollout_rows(pm, prompt, shape, snapshot, device, reps,
                                                      compiled)
        else:
            def rollout():
                pm.eval()
                return generate(pm, prompt, G, T)
            t_gen, completions = timed(rollout, device, warm=1, reps=reps)
            rows.append(dict(phase=f"rollout {P}x{G}x{T}", path=arm, seconds=t_gen,
                             new_tok_per_s=P * G * T / t_gen, ms_per_step=t_gen / T * 1000))
        seqs = repeat_rows(prompt, G)
        seqs["input_ids"] = torch.cat([seqs["input_ids"], completions], 1)
        seqs["attention_mask"] = torch.ones_like(seqs["input_ids"])
        t_rew, rewards = timed(lambda: rewards_of(completions, tokenizer, funcs), device,
                               warm=0, reps=reps)
        r = torch.tensor(rewards, device=device).view(P, G)
        adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1, 1)
        shared = on
        try:
            t_ref, t_pol, peak = scoring_times(pm, seqs, adv, T, micro, shared, device, reps, G)
        except NotImplementedError as e:  # e.g. an older transformers on a GPU box
            print(f"shared-prompt scoring left out: {e}", flush=True)
            shared = False
            t_ref, t_pol, peak = scoring_times(pm, seqs, adv, T, micro, False, device, reps, G)
        phases = {"generate": t_gen, "reward": t_rew, "reference log-probs": t_ref,
                  "policy fwd+bwd": t_pol}
        rows += step_rows(arm, phases, peak)
        if fast:  # what the trainer's fast paths did over this arm (rollouts and both passes)
            d = fast["dedup"]
            rows[-1].update(audio_rows_in=d.rows_in, audio_rows_encoded=d.rows_encoded,
                            audio_calls=d.calls, audio_cache_hits=fast["cache"].hits)
            print(f"ours: audio tower encoded {d.rows_encoded} of {d.rows_in} rows "
                  f"({d.calls} calls), cache hits {fast['cache'].hits}", flush=True)
        if shared:  # scoring each prompt once must change no log-prob
            full = completion_logps(pm, seqs, T, micro, grad=False)
            once = completion_logps(pm, seqs, T, micro, grad=False, shared=True)
            rows[-1]["max_logp_diff"] = float((full - once).abs().max())
            print("shared-prompt scoring: max |log-prob difference| against the full forward "
                  f"{rows[-1]['max_logp_diff']:.2e}", flush=True)
    return rows


def step_rows(path: str, phases: dict, peak) -> list[dict]:
    """One row per GRPO step phase plus the whole step (its peak memory on that row)."""
    rows = [dict(phase=f"GRPO step: {k}", path=path, seconds=t) for k, t in phases.items()]
    return rows + [dict(phase="GRPO step: whole", path=path, seconds=sum(phases.values()),
                        peak_gib=peak)]


def bench_grpo(pm, size: str, device: str, dtype, reps: int, micro: int,
               compiled: bool) -> list[dict]:
    """Rollout alone, then one GRPO step split into its phases; stock vs ours."""
    from audsemthinker.fast.rollout import LoraSnapshot
    from audsemthinker.model.tiny import build_tiny_tokenizer
    from audsemthinker.rewards import build_rewards

    shape = SIZES[size]["rollout"]
    prompt = make_batch(shape[0], SIZES[size]["seconds"], 64, 32, device, dtype, seed=1)
    funcs, _ = build_rewards([
        dict(name="accuracy", mode="option"), dict(name="format", variant="semantic", value=0.5),
        dict(name="length", shape="linear", budget=25, alpha=0.1, delta=0.5)])
    snapshot = LoraSnapshot(pm)
    args = (prompt, shape, snapshot, build_tiny_tokenizer(), funcs, device, reps, micro,
            compiled)
    return grpo_arm(pm, False, *args) + grpo_arm(pm, True, *args)


# --------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------
METRICS = (("tok_per_s", "tokens/s", True), ("tflops", "TFLOP/s (4N)", True),
           ("new_tok_per_s", "new tokens/s", True), ("ms_per_step", "ms / decode step", False),
           ("seconds", "seconds", False), ("peak_gib", "peak GiB", False))


def table(rows: list[dict]) -> str:
    """Markdown: one line per phase and metric, stock | ours | ratio (>1 means ours is better).
    SFT lists every loss path against the stock one."""
    lines = ["| phase | metric | stock | ours | ratio |", "|---|---|---|---|---|"]
    phases = list(dict.fromkeys(r["phase"] for r in rows))
    for phase in phases:
        group = [r for r in rows if r["phase"] == phase]
        stock = next(r for r in group if r["path"].startswith("stock"))
        for other in (r for r in group if r is not stock):
            label = phase if other["path"] == "ours" else f"{phase}: {other['path']}"
            for key, name, higher in METRICS:
                a, b = stock.get(key), other.get(key)
                if a is None or b is None:
                    continue
                ratio = (b / a if higher else a / b) if a and b else float("nan")
                lines.append(f"| {label} | {name} | {a:,.3g} | {b:,.3g} | {ratio:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default=None,
                    help="7b on CUDA, cpu otherwise (default)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (median)")
    ap.add_argument("--micro", type=int, default=8, help="rows per log-prob micro-batch")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--only", choices=("sft", "grpo"), default=None)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="the compiled rows (SFT layers; static-cache decode): default on CUDA")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = args.size or ("7b" if device == "cuda" else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    reps = args.reps or (3 if device == "cuda" else 2)
    if device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    import peft
    import transformers

    head = (f"torch {torch.__version__}, transformers {transformers.__version__}, peft "
            f"{peft.__version__}, {torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}"
            f", size {size}, {dtype}, attention {args.attn}")
    print(head, flush=True)
    t0 = time.perf_counter()
    pm, n_lm = build_model(size, device, dtype, args.attn)
    print(f"built in {time.perf_counter() - t0:.0f} s; LM parameters N = {n_lm / 1e9:.3f}B",
          flush=True)
    rows = []
    compiled = args.compile if args.compile is not None else device == "cuda"
    if args.only in (None, "sft"):
        rows += bench_sft(pm, n_lm, size, device, dtype, reps)
        rows += bench_packed(pm, n_lm, size, device, reps, dtype)
    if args.only in (None, "grpo"):
        rows += bench_grpo(pm, size, device, dtype, reps, args.micro, compiled)
    if args.only in (None, "sft") and compiled:  # last: the layers stay compiled
        rows += bench_compiled(pm, n_lm, size, device, dtype, reps)
    text = table(rows)
    print("\n" + head + "\n\n" + text, flush=True)
    result = dict(header=head, rows=rows, table=text)
    out = os.environ.get("OUT")
    if out:
        path = Path(out) / "train_speed.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(path)
    return result


if __name__ == "__main__":
    main()
