"""Padding-free (packed) SFT batches (``fast.sft.padding_free``).

- ``pack_batch``: exact layout (tokens, per-row positions, row boundaries as transformers reads
  them, first-token labels ``-100``, audio inputs untouched), for any row lengths and padding;
- the packed batch's loss and gradients equal the padded batch's (float32, sdpa and eager,
  clips and answers of different lengths), through the model's own loss, ``chunked_lm_loss``,
  TRL's ``compute_loss`` and ours, with the logged token metrics unchanged;
- a short SFT run with packing logs the padded run's losses, gradient norms and token counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sft import build_synthetic, compose_sft
from transformers.masking_utils import find_packed_sequence_indices

from audsemthinker.fast.lm_loss import chunked_lm_loss, stock_lm_loss
from audsemthinker.fast.packing import (
    PackingCollator,
    check_packable,
    is_packed,
    pack_batch,
)

# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def packed_row_count(position_ids: torch.Tensor) -> int:
    """How many original rows a packed ``position_ids`` (``[4, 1, T]`` or ``[1, T]``) holds."""
    text = position_ids[0] if position_ids.ndim == 3 else position_ids
    return int((text == 0).sum())


def test_pack_batch_layout_is_exact():
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    labels = torch.tensor([[-100, 6, 7, -100], [8, 9, -100, -100], [1, -100, 3, 4]])
    feats, fmask = torch.randn(3, 128, 10), torch.ones(3, 10, dtype=torch.int32)
    out = pack_batch({"input_ids": ids, "attention_mask": mask, "labels": labels,
                      "input_features": feats, "feature_attention_mask": fmask})
    assert sorted(out) == ["feature_attention_mask", "input_features", "input_ids", "labels",
                           "position_ids"]
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4]]
    assert out["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, -100, 3, 4]]
    assert out["position_ids"].shape == (4, 1, 9)
    assert out["position_ids"].tolist() == [[[0, 1, 2, 0, 1, 0, 1, 2, 3]]] * 4
    assert out["input_features"] is feats and out["feature_attention_mask"] is fmask
    assert is_packed(out) and packed_row_count(out["position_ids"]) == 3
    assert labels[1, 0] == 8  # the input batch is not modified
    # transformers' boundary detection (what the sdpa/eager mask and flash varlen use)
    assert find_packed_sequence_indices(out["position_ids"][0]).tolist() == \
        [[0, 0, 0, 1, 1, 2, 2, 2, 2]]


def test_left_padding_packs_to_the_same_row():
    right = {"input_ids": torch.tensor([[5, 6, 0], [7, 8, 9]]),
             "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]]),
             "labels": torch.tensor([[5, 6, -100], [7, 8, 9]])}
    left = {"input_ids": torch.tensor([[0, 5, 6], [7, 8, 9]]),
            "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
            "labels": torch.tensor([[-100, 5, 6], [7, 8, 9]])}
    a, b = pack_batch(right), pack_batch(left)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 2)), min_size=1, max_size=8),
       seed=st.integers(0, 2**16), left=st.booleans())
def test_any_lengths_pack_to_rows_in_order_with_their_own_positions(rows, seed, left):
    lengths = [n for n, _ in rows]
    width = max(lengths) + max(extra for _, extra in rows)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 1000, (len(rows), width), generator=gen)
    labels = torch.where(torch.rand(len(rows), width, generator=gen) < 0.5, ids, -100)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            mask[i, width - n:] = 1
        else:
            mask[i, :n] = 1
    out = pack_batch({"input_ids": ids, "attention_mask": mask, "labels": labels})
    total = sum(lengths)
    assert out["input_ids"].shape == out["labels"].shape == (1, total)
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    want_pos, want_ids, want_labels = [], [], []
    for i, n in enumerate(lengths):
        cols = range(width - n, width) if left else range(n)
        want_pos += list(range(n))
        want_ids += [int(ids[i, c]) for c in cols]
        want_labels += [int(labels[i, c]) for c in cols]
    for s in starts:
        want_labels[s] = -100
    assert out["input_ids"][0].tolist() == want_ids
    assert out["labels"][0].tolist() == want_labels
    assert all(out["position_ids"][d, 0].tolist() == want_pos for d in range(4))
    assert packed_row_count(out["position_ids"]) == len(lengths)
    seq = find_packed_sequence_indices(out["position_ids"][0])
    if len(lengths) > 1:
        assert seq[0].tolist() == [i for i, n in enumerate(lengths) for _ in range(n)]
    else:
        assert seq is None  # one row: transformers builds its plain causal mask
    # The Trainer's count of loss tokens (labels[..., 1:] != -100) is unchanged by packing.
    assert int((out["labels"][:, 1:] != -100).sum()) == sum(
        int((labels[i][mask[i].bool()][1:] != -100).sum()) for i in range(len(lengths)))


@pytest.mark.parametrize("change, match", [
    ({"pixel_values": torch.zeros(1)}, "text \\+ audio only"),
    ({"video_grid_thw": torch.zeros(1)}, "text \\+ audio only"),
    ({"token_type_ids": torch.zeros(2, 3)}, "does not know how to pack"),
    ({"attention_mask": torch.tensor([[1, 2, 0], [1, 1, 1]])}, "only 0 and 1"),
    ({"attention_mask": torch.tensor([[0, 0, 0], [1, 1, 1]])}, "rows \\[0\\] have no tokens"),
    ({"labels": torch.zeros(2, 4, dtype=torch.long)}, "same \\[batch, tokens\\] shape"),
    ({"labels": None}, "needs 'labels'"),
])
def test_bad_batches_are_refused(change, match):
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long),
             "attention_mask": torch.ones(2, 3, dtype=torch.long),
             "labels": torch.ones(2, 3, dtype=torch.long), **change}
    batch = {k: v for k, v in batch.items() if v is not None}
    with pytest.raises(ValueError, match=match):
        pack_batch(batch)


def test_only_the_thinker_is_packable(tiny_model):
    check_packable(tiny_model)
    with pytest.raises(ValueError, match="padding_free: this path supports"):
        check_packable(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------------------------
# Loss and gradients
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_rows(tmp_path_factory):
    """Rows with 1 s and 3 s clips and answers of different lengths (a longer target on some)."""
    from audsemthinker.data.examples import load_examples

    rows = []
    for secs in (1.0, 3.0):
        out = build_synthetic(tmp_path_factory.mktemp(f"mixed{secs}"), n_train=4, n_test=0,
                              duration=secs)
        rows += load_examples(out / "train.jsonl")
    for k in (1, 6):
        answer = rows[k]["messages"][-1]
        answer["content"] = [{"type": "text", "text": "".join(
            p["text"] for p in answer["content"]) + " It is clearly that one, by its tone."}]
    return [rows[0], rows[4], rows[1], rows[6], rows[5]]


def _split(batch):
    return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]


def _loss_and_grads(model, loss_fn, batch, n_items):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch, n_items)
    loss.backward()
    return loss.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters()
                         if p.grad is not None}


def _assert_same(got, want, what):
    loss, grads = got
    assert loss == pytest.approx(want[0], rel=1e-5, abs=1e-6), what
    assert sorted(grads) == sorted(want[1]), what
    for name in want[1]:
        torch.testing.assert_close(grads[name], want[1][name], rtol=1e-4, atol=1e-6,
                                   msg=f"{what}: {name}")


@pytest.mark.parametrize("targets", ["answer", "every_token"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_and_gradients_equal_the_padded_batch(tiny_full_dir, tiny_processor,
                                                          mixed_rows, attn, targets):
    from audsemthinker.data.collate import AudioCollator
    from audsemthinker.model.loader import ModelConfig, load_thinker

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_thinker(ModelConfig(name_or_path=str(tiny_full_dir), dtype="float32",
                                     attn_implementation=attn))
    assert model.config._attn_implementation == attn
    model.train()
    padded = AudioCollator(tiny_processor, pad_side="right")(mixed_rows)
    if targets == "every_token":  # each row's first token has a label (the causal shift skips it)
        padded["labels"] = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, -100)
    lengths = padded["attention_mask"].sum(-1)
    answers = (padded["labels"] != -100).sum(-1)
    assert len(set(lengths.tolist())) >= 3 and len(set(answers.tolist())) >= 2
    assert len(set(padded["feature_attention_mask"].sum(-1).tolist())) == 2  # 1 s and 3 s
    packed = pack_batch(padded)
    assert packed["input_ids"].shape[1] == int(lengths.sum()) < padded["input_ids"].numel()
    n_items = torch.tensor(int((padded["labels"][:, 1:] != -100).sum()) + 7)  # accumulation

    def own(m, b, n):
        return stock_lm_loss(m, *_split(b), num_items_in_batch=n)

    def chunked(m, b, n):
        return chunked_lm_loss(m, *_split(b), chunk_tokens=5, num_items_in_batch=n)

    want = _loss_and_grads(model, own, padded, n_items)
    assert len(want[1]) > 0
    _assert_same(_loss_and_grads(model, own, packed, n_items), want, f"{attn} own loss")
    _assert_same(_loss_and_grads(model, chunked, packed, n_items), want, f"{attn} chunked")
    # Without num_items_in_batch both average over their own (equal) label counts.
    with torch.no_grad():
        torch.testing.assert_close(stock_lm_loss(model, *_split(packed)),
                                   stock_lm_loss(model, *_split(padded)), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Trainer wiring and a short run
# --------------------------------------------------------------------------------------------
def _mixed_data_dir(tmp_path, rows) -> Path:
    out = tmp_path / "data"
    out.mkdir()
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    return out


def _trainer(run_dir, model_dir, data, *overrides):
    from audsemthinker.train.sft import build_sft_trainer

    evals = [] if any("eval_strategy" in o for o in overrides) else ["train.sft.eval_strategy=no"]
    cfg = compose_sft(run_dir, model_dir, data, ["train.sft.save_strategy=no", *evals, *overrides])
    return build_sft_trainer(cfg)


@pytest.mark.parametrize("chunked", ["false", "true"])
def test_trainer_losses_and_metrics_are_the_padded_ones(tmp_path, tiny_full_dir, mixed_rows,
                                                        chunked):
    from audsemthinker.train.sft_fast_trainer import FastSFTTrainer

    torch.set_num_threads(1)
    data = _mixed_data_dir(tmp_path, mixed_rows)
    trainer, info = _trainer(tmp_path / "run", tiny_full_dir, data, "lora=none",
                             "fast.sft.padding_free=true", f"fast.sft.chunked_ce={chunked}",
                             "train.sft.eval_strategy=steps", "+train.sft.eval_steps=1")
    assert type(trainer) is FastSFTTrainer
    collate = trainer.data_collator.collator
    assert isinstance(collate, PackingCollator) and collate.collator is info["collator"]
    assert collate.stats is info["collator"].stats
    eval_batch = next(iter(trainer.get_eval_dataloader()))
    assert "attention_mask" in eval_batch and eval_batch["input_ids"].shape[0] == 2  # unpacked

    rows = info["rows"]["train"]
    padded = info["collator"](rows)
    packed = collate(rows)
    assert collate.tokens == {"padded": padded["input_ids"].numel(),
                              "packed": int(padded["attention_mask"].sum())}
    n_items = torch.tensor(int((padded["labels"][:, 1:] != -100).sum()))
    model = trainer.model
    model.train()
    results = {}
    for name, batch in (("padded", padded), ("packed", packed)):
        trainer._total_train_tokens = 0
        results[name] = (_loss_and_grads(model, lambda m, b, n: trainer.compute_loss(
            m, dict(b), num_items_in_batch=n), batch, n_items),
            {k: trainer._metrics["train"][k][-1] for k in
             ("num_tokens", "mean_token_accuracy", "entropy")})
    _assert_same(results["packed"][0], results["padded"][0], f"chunked_ce={chunked}")
    got, want = results["packed"][1], results["padded"][1]
    assert got["num_tokens"] == want["num_tokens"] == int(padded["attention_mask"].sum())
    assert got["mean_token_accuracy"] == pytest.approx(want["mean_token_accuracy"], abs=1e-9)
    assert got["entropy"] == pytest.approx(want["entropy"], rel=1e-5)


def test_packed_run_trains_like_the_padded_run(tmp_path, tiny_full_dir, mixed_rows):
    from audsemthinker.train.common import read_metrics

    torch.set_num_threads(1)
    data = _mixed_data_dir(tmp_path, mixed_rows)
    logs = {}
    for switch in ("false", "true"):
        trainer, info = _trainer(tmp_path / f"run_{switch}", tiny_full_dir, data, "lora=tiny",
                                 f"fast.sft.padding_free={switch}", "train.sft.max_steps=3",
                                 "train.sft.per_device_train_batch_size=3",
                                 "train.sft.logging_steps=1")
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
                  if p.requires_grad}
        trainer.train()
        moved = [n for n, p in trainer.model.named_parameters()
                 if p.requires_grad and not torch.equal(before[n], p.detach())]
        assert moved, f"padding_free={switch}: no trainable parameter moved"
        logs[switch] = [r for r in read_metrics(Path(info["run_dir"]) / "metrics.jsonl")
                        if "loss" in r]
    padded, packed = logs["false"], logs["true"]
    assert [r["step"] for r in packed] == [r["step"] for r in padded] == [1, 2, 3]
    for a, b in zip(padded, packed):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), a["step"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3), a["step"]
        assert b["num_tokens"] == a["num_tokens"], a["step"]


def test_trls_own_padding_free_switch_is_refused(tmp_path, tiny_full_dir):
    from audsemthinker.config import ConfigError

    with pytest.raises(ConfigError, match="fast.sft.padding_free=true"):
        _trainer(tmp_path, tiny_full_dir, tmp_path, "+train.sft.padding_free=true")
