"""The fast GRPO paths give what the stock paths give.

- merged-LoRA generation: same greedy tokens as the PEFT-wrapped model, and the base weights are
  bit-identical afterwards, however often it runs (also in bf16, where unmerging drifts);
- audio dedup: one tower encoding per distinct clip, same logits and gradients as the stock
  forward;
- audio cache: a later pass of the step reuses the encodings, never for a different clip, and
  never while a tower parameter trains;
- a short AudioGRPOTrainer run: fast=default and fast=stock give the same step-1 rewards and loss.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from audsemthinker.fast.rollout import (
    AudioEncodingCache,
    LoraSnapshot,
    audio_dedup,
    audio_model,
    install_audio_dedup,
    lora_layers,
    merged_lora,
    remove_audio_dedup,
    same_tower,
)
from audsemthinker.schemas import GRPOFast

SR = 16000
PROMPT = "<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|>item {}<|im_end|>\n" \
         "<|im_start|>assistant\n"


def _clip(hz: float, seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(int(SR * seconds)) / SR)).astype(np.float32)


CLIPS = [_clip(220, 0.5), _clip(440, 0.8), _clip(330, 0.3), _clip(660, 0.5)]


def _batch(processor, which: list[int]):
    """One row per entry of ``which``: clip ``which[i]``, text naming row ``i``."""
    return processor(text=[PROMPT.format(i) for i in range(len(which))],
                     audio=[CLIPS[k] for k in which], return_tensors="pt", padding=True)


def _model(model_dir, preset: str | None, std: float = 0.5, dtype: str = "float32"):
    """The tiny thinker, with a LoRA preset whose B matrices are random (so merging matters)."""
    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.lora import LoraSettings, apply_lora

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_thinker(ModelConfig(name_or_path=str(model_dir), dtype=dtype))
    if preset is None:
        return model
    model = apply_lora(model, LoraSettings(preset=preset, r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std)
    return model


def _suppress(processor) -> list[int]:
    from audsemthinker.model.tokens import PLACEHOLDER_TOKENS

    return [processor.tokenizer.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS]


def _tower_rows(model) -> list[int]:
    """Rows handed to the audio tower per call, recorded from now on."""
    rows: list[int] = []
    audio_model(model).audio_tower.register_forward_pre_hook(
        lambda _m, _a, kw: rows.append(int(kw["feature_lens"].numel())), with_kwargs=True)
    return rows


# --------------------------------------------------------------------------------------------
# merged_lora
# --------------------------------------------------------------------------------------------
def test_merged_generation_equals_adapter_generation_and_restores_the_base(tiny_full_dir,
                                                                           tiny_processor):
    model = _model(tiny_full_dir, "lm_attn").eval()
    enc = _batch(tiny_processor, [0, 1, 0])
    gen = dict(max_new_tokens=8, do_sample=False, suppress_tokens=_suppress(tiny_processor))
    with_adapter = model.generate(**enc, **gen)
    with model.disable_adapter():
        without = model.generate(**enc, **gen)
    assert not torch.equal(with_adapter, without)  # the adapter changes the tokens
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    snapshot = LoraSnapshot(model)
    layers = lora_layers(model)
    assert len(snapshot) == len(layers) == 8  # q/k/v/o in each of the 2 layers
    for _ in range(3):
        with merged_lora(model, snapshot):
            assert all(layer.merged for layer in layers)
            assert not torch.equal(layers[0].get_base_layer().weight, snapshot.saved[0][0])
            assert torch.equal(model.generate(**enc, **gen), with_adapter)
        assert not any(layer.merged for layer in layers)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_bf16_base_is_restored_bit_exactly_where_unmerge_drifts(tiny_full_dir):
    model = _model(tiny_full_dir, "lm_attn", std=0.3, dtype="bfloat16")
    layer = lora_layers(model)[0]
    base = layer.get_base_layer().weight
    start = base.detach().clone()
    layer.merge()
    layer.unmerge()
    assert not torch.equal(base, start)  # PEFT's W + BA - BA in bf16: why we snapshot
    with torch.no_grad():
        base.copy_(start)
    snapshot = LoraSnapshot(model)
    for _ in range(5):
        with merged_lora(model, snapshot):
            pass
    assert torch.equal(base, start)


def test_merged_lora_errors_restore_and_full_ft_is_untouched(tiny_full_dir):
    model = _model(tiny_full_dir, "lm_attn")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"), merged_lora(model):
        raise RuntimeError("boom")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    lora_layers(model)[0].merge()
    with pytest.raises(ValueError, match="already merged"), merged_lora(model):
        pass
    other = _model(tiny_full_dir, "lm_attn")
    with pytest.raises(ValueError, match="other LoRA layers"), \
            merged_lora(other, LoraSnapshot(_model(tiny_full_dir, "lm_attn"))):
        pass
    full = _model(tiny_full_dir, None)
    state = {n: p.detach().clone() for n, p in full.named_parameters()}
    with merged_lora(full) as inside:
        assert inside is full
    assert all(torch.equal(p, state[n]) for n, p in full.named_parameters())


# --------------------------------------------------------------------------------------------
# audio dedup
# --------------------------------------------------------------------------------------------
def _loss_and_grads(model, enc):
    model.zero_grad()
    logits = model(**enc).logits
    logits.float().square().mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                             if p.requires_grad}


def test_dedup_encodes_each_clip_once_with_the_stock_logits_and_gradients(tiny_full_dir,
                                                                          tiny_processor):
    model = _model(tiny_full_dir, "lm_attn+audio_proj")  # tower proj trains: grads through it
    enc = _batch(tiny_processor, [0, 1, 0, 0, 1])
    rows = _tower_rows(model)
    stock_logits, stock_grads = _loss_and_grads(model, enc)
    assert rows == [5]
    assert any("audio_tower" in n for n in stock_grads)
    with audio_dedup(model) as wrapper:
        logits, grads = _loss_and_grads(model, enc)
    assert rows == [5, 2]  # two distinct clips
    assert (wrapper.calls, wrapper.rows_in, wrapper.rows_encoded) == (1, 5, 2)
    torch.testing.assert_close(logits, stock_logits, atol=1e-6, rtol=1e-5)
    assert grads.keys() == stock_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], stock_grads[name], atol=1e-6, rtol=1e-5)
    model(**enc)  # removed after the block: stock again
    assert rows[-1] == 5


def test_dedup_tells_clips_apart_by_every_bit(tiny_full_dir, tiny_processor):
    model = _model(tiny_full_dir, "lm_attn")
    enc = _batch(tiny_processor, [0, 0, 0])
    feats = enc["input_features"].clone()
    feats[1, 5, 3] = torch.nextafter(feats[1, 5, 3], torch.tensor(1e9))  # one ulp apart
    feats[2, :, -3:] = 7.0  # padding frames differ, but the mask hides them: same clip
    enc["feature_attention_mask"][2, -3:] = 0
    with audio_dedup(model) as wrapper:
        out = wrapper(feats, enc["feature_attention_mask"], return_dict=True)
        stock = wrapper.func(wrapper.inner, feats, enc["feature_attention_mask"],
                             return_dict=True)
    assert wrapper.rows_encoded == 3  # rows 0 and 1 differ by one ulp; row 2 has its own mask
    torch.testing.assert_close(out.last_hidden_state, stock.last_hidden_state, atol=1e-6,
                               rtol=1e-5)
    assert out.pooler_output is out.last_hidden_state


# --------------------------------------------------------------------------------------------
# audio cache
# --------------------------------------------------------------------------------------------
def test_cache_serves_later_passes_without_the_tower(tiny_full_dir, tiny_processor):
    model = _model(tiny_full_dir, "lm_attn")  # tower frozen
    full = _batch(tiny_processor, [0, 3, 1, 3])
    part = _batch(tiny_processor, [3, 0])  # same-length clips, other order, narrower padding
    stock_logits, stock_grads = _loss_and_grads(model, part)
    rows = _tower_rows(model)
    cache = AudioEncodingCache()
    install_audio_dedup(model, cache)
    with torch.no_grad():  # the step's first pass (generation)
        model(**full)
    assert rows == [3] and len(cache) == 3
    logits, grads = _loss_and_grads(model, part)  # a later pass: no tower call
    assert rows == [3] and (cache.hits, cache.misses) == (2, 3)
    torch.testing.assert_close(logits, stock_logits, atol=1e-6, rtol=1e-5)
    for name in grads:
        torch.testing.assert_close(grads[name], stock_grads[name], atol=1e-6, rtol=1e-5)
    model(**_batch(tiny_processor, [2, 0]))  # a new clip: only it is encoded
    assert rows == [3, 1] and len(cache) == 4
    cache.clear()
    model(**part)
    assert rows == [3, 1, 2]
    remove_audio_dedup(model)


def test_cache_is_bypassed_while_a_tower_parameter_trains(tiny_full_dir, tiny_processor,
                                                          caplog):
    model = _model(tiny_full_dir, "lm_attn+audio_proj")
    enc = _batch(tiny_processor, [0, 1, 0])
    rows = _tower_rows(model)
    cache = AudioEncodingCache()
    with caplog.at_level(logging.WARNING, logger="audsemthinker.fast.rollout"), \
            audio_dedup(model, cache):
        model(**enc)
        model(**enc)
    assert rows == [2, 2] and len(cache) == 0  # dedup still on, nothing cached
    assert sum("audio_cache off" in r.message for r in caplog.records) == 1


def test_same_tower_compares_every_tensor(tiny_full_dir):
    a, b = _model(tiny_full_dir, None), _model(tiny_full_dir, None)
    assert same_tower(a, b)
    with torch.no_grad():
        audio_model(b).audio_tower.proj.bias[0] += 1e-6
    assert not same_tower(a, b)


# --------------------------------------------------------------------------------------------
# AudioGRPOTrainer: fast=default and fast=stock agree
# --------------------------------------------------------------------------------------------
def _run(tmp_path, model_dir, processor, fast: GRPOFast, **args_kw):
    from datasets import Dataset
    from test_grpo_audio import _args, _reward, tone_rows

    from audsemthinker.train.grpo_fast_trainer import FastAudioGRPOTrainer as AudioGRPOTrainer

    tmp_path.mkdir()
    rows = tone_rows(tmp_path, 2)
    # beta > 0, num_iterations 2: one generation batch, scored by an old-policy and a reference
    # pass, then two policy micro-batches
    args = _args(tmp_path, max_steps=1, logging_steps=1, **args_kw)
    trainer = AudioGRPOTrainer(model=_model(model_dir, "lm_attn", std=0.3),
                               reward_funcs=[_reward], args=args,
                               train_dataset=Dataset.from_list(rows), processing_class=processor,
                               fast=fast)
    trainer.train()
    return trainer, next(r for r in trainer.state.log_history if "loss" in r)


def test_fast_and_stock_trainer_give_the_same_first_step(tmp_path, tiny_full_dir,
                                                         tiny_processor):
    fast, logs = _run(tmp_path / "fast", tiny_full_dir, tiny_processor, GRPOFast())
    stock, stock_logs = _run(tmp_path / "stock", tiny_full_dir, tiny_processor,
                             GRPOFast(merged_rollouts=False, audio_dedup=False,
                                      audio_cache=False, decode_loop=False,
                                      shared_prompt=False, group_batches=False))
    assert fast._lora_snapshot is not None and stock._lora_snapshot is None
    assert fast.decode_loop_stats["calls"] > 0 and stock.decode_loop_stats["calls"] == 0
    assert stock.audio_dedup is None
    assert fast.audio_dedup.rows_encoded < fast.audio_dedup.rows_in
    assert fast.audio_cache.hits > 0
    # Scored with each prompt run once: the old-policy and reference passes (4 rows, 2 prompts)
    # and, as micro-batches hold one prompt's 2 rows (group_batches), the step's 2 policy passes.
    assert fast.fast_off == {}
    assert fast.shared_prompt_stats == {"passes": 4, "rows": 12, "prompt_forwards": 6}
    assert stock.shared_prompt_stats["passes"] == 0
    for key in ("reward", "rewards/_reward/mean", "reward_std", "loss", "kl", "grad_norm",
                "entropy"):
        assert logs[key] == pytest.approx(stock_logs[key], rel=1e-4, abs=1e-6), key
    assert logs["completions/mean_length"] == stock_logs["completions/mean_length"]


def test_shared_prompt_scoring_leaves_the_checkpointed_policy_pass_to_trl(
        tmp_path, tiny_full_dir, tiny_processor, caplog):
    with caplog.at_level(logging.INFO, logger="audsemthinker.fast.grpo_switches"):
        trainer, _ = _run(tmp_path / "gc", tiny_full_dir, tiny_processor, GRPOFast(),
                          gradient_checkpointing=True)
    # old-policy + reference passes shared (no gradients), the policy passes not
    assert trainer.shared_prompt_stats == {"passes": 2, "rows": 8, "prompt_forwards": 4}
    reasons = [r.message for r in caplog.records if "fast.grpo.shared_prompt" in r.message]
    assert len(reasons) == 1 and "gradient checkpointing" in reasons[0]
    # and the micro-batches keep TRL's row shuffle: grouping them would not help
    assert "gradient checkpointing" in trainer.fast_off["group_batches"]


@pytest.mark.parametrize("choice, on", [("default", True), ("stock", False)])
def test_the_fast_config_group_reaches_the_trainer(tmp_path, tiny_full_dir, choice, on):
    from test_sft import build_synthetic, compose_sft

    from audsemthinker.train.grpo import build_grpo_trainer

    data = build_synthetic(tmp_path / "data", n_train=4, n_test=0)
    cfg = compose_sft(tmp_path, tiny_full_dir, data, [f"fast={choice}", "reward=simple",
                                                      "lora=lm_attn"])
    trainer, _ = build_grpo_trainer(cfg)
    assert trainer.fast == GRPOFast(merged_rollouts=on, audio_dedup=on, audio_cache=on,
                                    decode_loop=on, shared_prompt=on, group_batches=on)
    assert (trainer.audio_dedup is not None, trainer.audio_cache is not None) == (on, on)
    assert trainer.fast_off == {}


@pytest.mark.parametrize("grpo, ok", [
    (dict(compile_decode=True), False),  # compiled step needs the static cache
    (dict(compile_decode=True, static_cache=True, decode_loop=False), False),
    (dict(compile_decode=True, static_cache=True), True),
    (dict(static_cache=True), True)])
def test_compiled_decoding_needs_the_loop_and_a_static_cache(grpo, ok):
    from omegaconf import OmegaConf

    from audsemthinker.config import ConfigError
    from audsemthinker.schemas import fast_settings

    cfg = OmegaConf.create({"fast": {"grpo": grpo}})
    if ok:
        assert fast_settings(cfg).grpo == GRPOFast(**grpo)
    else:
        with pytest.raises(ConfigError, match="compile_decode"):
            fast_settings(cfg)


@pytest.mark.parametrize("args_kw, reason", [
    (dict(loss_type="bnpo"), "bnpo"),
    (dict(steps_per_generation=4), "several optimizer steps"),
    (dict(), None)])
def test_group_batches_only_where_the_gradient_is_unchanged(tmp_path, tiny_full_dir,
                                                            tiny_processor, args_kw, reason):
    from datasets import Dataset
    from test_grpo_audio import _args, _reward, tone_rows

    from audsemthinker.train.grpo_fast_trainer import FastAudioGRPOTrainer as AudioGRPOTrainer

    trainer = AudioGRPOTrainer(model=_model(tiny_full_dir, "lm_attn"), reward_funcs=[_reward],
                               args=_args(tmp_path, **args_kw),
                               train_dataset=Dataset.from_list(tone_rows(tmp_path, 2)),
                               processing_class=tiny_processor)
    if reason is None:
        assert "group_batches" not in trainer.fast_off
    else:
        assert reason in trainer.fast_off["group_batches"]


def _setup(**kw):
    from audsemthinker.fast.grpo_switches import Setup

    base = dict(sharded=False, wrapped=False, lora=True, checkpointing=False, loss_type="grpo",
                steps_per_generation=2, gradient_accumulation_steps=2)
    return Setup(**{**base, **kw})


@pytest.mark.parametrize("setup, fast, off", [
    (dict(), {}, {}),
    (dict(sharded=True), {}, {"merged_rollouts": "ZeRO-3/FSDP", "decode_loop": "ZeRO-3/FSDP"}),
    (dict(lora=False), {}, {"merged_rollouts": "full fine-tuning"}),
    (dict(checkpointing=True), {}, {"group_batches": "gradient checkpointing"}),
    (dict(wrapped=True), {}, {"group_batches": "DDP/DeepSpeed/FSDP wrapper"}),
    (dict(loss_type="bnpo"), {}, {"group_batches": "bnpo"}),
    (dict(loss_type="dapo"), {}, {}),
    (dict(steps_per_generation=4), {}, {"group_batches": "several optimizer steps"}),
    (dict(), dict(shared_prompt=False), {"group_batches": "shared_prompt is off"}),
    # a switch that is off has no reason to be off
    (dict(sharded=True, checkpointing=True),
     dict(merged_rollouts=False, decode_loop=False, group_batches=False), {})])
def test_off_reasons_name_each_switch_that_cannot_run(setup, fast, off):
    from audsemthinker.fast.grpo_switches import off_reasons

    got = off_reasons(GRPOFast(**fast), _setup(**setup))
    assert got.keys() == off.keys()
    for switch, words in off.items():
        assert words in got[switch]
