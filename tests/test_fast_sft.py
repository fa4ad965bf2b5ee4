"""SFT fast paths: each switch gives the stock path's numbers.

- chunked cross-entropy: the same loss (to ~1e-6) and the same gradient on every trainable
  parameter as the model's own full-logits loss and as TRL's SFT loss, for LoRA and full
  fine-tuning, under gradient accumulation (``num_items_in_batch``), with chunks smaller than the
  label count;
- length-grouped batches: each epoch is a permutation of the rows, fixed by (seed, epoch), and
  pads less than random batches on clips of mixed lengths;
- ``fast=stock`` builds the plain TRL trainer and sampler;
- ``model.attn_implementation=auto`` resolves to flash-attention only on CUDA with the package
  and a 16-bit dtype.
"""

from __future__ import annotations

import random

import pytest
import torch
from helpers import padding_fraction
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sft import build_synthetic, compose_sft

from audsemthinker.fast.length_groups import (
    LengthGroupedEpochSampler,
    row_lengths,
)
from audsemthinker.fast.lm_loss import chunked_lm_loss, stock_lm_loss
from audsemthinker.model.loader import resolve_attn_implementation
from audsemthinker.train.sft_fast_trainer import FastSFTTrainer


@pytest.fixture(scope="module")
def pitch_data(tmp_path_factory):
    return build_synthetic(tmp_path_factory.mktemp("pitch"), n_train=8, n_valid=0, n_test=0)


def _trainer(tmp_path, model_dir, data, preset, *overrides):
    from audsemthinker.train.sft import build_sft_trainer

    cfg = compose_sft(tmp_path, model_dir, data, [
        f"lora={preset}", "train.sft.max_steps=1", "train.sft.save_strategy=no",
        "train.sft.eval_strategy=no", *overrides])
    return build_sft_trainer(cfg)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()
            if p.requires_grad and p.grad is not None}


def _accumulated(model, loss_fn, batches) -> tuple[float, dict]:
    """Loss and gradients of one optimizer step over ``batches`` (Trainer-style accumulation:
    each micro-batch's summed NLL over the labels of all micro-batches)."""
    n_items = torch.tensor(sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches))
    model.zero_grad(set_to_none=True)
    total = 0.0
    for b in batches:
        loss = loss_fn(model, dict(b), n_items)
        loss.backward()
        total += loss.item()
    return total, _grads(model)


# --------------------------------------------------------------------------------------------
# Chunked cross-entropy
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "none"])
def test_chunked_loss_and_gradients_match_the_stock_losses(tmp_path, tiny_full_dir,
                                                           pitch_data, preset):
    torch.set_num_threads(1)
    trainer, info = _trainer(tmp_path, tiny_full_dir, pitch_data, preset,
                             "fast.sft.chunked_ce=true", "fast.sft.ce_chunk_tokens=3")
    assert type(trainer) is FastSFTTrainer and trainer.ce_chunk_tokens == 3
    model, collator, rows = trainer.model, info["collator"], info["rows"]["train"]
    model.train()
    batches = [collator(rows[0:2]), collator(rows[2:5])]  # two micro-batches, one step
    n_labels = int((batches[0]["labels"][:, 1:] != -100).sum())
    assert n_labels > 3 * 2  # more than two chunks per micro-batch

    def split(b):
        return {k: v for k, v in b.items() if k != "labels"}, b["labels"]

    def hf(m, b, n):
        return stock_lm_loss(m, *split(b), num_items_in_batch=n)

    def chunked(m, b, n):
        return chunked_lm_loss(m, *split(b), chunk_tokens=3, num_items_in_batch=n)

    def trl_stock(m, b, n):  # the plain SFTTrainer's loss (its fused LM head)
        return super(FastSFTTrainer, trainer).compute_loss(m, b, num_items_in_batch=n)

    def trainer_fast(m, b, n):
        return trainer.compute_loss(m, b, num_items_in_batch=n)

    ref_loss, ref_grads = _accumulated(model, hf, batches)
    assert len(ref_grads) > 0
    for fn in (chunked, trl_stock, trainer_fast):
        loss, grads = _accumulated(model, fn, batches)
        assert loss == pytest.approx(ref_loss, rel=1e-6, abs=1e-6), fn.__name__
        assert sorted(grads) == sorted(ref_grads), fn.__name__
        for name in ref_grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-6,
                                       msg=f"{fn.__name__}: {name}")
    # Without num_items_in_batch both take the mean over this batch's labels.
    b, labels = split(batches[1])
    torch.testing.assert_close(chunked_lm_loss(model, b, labels, chunk_tokens=3),
                               stock_lm_loss(model, b, labels), rtol=1e-6, atol=1e-6)
    # The metrics TRL logs are still logged (mean token accuracy in [0, 1], entropy > 0).
    metrics = trainer._metrics["train"]
    assert 0.0 <= metrics["mean_token_accuracy"][-1] <= 1.0 and metrics["entropy"][-1] > 0


def test_chunked_loss_with_no_labels_is_a_connected_zero(tiny_model):
    torch.set_num_threads(1)
    tiny_model.train()
    ids = torch.randint(0, 100, (2, 6))
    stats: dict = {}
    loss = chunked_lm_loss(tiny_model, {"input_ids": ids}, torch.full_like(ids, -100),
                           chunk_tokens=4, stats=stats)
    assert loss.item() == 0.0 and loss.requires_grad
    assert stats == {"n_labels": 0, "n_correct": 0, "entropy_sum": 0.0}
    with pytest.raises(ValueError, match="labels separately"):
        chunked_lm_loss(tiny_model, {"input_ids": ids, "labels": ids}, ids)
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunked_lm_loss(tiny_model, {"input_ids": ids}, ids, chunk_tokens=0)


# --------------------------------------------------------------------------------------------
# Config round trip
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("choice", ["fast=stock", "fast=default"])
def test_sft_defaults_are_the_plain_trl_trainer_and_sampler(tmp_path, tiny_full_dir, pitch_data,
                                                            choice):
    from trl import SFTTrainer

    trainer, _ = _trainer(tmp_path / "stock", tiny_full_dir, pitch_data, "tiny", choice)
    assert type(trainer) is SFTTrainer
    assert not isinstance(trainer._get_train_sampler(), LengthGroupedEpochSampler)


def test_length_grouping_alone_keeps_trls_loss(tmp_path, tiny_full_dir, pitch_data):
    trainer, info = _trainer(tmp_path / "fast", tiny_full_dir, pitch_data, "tiny",
                             "fast.sft.length_grouped=true")
    assert type(trainer) is FastSFTTrainer and trainer.ce_chunk_tokens is None
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedEpochSampler)
    assert sampler.seed == 42 and len(sampler) == len(info["rows"]["train"]) == 8


def test_bad_chunk_size_fails_at_start_up(tmp_path, tiny_full_dir, pitch_data):
    from audsemthinker.config import ConfigError

    with pytest.raises(ConfigError, match="ce_chunk_tokens"):
        _trainer(tmp_path, tiny_full_dir, pitch_data, "tiny", "fast.sft.ce_chunk_tokens=0")


# --------------------------------------------------------------------------------------------
# Length-grouped batches
# --------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 3000), min_size=1, max_size=300),
       group=st.integers(1, 32), seed=st.integers(0, 2**31 - 1), epoch=st.integers(0, 5))
def test_grouped_epoch_is_a_permutation_fixed_by_seed_and_epoch(lengths, group, seed, epoch):
    sampler = LengthGroupedEpochSampler(lengths, group, seed)
    sampler.set_epoch(epoch)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))
    torch.manual_seed(seed + 1)  # the global RNG plays no part
    again = LengthGroupedEpochSampler(lengths, group, seed)
    again.set_epoch(epoch)
    assert list(again) == order == list(sampler)


def test_epochs_differ_and_the_longest_batch_comes_first():
    lengths = list(range(1, 401))
    sampler = LengthGroupedEpochSampler(lengths, 8, seed=3, jitter=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert first[0] == 399  # the longest row leads, so an out-of-memory shows at step 1
    steps = [first[k:k + 8] for k in range(0, 400, 8)]
    # Each step is a run of one sorted mega-batch of 96 rows: 8 rows span ~7 x 400/96 = 29
    # lengths on average (8 random rows of 1..400 span ~311).
    assert sum(max(s) - min(s) for s in steps) / len(steps) < 60
    # Steps are not in a long-to-short sweep: about half of consecutive pairs go up.
    ups = sum(max(a) < max(b) for a, b in zip(steps, steps[1:]))
    assert 10 <= ups <= 39


def test_rows_of_near_equal_length_are_not_sorted_by_their_few_tokens():
    # Two classes whose texts differ by 2 tokens: an exact sort makes one-class batches.
    lengths = [100 + 2 * (i % 2) for i in range(400)]
    for jitter, mixed in ((0, False), (64, True)):
        order = list(LengthGroupedEpochSampler(lengths, 8, seed=0, jitter=jitter))
        batches = [{i % 2 for i in order[k:k + 8]} for k in range(0, 400, 8)]
        share = sum(len(b) == 2 for b in batches) / len(batches)
        assert (share > 0.9) if mixed else (share < 0.1), (jitter, share)


def test_row_lengths_count_text_tokens_and_audio_placeholders(tiny_processor):
    tok = tiny_processor.tokenizer
    text = [{"type": "audio", "audio": "a.wav"}, {"type": "text", "text": "How high?"}]
    rows = [{"messages": [{"role": "user", "content": text},
                          {"role": "assistant", "content": "High."}], "duration": 2.0},
            {"messages": [{"role": "user", "content": "Hi"}], "duration": None}]
    lengths, missing = row_lengths(rows, tok)
    want0 = len(tok("How high?\nHigh.", add_special_tokens=False)["input_ids"]) + 50
    assert lengths == [want0, len(tok("Hi", add_special_tokens=False)["input_ids"])]
    assert missing == 1


def test_padding_fraction_counts_pad_positions():
    assert padding_fraction([4, 2, 3, 3], [0, 1, 2, 3], 2) == pytest.approx(2 / 14)
    assert padding_fraction([], [], 4) == 0.0


def test_grouping_pads_less_on_clips_of_mixed_length(tmp_path, tiny_processor):
    from audsemthinker.data.examples import load_examples

    rows = []
    for secs in (1.0, 3.0, 6.0, 10.0):
        out = build_synthetic(tmp_path / f"d{secs}", n_train=32, n_test=0, duration=secs)
        rows += load_examples(out / "train.jsonl")
    random.Random(0).shuffle(rows)
    lengths, missing = row_lengths(rows, tiny_processor.tokenizer)
    assert missing == 0 and max(lengths) - min(lengths) >= 225  # 9 s of audio apart
    batch = 8
    stock = padding_fraction(lengths, torch.randperm(len(rows), generator=torch.Generator()
                                                     .manual_seed(0)).tolist(), batch)
    grouped = padding_fraction(lengths, list(LengthGroupedEpochSampler(lengths, batch, 0)),
                               batch)
    print(f"padding fraction, batch {batch}, 128 rows of 1/3/6/10 s: random {stock:.3f}, "
          f"length-grouped {grouped:.3f}")
    assert grouped < stock / 2  # mega-batches grow with the data (up to 50 optimizer steps)


# --------------------------------------------------------------------------------------------
# Attention implementation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs, want", [
    ("auto", dict(cuda=True, flash=True), "flash_attention_2"),
    ("auto", dict(cuda=True, flash=False), "sdpa"),
    ("auto", dict(cuda=False, flash=True), "sdpa"),
    ("auto", dict(cuda=True, flash=True, dtype="float32"), "sdpa"),
    ("auto", dict(device="cpu"), "sdpa"),
    ("eager", dict(cuda=True, flash=True), "eager"),
    ("flash_attention_2", dict(cuda=False), "flash_attention_2"),  # asked for: passed through
])
def test_auto_attention_resolves_to_flash_only_where_it_runs(name, kwargs, want):
    assert resolve_attn_implementation(name, **kwargs) == want


def test_auto_is_the_real_models_default_and_unknown_names_fail(tmp_path):
    cfg = compose_sft(tmp_path, tmp_path, tmp_path, ["model=qwen2_5_omni_7b"])
    assert cfg.model.attn_implementation == "auto"
    with pytest.raises(ValueError, match="attn_implementation"):
        resolve_attn_implementation("flash")


# --------------------------------------------------------------------------------------------
# Compiled decoder layers
# --------------------------------------------------------------------------------------------
def test_compiled_layers_give_the_eager_loss_and_gradients_without_recompiling(
        tmp_path, tiny_full_dir, pitch_data):
    from audsemthinker.fast.compile import compile_decoder_layers, decoder_layers

    torch.set_num_threads(1)
    trainer, info = _trainer(tmp_path, tiny_full_dir, pitch_data, "tiny",
                             "fast.sft.compile_layers=true", "model.dtype=float32")
    layers = decoder_layers(trainer.model)
    assert len(layers) > 1 and all(layer._compiled_call_impl is not None for layer in layers)
    # The same on a fresh model with a backend that counts graphs (inductor is too slow here).
    eager, info = _trainer(tmp_path / "eager", tiny_full_dir, pitch_data, "tiny",
                           "model.dtype=float32")
    model, collator, rows = eager.model, info["collator"], info["rows"]["train"]
    model.train()
    batches = [collator(rows[0:2]), collator(rows[2:5])]  # two sequence lengths
    assert batches[0]["input_ids"].shape[1] != batches[1]["input_ids"].shape[1]

    def loss(m, b, n):
        return stock_lm_loss(m, {k: v for k, v in b.items() if k != "labels"}, b["labels"],
                             num_items_in_batch=n)

    want_loss, want = _accumulated(model, loss, batches)
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    assert compile_decoder_layers(model, backend=counting) == len(layers)
    got_loss, got = _accumulated(model, loss, batches)
    # one graph per layer (each traces its own layer_idx), reused for the second length
    assert len(graphs) == len(layers)
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-5)
